"""Dynamic channel execution (CUCB): bandit, executor, frozen slices, callback, checkpoint."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import zoo
from keras import layers as L

import tfchannelprune as tcp
from tfchannelprune.dynamic.bandit import ChannelBandit
from tfchannelprune.dynamic.callback import DynamicChannelExecution
from tfchannelprune.dynamic.executor import ChannelExecutor

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv(filters):
    # no bias before BatchNorm: its gradient is pure rounding noise, which Adam amplifies
    return L.Conv2D(filters, 3, padding="same", use_bias=False)


def tiny_cnn(seed=0):
    """Conv/BN/ReLU, pooling, a residual block, global pooling, a hidden Dense."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization()(conv(8)(inp)))
    x = L.MaxPooling2D()(x)
    y = L.ReLU()(L.BatchNormalization()(conv(8)(x)))
    x = L.ReLU()(L.Add()([x, L.BatchNormalization()(conv(8)(y))]))
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(6, activation="relu")(x)
    return keras.Model(inp, L.Dense(3)(x))


def tiny_separable(seed=0):
    """Depthwise (multiplier 2), PReLU and separable convs: all run on the channel subset."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization()(conv(6)(inp)))
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    x = L.PReLU(alpha_initializer=keras.initializers.Constant(0.2))(L.BatchNormalization()(x))
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, use_bias=False)(x)
    x = L.GlobalAveragePooling2D()(L.ReLU()(L.BatchNormalization()(x)))
    return keras.Model(inp, L.Dense(3)(x))


def tiny_data(n=16, seed=0):
    return zoo.tiny_digits(n, seed)


def compiled(model, optimizer="adam"):
    opt = {
        "adam": lambda: keras.optimizers.Adam(1e-2),
        "sgd": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    }[optimizer]()
    model.compile(optimizer=opt, loss=LOSS, metrics=["accuracy"])
    return model


def slot_values(model):
    return {v.name: v.numpy() for v in model.optimizer.variables if len(v.shape)}


# ---------------------------------------------------------------------------------- bandit
def test_bandit_converges_to_best_arms():
    means = np.linspace(0.1, 0.9, 16)[np.random.default_rng(0).permutation(16)]
    best = np.sort(np.argsort(means)[-4:]).tolist()
    bandit = ChannelBandit({"g": (16, 4)}, seed=0)
    noise = tf.random.Generator.from_seed(1)
    true = tf.constant(means, tf.float32)

    @tf.function
    def step():
        active = bandit.select()
        reward = tf.gather(true, active["g"]) + noise.normal([4], stddev=0.1)
        bandit.update(active, {"g": tf.clip_by_value(reward, 0.0, 1.0)})
        return active["g"]

    plays = [step().numpy() for _ in range(1500)]
    assert bandit.best() == {"g": best}
    late = np.concatenate(plays[-200:])
    assert np.isin(late, best).mean() > 0.85
    # every arm was tried in the first 16 / 4 steps (unplayed arms first)
    assert set(np.concatenate(plays[:4]).tolist()) == set(range(16))
    assert int(bandit.t.numpy()) == 1500


def test_bandit_rejects_bad_k():
    with pytest.raises(ValueError, match="between 1 and 4"):
        ChannelBandit({"g": (4, 5)})


# ---------------------------------------------------------------------------------- executor
@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_executor_equals_compact_model(name):
    model = zoo.randomize(zoo.ZOO[name](), seed=0)
    x = zoo.sample_input(model, batch=4)
    graph = tcp.ChannelGraph(model)
    plan = zoo.random_plan(graph, seed=0, fraction=0.5)
    executor = ChannelExecutor(graph, {g: len(c) for g, c in plan.items()})
    active = {g: tf.constant(c, tf.int32) for g, c in plan.items()}
    got, _, _ = executor.run(x, active, training=False)
    want = tcp.compact(model, plan, graph=graph)(x)
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert not executor.skipped


def test_executor_training_mode_updates_active_statistics_only():
    model = zoo.randomize(zoo.resnet_style(), seed=1)
    x = zoo.sample_input(model, batch=4)
    graph = tcp.ChannelGraph(model)
    plan = zoo.random_plan(graph, seed=1, fraction=0.5)
    small = tcp.compact(model, plan, graph=graph)
    bns = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    before = [layer.moving_mean.numpy() for layer in bns]
    executor = ChannelExecutor(graph, {g: len(c) for g, c in plan.items()})
    got, _, _ = executor.run(x, {g: tf.constant(c) for g, c in plan.items()}, training=True)
    np.testing.assert_allclose(got.numpy(), small(x, training=True).numpy(), atol=1e-5)
    small_bns = {layer.name: layer for layer in small.layers}
    for layer, old in zip(bns, before):
        new = layer.moving_mean.numpy()
        kept = np.isclose(new, old)
        active = ~kept
        assert active.any() and kept.any()
        np.testing.assert_allclose(
            new[active], small_bns[layer.name].moving_mean.numpy(), atol=1e-6
        )


# ---------------------------------------------------------------------------------- training
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_all_active_step_equals_normal_step(optimizer):
    x, y = tiny_data()
    normal = compiled(tiny_cnn(), optimizer)
    dynamic = compiled(tiny_cnn(), optimizer)
    dyn = DynamicChannelExecution(active_fraction=1.0)
    h1 = normal.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    h2 = dynamic.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[dyn])
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    for a, b in zip(normal.weights, dynamic.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    assert int(dyn.bandit.t.numpy()) == 2
    assert "train_step" not in vars(dynamic)  # uninstalled after fit


@pytest.mark.parametrize("build", [tiny_cnn, tiny_separable])
def test_fixed_active_set_trains_like_compact_model(build):
    x, y = tiny_data(32)
    model = compiled(build())
    dyn = DynamicChannelExecution(active_fraction=0.5)
    dyn.build(model)
    plan = {g: list(range(1, 1 + k)) for g, k in dyn.bandit.ks.items()}
    small = compiled(tcp.compact(model, plan))
    dyn.bandit.select = lambda: {g: tf.constant(c, tf.int32) for g, c in plan.items()}
    h1 = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[dyn])
    h2 = small.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-4)
    for a, b in zip(tcp.compact(model, plan).weights, small.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, err_msg=a.path)


class Snapshot(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.weights = {v.path: v.numpy() for v in self.model.weights}
            self.slots = slot_values(self.model)


def numpy_mask(executor, active):
    """The executor's flat channel mask for ``active``, in NumPy."""
    mask = np.ones(executor.total, bool)
    for gi in executor.dynamic:
        group, start = executor.groups[gi], executor.offsets[gi]
        mask[start : start + group.size] = False
        mask[start + np.asarray(active[group.name])] = True
    return mask


