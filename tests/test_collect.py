"""collect_saliency / SaliencyAccumulator: exactness, batch-size independence, errors."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import zoo

import tfchannelprune as tcp
from tfchannelprune.saliency.collect import (
    SaliencyAccumulator,
    collect_saliency,
    oracle_loss_change,
)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data_for(model, n=24, seed=0):
    return zoo.labelled_data(model, n, seed)


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    gated = tcp.wrap(zoo.randomize(zoo.resnet_style(), seed=2))
    return gated, data_for(gated)


def independent_taylor_fisher(gated, x, y):
    """Per example, the gradient of its own loss w.r.t. ONE mask per channel shared by all the
    channel's gates (the sum of the gradients w.r.t. each gate's 0/1 vector at the channel's
    positions, at m = 1): d_n = dl_n/dm = sum_gates sum_hw a * g (Theis's mask form), found
    without the library's hooks. Taylor = mean_n |d_n|, Fisher = mean_n d_n^2 / 2."""
    graph = tcp.ChannelGraph(gated)
    gates = [fn for fn in graph.flat.nodes if isinstance(fn.op, tcp.ChannelGate)]
    taylor = {g.name: np.zeros(g.size) for g in graph.prunable_groups}
    fisher = {g.name: np.zeros(g.size) for g in graph.prunable_groups}
    n = len(y)
    variables = [fn.op.gate.value for fn in gates]

    @tf.function  # eager batch-1 gradients crash TF 2.21's oneDNN path (see test_mirrored)
    def gate_grads(xi, yi):
        with tf.GradientTape() as tape:
            tape.watch(variables)
            loss = LOSS(yi, gated(xi, training=False))
        return tape.gradient(loss, variables)

    for i in range(n):
        grads = gate_grads(x[i : i + 1], y[i : i + 1])
        d = {g: np.zeros_like(v) for g, v in taylor.items()}
        for fn, grad in zip(gates, grads, strict=True):
            for p, (group, ch) in enumerate(graph.gate_layout(fn.path)):
                if group in d:  # a channel at several positions: one mask, derivatives add
                    d[group][ch] += grad[p].numpy()
        for group, v in d.items():
            taylor[group] += np.abs(v) / n
            fisher[group] += v**2 / (2 * n)
    return taylor, fisher


def assert_scores_close(a, b, rtol=1e-5, atol=1e-9):
    assert set(a) == set(b)
    for group in a:
        np.testing.assert_allclose(a[group], b[group], rtol=rtol, atol=atol, err_msg=group)


def test_taylor_and_fisher_equal_per_example_computation(resnet):
    gated, (x, y) = resnet
    result = collect_saliency(gated, (x, y), loss=LOSS, signals=["taylor", "fisher"], batch_size=8)
    taylor, fisher = independent_taylor_fisher(gated, x, y)
    assert_scores_close(result["taylor"], taylor)
    assert_scores_close(result["fisher"], fisher)
    # the residual group is scored from its two gates, and the scores are not trivial
    graph = tcp.ChannelGraph(gated)
    coupled = [g for g in graph.prunable_groups if len(g.gates) > 1]
    assert coupled and all(np.mean(result["taylor"][g.name] > 0) > 0.5 for g in coupled)


@pytest.mark.parametrize("name", ["densenet_style", "conv1d_model", "nested_functional"])
def test_taylor_and_fisher_on_concat_repeats_and_nesting(name):
    gated = tcp.wrap(zoo.randomize(zoo.ZOO[name](), seed=3))
    x, y = data_for(gated, n=12)
    result = collect_saliency(gated, (x, y), loss=LOSS, signals=["taylor", "fisher"], batch_size=6)
    taylor, fisher = independent_taylor_fisher(gated, x, y)
    assert_scores_close(result["taylor"], taylor)
    assert_scores_close(result["fisher"], fisher)


def test_batch_size_does_not_change_signals():
    gated = tcp.wrap(zoo.randomize(zoo.plain_cnn(), seed=1))
    x, y = data_for(gated, n=64)
    names = ["taylor", "fisher", "apoz", "activation_std", "abs_mrs", "mrs",
             "zero_delta|mean_n,abs,mean_hw|none", "gradient|max_hw,var_n|l2_group",
             "weight_delta|abs,sum_all|macs", "activation|square,max_nhw|weights"]  # fmt: skip
    small = collect_saliency(gated, (x, y), loss=LOSS, signals=names, batch_size=8)
    large = collect_saliency(gated, (x, y), loss=LOSS, signals=names, batch_size=64)
    for name in names:
        assert_scores_close(small[name], large[name], rtol=1e-5, atol=1e-10)


def test_unwrapped_model_gives_same_groups_and_scores(resnet):
    gated, (x, y) = resnet
    plain = tcp.strip(gated)
    a = collect_saliency(plain, (x, y), LOSS, batch_size=12)
    b = collect_saliency(gated, (x, y), LOSS, batch_size=12)
    assert_scores_close(a, b)


def test_dataset_input_and_steps(resnet):
    gated, (x, y) = resnet
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    full = collect_saliency(gated, dataset, LOSS, signal="fisher")
    assert_scores_close(full, collect_saliency(gated, (x, y), LOSS, signal="fisher"))
    part = collect_saliency(gated, dataset, LOSS, signal="fisher", steps=1)
    assert_scores_close(part, collect_saliency(gated, (x[:6], y[:6]), LOSS, signal="fisher"))


def test_accumulator_update_result_reset(resnet):
    gated, (x, y) = resnet
    acc = SaliencyAccumulator(gated, ["taylor", "l1_weight"], LOSS)
    for i in range(0, len(y), 10):
        acc.update(x[i : i + 10], y[i : i + 10])
    assert acc.num_examples == len(y)
    assert_scores_close(acc.result()["taylor"], collect_saliency(gated, (x, y), LOSS))
    acc.reset()
    assert acc.num_examples == 0
    with pytest.raises(ValueError, match="No examples"):
        acc.result()


def test_training_mode_leaves_batchnorm_statistics_alone(resnet):
    gated, (x, y) = resnet
    before = [w.numpy().copy() for w in gated.non_trainable_weights]
    scores = collect_saliency(gated, (x, y), LOSS, training=True)
    after = [w.numpy() for w in gated.non_trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    inference = collect_saliency(gated, (x, y), LOSS, training=False)
    assert any(not np.allclose(scores[g], inference[g]) for g in scores)


def test_switched_off_channel_scores_zero(resnet):
    gated, (x, y) = resnet
    graph = tcp.ChannelGraph(gated)
    group = graph.prunable_groups[-1]
    before = collect_saliency(gated, (x, y), LOSS, signal="taylor")[group.name]
    ch = int(np.argmax(before))
    tcp.set_kept_channels(gated, {group.name: [c for c in range(group.size) if c != ch]}, graph)
    try:
        scores = collect_saliency(gated, (x, y), LOSS, signal="taylor")
    finally:
        tcp.set_kept_channels(gated, {group.name: list(range(group.size))}, graph=graph)
    assert before[ch] > 0 and scores[group.name][ch] == 0.0
    assert np.sum(scores[group.name] > 0) >= np.sum(before > 0) // 2  # the others still count


def test_oracle_equals_loss_of_compact_model():
    gated = tcp.wrap(zoo.randomize(zoo.resnet_style(), seed=4))
    x, y = data_for(gated, n=16)
    oracle = oracle_loss_change(gated, (x, y), LOSS)
    graph = tcp.ChannelGraph(gated)
    base = float(np.mean(LOSS.call(y, gated(x))))
    for group in graph.prunable_groups:
        assert oracle[group.name].shape == (group.size,)
        for ch in (0, group.size - 1):
            kept = [c for c in range(group.size) if c != ch]
            small = tcp.compact(gated, {group.name: kept}, graph=graph)
            removed = float(np.mean(LOSS.call(y, small(x))))
            assert abs((removed - base) - oracle[group.name][ch]) <= 1e-5 * max(1.0, abs(base))
    # the gates are back as they were
    assert all(len(v) == g.size for g, v in zip(graph.prunable_groups,
                                                tcp.get_kept_channels(gated).values(), strict=True))  # fmt: skip


def test_oracle_on_a_sample_of_channels():
    gated = tcp.wrap(zoo.randomize(zoo.resnet_style(), seed=4))
    x, y = data_for(gated, n=16)
    full = oracle_loss_change(gated, (x, y), LOSS)
    groups = [g.name for g in tcp.ChannelGraph(gated).prunable_groups]
    sample = {groups[0]: [1, 0], groups[-1]: np.array([2])}
    part = oracle_loss_change(gated, (x, y), LOSS, channels=sample)
    for name in groups:
        wanted = sorted(int(c) for c in sample.get(name, []))
        measured = np.flatnonzero(~np.isnan(part[name])).tolist()
        assert measured == wanted
        np.testing.assert_allclose(part[name][wanted], full[name][wanted], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="unknown prunable group"):
        oracle_loss_change(gated, (x, y), LOSS, channels={"nope": [0]})
    with pytest.raises(ValueError, match="outside"):
        oracle_loss_change(gated, (x, y), LOSS, channels={groups[0]: [10_000]})


def test_empty_data_is_a_clear_error(resnet):
    gated, (x, y) = resnet
    with pytest.raises(ValueError, match="empty"):
        collect_saliency(gated, (x[:0], y[:0]), LOSS)
    empty = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).take(0)
    with pytest.raises(ValueError, match="no examples"):
        collect_saliency(gated, empty, LOSS)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match="single examples"):
        collect_saliency(gated, unbatched, LOSS)
    with pytest.raises(ValueError, match="needs labels"):
        collect_saliency(gated, unbatched.map(lambda a, b: a).batch(4), LOSS)
    # (x, y, sample_weight) batches are read as (x, y), as Keras's fit reads them
    weighted = unbatched.map(lambda a, b: (a, b, tf.ones_like(b))).batch(4)
    assert_scores_close(collect_saliency(gated, weighted, LOSS), collect_saliency(gated, (x, y), LOSS))


