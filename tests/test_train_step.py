"""Saliency accumulated inside fit's training step, and ChannelPruning's default procedure."""

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
from tfchannelprune.saliency.importance import scoring_context
from tfchannelprune.saliency.train_step import TrainStepSaliency

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
REQUIRED_KEYS = {"event", "epoch", "step", "macs", "macs_fraction", "params", "params_fraction",
                 "channels_kept", "channels_removed_now", "channels_removed", "target_reached"}  # fmt: skip


def tiny_cnn(seed=0, bn=True):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same")(inp)
    x = L.ReLU()(L.BatchNormalization()(x) if bn else x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(12, 3, padding="same")(x)
    x = L.ReLU()(L.BatchNormalization()(x) if bn else x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x))


def gated_model(seed=0, optimizer="sgd", bn=True):
    gated = tcp.wrap(tiny_cnn(seed, bn))
    gated.compile(optimizer=optimizer, loss=LOSS)
    return gated


def installed(gated, signal):
    importance = TrainStepSaliency(signal=signal)
    importance.build(scoring_context(gated, None, LOSS, caller="test"))
    return importance


@pytest.mark.parametrize("signal", ["taylor", "fisher"])
def test_in_step_sums_equal_a_separate_pass_on_the_same_batches(signal):
    # lr = 0 keeps the weights, so a training-mode pass over the same batches must agree
    gated = tcp.wrap(zoo.randomize(zoo.resnet_style(), seed=2))
    gated.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    x, y = zoo.labelled_data(gated, 16, 0)
    importance = installed(gated, signal)
    gated.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert importance.num_examples == 16
    context = scoring_context(gated, None, LOSS, caller="test")
    got = importance(context)
    # the same batches: BatchNorm normalises with batch statistics in training mode
    ref = tcp.collect_saliency(gated, (x, y), LOSS, signal, training=True, batch_size=8)
    for group in ref:
        np.testing.assert_allclose(got[group], ref[group], rtol=1e-4, atol=1e-10, err_msg=group)
    importance.reset()
    assert importance.num_examples == 0
    importance.release()
    assert "train_step" not in vars(gated)


def test_train_step_is_traced_once_across_events():
    x, y = zoo.tiny_digits()
    gated = gated_model()
    traces = []
    original = TrainStepSaliency._train_step

    def counting(self, step, data):
        traces.append(1)  # Python runs only while tracing
        return original(self, step, data)

    TrainStepSaliency._train_step = counting
    try:
        pruning = tcp.ChannelPruning(signal="taylor", target_macs=0.5, frequency="step",
                                     prune_every=2, channels_per_step=1, verbose=0)  # fmt: skip
        gated.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[pruning])
    finally:
        TrainStepSaliency._train_step = original
    assert len(pruning.history) >= 4
    assert len(traces) == 1


@pytest.mark.parametrize("frequency, prune_every, epochs", [("step", 2, 5), ("epoch", 1, 15)])
def test_greedy_without_calibration_data(frequency, prune_every, epochs, tmp_path):
    x, y = zoo.tiny_digits()
    gated = gated_model()
    original = tcp.count_macs(gated)
    pruning = tcp.ChannelPruning(signal="taylor", target_macs=0.5, frequency=frequency,
                                 prune_every=prune_every, history_path=str(tmp_path / "h.json"),
                                 verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[pruning])
    history = pruning.history
    assert len(history) >= 4  # several events, a few channels each ("auto": 5% of 20 = 1)
    assert all(set(r) >= REQUIRED_KEYS for r in history)
    assert all(r["channels_removed_now"] <= 1 for r in history)
    assert history[-1]["target_reached"] and tcp.count_macs(gated) <= 0.5 * original
    assert not any(r["target_reached"] for r in history[:-1])
    if frequency == "step":
        assert [r["step"] % prune_every for r in history] == [0] * len(history)
    small = tcp.compact(gated)
    np.testing.assert_allclose(small(x[:4]), gated(x[:4]), atol=1e-5)


def test_one_shot_is_explicit():
    x, y = zoo.tiny_digits()
    gated = gated_model()
    pruning = tcp.ChannelPruning(signal="fisher", target_macs=0.5, channels_per_step=None,
                                 verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[pruning])
    assert len(pruning.history) == 1 and pruning.done


def test_paper_presets():
    molchanov = tcp.ChannelPruning.from_paper("molchanov2017", target_macs=0.5)
    theis = tcp.ChannelPruning.from_paper("theis2018", target_macs=0.5, beta=1e-6)
    assert isinstance(molchanov.importance, TrainStepSaliency)
    assert molchanov.importance.signal == tcp.signals.get("taylor")
    assert (molchanov.config.normalize, molchanov.config.lam) == ("l2", 1e-3)
    assert (theis.config.normalize, theis.config.beta) == ("none", 1e-6)
    assert theis.importance.signal == tcp.signals.get("fisher")
    for cb in (molchanov, theis):
        assert (cb.frequency, cb.prune_every, cb.channels_per_step) == ("step", 10, 1)
    # the procedure's defaults per criterion
    assert tcp.ChannelPruning(signal="fisher", target_macs=0.5).config.beta == 0.0
    assert tcp.ChannelPruning(signal="l1_weight", target_macs=0.5).config.normalize == "mean"
    with pytest.raises(ValueError, match="Unknown paper"):
        tcp.ChannelPruning.from_paper("lecun1990", target_macs=0.5)