@pytest.mark.parametrize(
    "optimizer, build", [("adam", tiny_cnn), ("sgd", tiny_cnn), ("adam", tiny_separable)]
)
def test_inactive_channels_do_not_change(optimizer, build):
    x, y = tiny_data(16)
    model = compiled(build(), optimizer)
    dyn = DynamicChannelExecution(active_fraction=0.5)
    snap = Snapshot()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[dyn, snap])
    mask = numpy_mask(dyn.executor, dyn.active_channels())  # the second step's channels
    frozen_nonzero = moved = 0
    targets = dyn.frozen.targets(model.optimizer)
    assert len(targets) > len(dyn.frozen.specs)  # the optimizer slots are covered
    for var, axes in targets:
        old = snap.weights.get(var.path, snap.slots.get(var.name))
        keep = np.ones(var.shape, bool)
        for axis, slots in axes:
            keep &= mask[slots].reshape([-1 if i == axis else 1 for i in range(len(var.shape))])
        new = var.numpy()
        np.testing.assert_array_equal(new[~keep], old[~keep], err_msg=var.path)
        frozen_nonzero += int(np.any(old[~keep] != 0))
        moved += int(np.any(new[keep] != old[keep]))
    assert frozen_nonzero > 0 and moved > 0  # not vacuous: state that could have moved
    # BatchNorm moving statistics of inactive channels are not updated either
    for fn in dyn.graph.flat.nodes:
        if isinstance(fn.op, L.BatchNormalization):
            on = mask[dyn.executor.flat_index(fn.inputs[0])]
            new, old = fn.op.moving_mean.numpy(), snap.weights[fn.op.moving_mean.path]
            np.testing.assert_array_equal(new[~on], old[~on])
            assert np.all(new[on] != old[on])