def test_mismatched_labels_are_a_clear_error(resnet):
    gated, (x, y) = resnet
    with pytest.raises(ValueError, match=r"len\(x\)=24, len\(y\)=20"):
        collect_saliency(gated, (x, y[:20]), LOSS)
    acc = SaliencyAccumulator(gated, "taylor", LOSS)
    with pytest.raises(ValueError, match="same number of examples"):
        acc.update(x[:5], y[:4])


def test_nan_loss_is_a_clear_error_and_keeps_state(resnet):
    gated, (x, y) = resnet
    acc = SaliencyAccumulator(gated, "fisher", LOSS)
    acc.update(x[:8], y[:8])
    before = acc.result()
    bad = x[8:16].copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        acc.update(bad, y[8:16])
    assert acc.num_examples == 8
    assert_scores_close(acc.result(), before, rtol=0, atol=0)


def test_loss_that_reduces_the_batch_is_rejected(resnet):
    gated, (x, y) = resnet

    def mean_loss(y_true, y_pred):
        return keras.ops.mean(LOSS.call(y_true, y_pred))

    with pytest.raises(ValueError, match="one value per example"):
        collect_saliency(gated, (x, y), mean_loss)


def test_unknown_signal_is_a_clear_error(resnet):
    gated, (x, y) = resnet
    with pytest.raises(ValueError, match="Unknown signal 'taylr'.*'taylor'"):
        collect_saliency(gated, (x, y), LOSS, signal="taylr")


