"""ChannelPruning callback and prune(): targets, logs, resume, errors, MirroredStrategy."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import zoo
from keras import layers as L

import tfchannelprune as tcp
from tfchannelprune.core.cost import count_macs

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(inp)))
    x = L.MaxPooling2D()(x)
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(12, 3, padding="same")(x)))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x))


tiny_data = zoo.tiny_digits


def gated_model(seed=0, optimizer="sgd"):
    gated = tcp.wrap(tiny_cnn(seed))
    gated.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
    return gated


@pytest.mark.parametrize("signal", ["taylor", "l1_weight"])
def test_prunes_to_macs_target_and_logs(tmp_path, signal):
    x, y = tiny_data()
    gated = gated_model()
    original = count_macs(gated)
    history_path = str(tmp_path / "history.csv")
    # the schedule sets the pace, so no cap on channels per event (one-shot per event); a
    # global ranking, since the same fraction from both groups (8 and 12 channels) has steps
    # too coarse to stop between the two events' targets
    pruning = tcp.ChannelPruning((x, y), LOSS, signal, target_macs=0.5, schedule="polynomial",
                                 num_events=2, channels_per_step=None, history_path=history_path,
                                 mode="global",
                                 monitor="loss", log_dir=str(tmp_path / "tb"), verbose=0)  # fmt: skip
    fit = gated.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[pruning])
    assert count_macs(gated) <= 0.5 * original
    assert pruning.done
    assert [r["event"] for r in pruning.history] == [1, 2]
    assert pruning.history[0]["macs_fraction"] > pruning.history[1]["macs_fraction"]
    assert fit.history["macs"][-1] == count_macs(gated)
    assert fit.history["channels_removed"][-1] > 0
    assert open(history_path).read().count("\n") == 3  # header + 2 events
    assert os.listdir(tmp_path / "tb")
    small = tcp.compact(gated)
    np.testing.assert_allclose(small(x[:4]), gated(x[:4]), atol=1e-5)


def test_schedule_object_and_channel_target():
    x, y = tiny_data()
    gated = gated_model()
    # the tfmot PolynomialDecay protocol: schedule(step) -> (should_prune, sparsity)
    schedule = tcp.PolynomialSchedule(0.0, 0.6, begin_step=2, end_step=6, frequency=2)
    pruning = tcp.ChannelPruning((x, y), LOSS, "l2_weight", target_macs=0.4,
                                 schedule=schedule, channels_per_step=None, verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[pruning])
    assert [r["step"] for r in pruning.history] == [2, 4, 6]
    assert pruning.history[-1]["macs_fraction"] <= 0.4 + 1e-9

    gated = gated_model()
    pruning = tcp.ChannelPruning((x, y), LOSS, "l1_weight", target_channels=12,
                                 channels_per_step=3, verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[pruning])
    assert [r["channels_removed_now"] for r in pruning.history] == [3, 3, 2]
    assert sum(len(v) for v in tcp.get_kept_channels(gated).values()) == 12


@pytest.mark.parametrize("target", [0, -0.5, 1.5, "half"])
def test_target_outside_unit_interval(target):
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        tcp.ChannelPruning(tiny_data(), LOSS, target_macs=target)


def test_unreachable_target_says_best_reachable():
    x, y = tiny_data()
    gated = gated_model()
    pruning = tcp.ChannelPruning((x, y), LOSS, target_macs=0.05, min_channels=6, verbose=0)
    with pytest.raises(ValueError, match=r"best reachable is 0\.\d+"):
        gated.fit(x, y, epochs=1, verbose=0, callbacks=[pruning])


def test_ungated_model_says_wrap():
    x, y = tiny_data()
    model = tiny_cnn()
    model.compile(optimizer="sgd", loss=LOSS)
    pruning = tcp.ChannelPruning((x, y), LOSS, target_macs=0.5)
    with pytest.raises(ValueError, match=r"tfchannelprune.wrap\(model\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[pruning])


def test_resume_gives_same_channels(tmp_path):
    tf.config.experimental.enable_op_determinism()
    x, y = tiny_data()

    def callback():
        return tcp.ChannelPruning((x, y), LOSS, "taylor", target_macs=0.3, schedule="polynomial",
                                  num_events=4, channels_per_step=None, verbose=0)  # fmt: skip

    def fit(model, **kwargs):
        model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[callback()], **kwargs)

    straight = gated_model(seed=3, optimizer="adam")
    fit(straight, epochs=5)

    first = gated_model(seed=3, optimizer="adam")
    fit(first, epochs=2)
    path = tmp_path / "midway.keras"
    first.save(path)
    resumed = keras.saving.load_model(path)
    fit(resumed, epochs=5, initial_epoch=2)
    def kept(model):  # the two runs build separate models, so layer names differ
        return list(tcp.get_kept_channels(model).values())

    assert kept(resumed) == kept(straight)
    assert kept(first) != kept(straight)  # it really stopped midway


def test_prune_rounds_shrink_model():
    x, y = tiny_data()
    model = tiny_cnn()
    result = tcp.prune(model, (x, y), LOSS, target_macs=0.4, rounds=2, signal="l1_weight",
                       fine_tune_data=(x, y), fine_tune_epochs=1, verbose=0)  # fmt: skip
    assert [r["round"] for r in result.history] == [1, 2]
    assert result.history[0]["macs_fraction"] > result.history[1]["macs_fraction"]
    assert count_macs(result.model) <= 0.4 * count_macs(model)
    assert "loss" in result.history[-1]
    assert not tcp.core.gate.is_wrapped(result.model)


def test_mirrored_strategy_two_cpus():
    code = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, tfchannelprune as tcp
        from test_callbacks import LOSS, tiny_cnn, tiny_data
        x, y = tiny_data()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            gated = tcp.wrap(tiny_cnn())
            gated.compile(optimizer="sgd", loss=LOSS)
        pruning = tcp.ChannelPruning((x, y), LOSS, "taylor", target_macs=0.5,
                                     channels_per_step=None, verbose=0)
        gated.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[pruning])
        small = tcp.compact(gated)
        print("RESULT", tcp.count_macs(gated) / tcp.count_macs(tiny_cnn()),
              float(np.max(np.abs(small(x[:4]) - gated(x[:4])))))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, out.stderr[-3000:]
    fraction, diff = map(float, lines[0].split()[1:])
    assert fraction <= 0.5 and diff < 1e-4


def test_measure_latency_is_real():
    gated = gated_model()
    pruning = tcp.ChannelPruning(tiny_data(), LOSS, target_latency=1.0)
    pruning.set_model(gated)
    assert 0 < pruning.measure_latency() < 50


def test_prune_with_mean_replacement_keeps_outputs_closer():
    # 1x1 convs and Dense only, where mean replacement is exact for the removed channels' means
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    x = L.ReLU()(L.Conv2D(12, 1)(inp))
    x = L.ReLU()(L.Conv2D(10, 1, use_bias=False)(x))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, L.Dense(3)(x))
    x_data = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32") + 1
    y_data = np.zeros(64, "int64")
    common = dict(target_macs=0.5, rounds=1, signal="l1_weight", verbose=0)
    plain = tcp.prune(model, (x_data, y_data), LOSS, **common).model
    folded = tcp.prune(model, (x_data, y_data), LOSS, mean_replacement=True, **common).model
    reference = model(x_data).numpy()
    err_plain = np.abs(plain(x_data).numpy() - reference).mean()
    err_folded = np.abs(folded(x_data).numpy() - reference).mean()
    assert err_folded < err_plain
    assert count_macs(folded) == count_macs(plain)


def _tfmot_schedule_module():
    """tfmot's pruning_schedule.py loaded on its own: importing the tfmot package would switch
    tf.keras to Keras 2 for the whole process, and this file needs only TensorFlow."""
    import importlib.util

    spec = importlib.util.find_spec("tensorflow_model_optimization")  # does not import it
    if spec is None:
        pytest.skip("pip install --no-deps tensorflow-model-optimization")
    path = os.path.join(os.path.dirname(spec.origin), "python", "core", "sparsity", "keras",
                        "pruning_schedule.py")  # fmt: skip
    module_spec = importlib.util.spec_from_file_location("tfmot_pruning_schedule", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_tfmot_schedule_objects_as_they_are():
    tfmot = _tfmot_schedule_module()
    x, y = tiny_data()
    gated = gated_model()
    schedule = tfmot.PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.6, begin_step=2,
                                     end_step=6, frequency=2)  # fmt: skip
    pruning = tcp.ChannelPruning((x, y), LOSS, "l1_weight", target_macs=0.4, normalize="l2",
                                 schedule=schedule, channels_per_step=None, verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[pruning])
    assert [r["step"] for r in pruning.history] == [2, 4, 6]
    assert pruning.history[-1]["macs_fraction"] <= 0.4 + 1e-9
    ours = tcp.PolynomialSchedule(0.0, 0.6, begin_step=2, end_step=6, frequency=2)
    for step in range(9):
        prune_now, sparsity = schedule(step)
        assert (bool(prune_now), pytest.approx(float(sparsity), abs=1e-6)) == ours(step)
    constant = tfmot.ConstantSparsity(0.5, begin_step=0, frequency=3)
    assert [bool(constant(s)[0]) for s in range(4)] == [True, False, False, True]
    assert "tensorflow_model_optimization" not in sys.modules
    assert os.environ.get("TF_USE_LEGACY_KERAS") in (None, "0", "")


@pytest.mark.parametrize(
    "signal, expected",
    [("taylor", ("mean", 0.0)), ("fisher", ("mean", 0.0)), ("l1_weight", ("mean", 0.0))],
)
def test_prune_takes_the_callbacks_per_signal_defaults(monkeypatch, signal, expected):
    """prune() and ChannelPruning answer "which normalisation and beta" in one place."""
    from tfchannelprune.prune import select

    seen = []
    original = select.select_channels

    def spy(graph, scores, masks, config, **targets):
        seen.append((config.normalize, config.beta))
        return original(graph, scores, masks, config, **targets)

    monkeypatch.setattr(select, "select_channels", spy)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 3
    tcp.prune(tiny_cnn(), (x, y), LOSS, target_macs=0.7, rounds=1, signal=signal, verbose=0)
    callback = tcp.ChannelPruning(data=(x, y), loss=LOSS, signal=signal, target_macs=0.7)
    assert seen == [expected]
    assert (callback.config.normalize, callback.config.beta) == expected
    tcp.prune(tiny_cnn(), (x, y), LOSS, target_macs=0.7, rounds=1, signal=signal, verbose=0,
              normalize="max", beta=0.5)  # fmt: skip
    assert seen[-1] == ("max", 0.5)


def test_calibration_passes_are_traced_once_per_fit(monkeypatch):
    """With calibration data every event scores through ONE accumulator (reset), so its
    tf.function is traced once, and the scores equal a fresh collection's."""
    from tfchannelprune.saliency import accumulator

    built = []
    original = accumulator.SaliencyAccumulator.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(accumulator.SaliencyAccumulator, "__init__", counting)
    x, y = tiny_data()
    gated = gated_model()
    pruning = tcp.ChannelPruning((x[:64], y[:64]), LOSS, "apoz",
                                 target_macs=0.4, channels_per_step=2, verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[pruning])
    assert len(pruning.history) == 3 and len(built) == 1
    cached = tcp.collect_saliency(gated, (x[:64], y[:64]), LOSS, "apoz")  # a fresh one
    context = pruning._context(None)
    reused = tcp.saliency.collect.score_all(context, [pruning.importance])[0]
    assert len(built) == 2  # the callback's own accumulator was reused
    for group, scores in cached.items():
        np.testing.assert_allclose(reused[group], scores, rtol=1e-6)