def test_checkpoint_round_trip(tmp_path):
    x, y = tiny_data(32)
    model = compiled(tiny_cnn())
    dyn = DynamicChannelExecution(active_fraction=0.5, seed=3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[dyn])
    path = tf.train.Checkpoint(bandit=dyn.bandit).write(str(tmp_path / "bandit"))
    restored = DynamicChannelExecution(active_fraction=0.5, seed=99)
    restored.build(model)
    tf.train.Checkpoint(bandit=restored.bandit).read(path).assert_consumed()
    for a, b in zip(dyn.bandit.variables, restored.bandit.variables):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    assert int(restored.bandit.t.numpy()) == 4
    chosen, again = dyn.bandit.select(), restored.bandit.select()  # same random state too
    for g in chosen:
        np.testing.assert_array_equal(chosen[g].numpy(), again[g].numpy())
    assert restored.plan() == dyn.plan()


def test_plan_compact_and_macs():
    model = compiled(tiny_cnn())
    dyn = DynamicChannelExecution(active_fraction=0.5, final_fraction=0.25)
    dyn.build(model)
    plan = {g: list(range(k)) for g, k in dyn.bandit.ks.items()}
    assert dyn.executed_macs == tcp.count_macs(model, plan=plan)  # no masked fallback here
    assert dyn.executed_macs < 0.35 * dyn.dense_macs
    small = dyn.compact()
    assert all(len(c) == 2 for c in dyn.plan().values())  # 0.25 of 8 and of 6 (rounded)
    assert small.count_params() < model.count_params()


def test_separable_and_depthwise_run_on_the_subset():
    model = zoo.separable_blocks()
    dyn = DynamicChannelExecution(active_fraction=0.5)
    dyn.build(model)
    plan = {g: list(range(k)) for g, k in dyn.bandit.ks.items()}
    kinds = dict(zip((fn.path for fn in dyn.graph.flat.nodes), dyn.executor.kinds))
    assert "masked" not in kinds.values()
    assert dyn.executed_macs == tcp.count_macs(model, plan=plan) < dyn.dense_macs


def causal_conv1d():
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 3))
    x = L.Conv1D(8, 3, padding="causal", activation="relu", name="c1")(inp)
    x = L.Conv1D(6, 3, padding="causal", activation="relu", name="c2")(x)
    return keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(x)))


def test_masked_fallback_counts_full_macs_and_stays_exact():
    model = zoo.randomize(causal_conv1d(), seed=0)
    graph = tcp.ChannelGraph(model)
    executor = ChannelExecutor(graph, {"c1": 4})
    kinds = dict(zip((fn.path for fn in graph.flat.nodes), executor.kinds))
    assert kinds["c1"] == kinds["c2"] == "masked"
    reasons = [r.subset(fn).reason for fn, r in zip(graph.flat.nodes, graph.rules)]
    assert any("causal" in r for r in reasons)
    plan = {"c1": [0, 2, 5, 7]}
    x = zoo.sample_input(model, batch=4)
    got, _, _ = executor.run(x, {"c1": tf.constant(plan["c1"], tf.int32)}, False)
    want = tcp.compact(model, plan, graph=graph)(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    dyn = DynamicChannelExecution(active_fraction=0.5)
    dyn.build(model)
    plan = {g: list(range(k)) for g, k in dyn.bandit.ks.items()}
    assert tcp.count_macs(model, plan=plan) < dyn.executed_macs <= dyn.dense_macs


def test_errors():
    with pytest.raises(ValueError, match="active_fraction"):
        DynamicChannelExecution(active_fraction=0)
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(inp))
    with pytest.raises(ValueError, match="no prunable"):
        DynamicChannelExecution().build(model)


def test_wrapped_model_rewards_at_gate_inputs():
    x, y = tiny_data(16)
    gated = compiled(tcp.wrap(tiny_cnn()))
    dyn = DynamicChannelExecution(active_fraction=0.5)
    gated.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[dyn])
    assert len(dyn._reward_points) == len(dyn.graph.gate_paths)
    for group, means in dyn.bandit.mean_rewards().items():
        counts = dyn.bandit.play_counts()[group]
        assert counts.sum() == 2 * dyn.bandit.ks[group]
        assert means.max() == pytest.approx(1.0)  # normalised by the group maximum
    small = dyn.compact()
    assert not any(isinstance(layer, tcp.ChannelGate) for layer in small.layers)
    assert small.count_params() < tcp.count_params(gated)