MIRRORED = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    import zoo
    import tfchannelprune as tcp
    from tfchannelprune.saliency.collect import SaliencyAccumulator, collect_saliency

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    names = ["taylor", "fisher", "abs_mrs", "activation|max_nhw|l2_group",
             "weight_delta|square,mean_all|none"]
    model = zoo.randomize(zoo.resnet_style(), seed=3)
    weights = model.get_weights()
    x = zoo.sample_input(model, batch=20)
    y = np.random.default_rng(0).integers(0, 5, 20)
    single = collect_saliency(model, (x, y), loss=loss, signals=names, batch_size=8)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = zoo.resnet_style()
        mirrored.set_weights(weights)
        gated = tcp.wrap(mirrored)
    dist = collect_saliency(gated, (x, y), loss=loss, signals=names, batch_size=8)
    acc = SaliencyAccumulator(gated, names, loss)
    assert acc.strategy.num_replicas_in_sync == 2
    acc.update_means(x)
    # NumPy batches split between the replicas (even sizes: TF 2.21's oneDNN corrupts memory
    # in the filter gradient of a strided 1x1 conv at odd batch sizes)
    for i in range(0, 20, 8):
        acc.update(x[i : i + 8], y[i : i + 8])
    assert acc.num_examples == 20
    for name in names:
        for a, b in zip(acc.result()[name].values(), dist[name].values()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-10)
    for name in names:  # layer names differ (a second model), the group order does not
        assert len(single[name]) == len(dist[name]) == 4
        for s, d in zip(single[name].values(), dist[name].values()):
            np.testing.assert_allclose(d, s, rtol=1e-5, atol=1e-10)
    print("MIRRORED_OK")
    """
)


def test_mirrored_strategy_two_devices_equals_one():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    here = os.path.dirname(__file__)
    run = subprocess.run(
        [sys.executable, "-c", MIRRORED, here], capture_output=True, text=True, env=env,
        cwd=os.path.dirname(here), timeout=300,
    )  # fmt: skip
    assert "MIRRORED_OK" in run.stdout, run.stderr[-3000:]


def test_load_mnist_subset():
    from tfchannelprune.datasets.digits import load_mnist_subset

    x_train, y_train, x_test, y_test = load_mnist_subset(seed=0)
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert sorted(np.unique(y_test)) == list(range(10))
    assert np.bincount(y_train).min() > 350  # shuffled, not sorted by class
    again = load_mnist_subset(seed=0)
    assert np.array_equal(again[0], x_train) and np.array_equal(again[3], y_test)
    assert not np.array_equal(load_mnist_subset(seed=1)[1], y_train)