@pytest.mark.parametrize("pruning_first", [True, False])
def test_in_step_taylor_and_dead_monitor_in_one_fit(pruning_first):
    # both hook the training step through the one installer: each sees every step, and at
    # the end the model has its own train step back, whichever callback ends first
    x, y = tiny_data()
    gated = gated_model()
    pruning = tcp.ChannelPruning(signal="taylor", target_macs=0.5, frequency="step",
                                 prune_every=2, verbose=0)  # fmt: skip
    monitor = tcp.DeadChannelMonitor()
    accumulated = []
    spy = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: accumulated.append(
            pruning.importance.num_examples
        )
    )
    callbacks = [spy, pruning, monitor] if pruning_first else [monitor, spy, pruning]
    gated.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
    assert max(accumulated) >= 16  # Taylor's sums grew inside the steps
    assert pruning.history and sum(r["channels_removed_now"] for r in pruning.history) > 0
    assert [r["epoch"] for r in monitor.history] == [0, 1]
    assert monitor.report.num_examples == len(x)  # the monitor saw every example of the epoch
    assert "train_step" not in vars(gated) and gated.train_function is None
    # a plain fit afterwards feeds neither of them
    before = pruning.importance.num_examples
    gated.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert pruning.importance.num_examples == before
    assert "train_step" not in vars(gated)


def test_slots_cut_without_a_model_equal_the_compact_ones():
    # prune() slices the optimizer's slots with the rules' cuts directly; the former way put
    # them in the variables and compacted the model once per slot
    from tfchannelprune.prune import optimizer_state

    model = zoo.randomize(zoo.resnet_style((8, 8, 3)), seed=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
    x, y = zoo.labelled_data(model, 32, 0)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    slots = optimizer_state.optimizer_slots(model.optimizer, model)
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    tcp.set_kept_channels(gated, zoo.random_plan(graph, seed=1), graph=graph)
    small = tcp.compact(gated, graph=graph)
    direct = optimizer_state.sliced_slots(gated, slots, graph, small)
    through_models = optimizer_state.sliced_slots(gated, slots, graph)
    assert set(direct) == set(through_models) == set(slots)
    for name in slots:
        assert set(direct[name]) == set(through_models[name])
        for path, value in through_models[name].items():
            np.testing.assert_array_equal(direct[name][path], value, err_msg=f"{name} {path}")