def test_resume_gives_same_channels(tmp_path):
    tf.config.experimental.enable_op_determinism()
    x, y = zoo.tiny_digits()

    def fit(model, **kwargs):
        pruning = tcp.ChannelPruning(signal="fisher", target_macs=0.4, channels_per_step=2,
                                     verbose=0)  # fmt: skip
        model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[pruning], **kwargs)

    straight = gated_model(seed=3, optimizer="adam")
    fit(straight, epochs=6)
    first = gated_model(seed=3, optimizer="adam")
    fit(first, epochs=3)
    first.save(tmp_path / "midway.keras")
    resumed = keras.saving.load_model(tmp_path / "midway.keras")
    fit(resumed, epochs=6, initial_epoch=3)

    def kept(model):
        return list(tcp.get_kept_channels(model).values())

    assert kept(resumed) == kept(straight)
    assert kept(first) != kept(straight)


def test_mirrored_replicas_sum_to_one_device():
    code = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, zoo, tfchannelprune as tcp
        from test_train_step import LOSS, installed, tiny_cnn
        from tfchannelprune.saliency.importance import scoring_context
        x, y = zoo.tiny_digits(32)
        out = []
        for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
            strategy = tf.distribute.MirroredStrategy(devices)
            with strategy.scope():
                gated = tcp.wrap(tiny_cnn(bn=False))  # BatchNorm statistics are per replica
                gated.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
            imp = installed(gated, "fisher")
            gated.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
            scores = imp(scoring_context(gated, None, LOSS, caller="test"))
            out.append((imp.num_examples, np.concatenate([scores[k] for k in sorted(scores)])))
        (n1, a), (n2, b) = out
        print("RESULT", n1, n2, float(np.max(np.abs(a - b) / (np.abs(a) + 1e-12))))
        """
    )
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.path.dirname(here)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, out.stderr[-3000:]
    n1, n2, diff = lines[0].split()[1:]
    assert n1 == n2 == "32" and float(diff) < 1e-4


def test_hooks_stack_and_each_removes_only_its_own():
    from tfchannelprune import _keras

    x, y = zoo.tiny_digits(32)
    gated = gated_model()

    def marking(key):
        def hook(step):
            def hooked(data):
                logs = dict(step(data))
                logs[key] = tf.constant(1.0)
                return logs

            return hooked

        return hook

    a = _keras.add_train_step_hook(gated, marking("a"))
    b = _keras.add_train_step_hook(gated, marking("b"))
    assert _keras.has_train_step_hook(gated, a) and _keras.has_train_step_hook(gated, b)
    logs = gated.fit(x, y, epochs=1, batch_size=16, verbose=0).history
    assert {"a", "b"} <= set(logs)
    _keras.remove_train_step_hook(gated, a)  # the first one added goes first: b stays
    logs = gated.fit(x, y, epochs=1, batch_size=16, verbose=0).history
    assert "b" in logs and "a" not in logs
    _keras.remove_train_step_hook(gated, a)  # removing it again changes nothing
    assert _keras.has_train_step_hook(gated, b)
    _keras.remove_train_step_hook(gated, b)
    assert "train_step" not in vars(gated)
    logs = gated.fit(x, y, epochs=1, batch_size=16, verbose=0).history
    assert not {"a", "b"} & set(logs)


def test_hooks_keep_a_train_step_the_user_set_on_the_instance():
    from tfchannelprune import _keras

    x, y = zoo.tiny_digits(32)
    gated = gated_model()
    calls = []
    own = gated.train_step

    def users_step(data):
        calls.append(1)  # Python runs while tracing
        return own(data)

    gated.train_step = users_step
    handle = _keras.add_train_step_hook(gated, lambda step: step)
    gated.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert calls  # the hook wrapped the user's step, not the class's
    _keras.remove_train_step_hook(gated, handle)
    assert vars(gated)["train_step"] is users_step


def test_signal_is_a_keyword_and_positional_still_works_with_a_warning():
    # docs/api.md: `signal` is keyword-only everywhere; the former positional call is mapped
    with pytest.warns(DeprecationWarning, match="keyword-only"):
        old = TrainStepSaliency("fisher")
    assert old.name == TrainStepSaliency(signal="fisher").name
    with pytest.raises(TypeError, match="positional"):
        TrainStepSaliency("fisher", "taylor")
