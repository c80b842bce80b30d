"""Bad input gets a clear error and changes nothing."""

import keras
import numpy as np
import pytest
import zoo

import tfchannelprune as tcp
from tfchannelprune.errors import UnsupportedModelError


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3)

    def call(self, x):
        import tensorflow as tf

        return tf.nn.relu(self.conv(x))  # a raw TensorFlow op: call() cannot be traced


def test_untraceable_subclassed_model_is_refused():
    model = Subclassed()
    model(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match=r"subclassed model.*tf\.nn\.relu"):
        tcp.ChannelGraph(model)
    with pytest.raises(UnsupportedModelError):
        tcp.wrap(model)


def test_keras2_model_is_refused():
    # tf_keras is not installed here (it would pull the full tensorflow package), so this
    # stands in a class that lives where tf_keras's models live.
    Fake = type("Functional", (), {"__module__": "tf_keras.src.engine.functional"})
    with pytest.raises(TypeError, match="Keras 2"):
        tcp.ChannelGraph(Fake())


def test_not_a_model():
    with pytest.raises(TypeError, match="Expected a keras.Model"):
        tcp.ChannelGraph("model.keras")


def test_unbuilt_sequential():
    with pytest.raises(ValueError, match="not built"):
        tcp.ChannelGraph(keras.Sequential([keras.layers.Dense(3)]))


def test_non_tensorflow_backend_is_refused(monkeypatch):
    # Only TensorFlow is installed here (the numpy backend needs jax), so the backend query is
    # patched the way a process started with KERAS_BACKEND=jax would answer it.
    model = zoo.plain_cnn()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="TensorFlow backend.*backend='jax'"):
        tcp.ChannelGraph(model)


@pytest.fixture
def gated():
    keras.backend.clear_session()  # layer names start again at conv2d, dense ...
    return tcp.wrap(zoo.randomize(zoo.plain_cnn()))


def _gate_state(model):
    return {layer.name: layer.gate.numpy().copy() for layer in zoo.leaf_layers(model)
            if isinstance(layer, tcp.ChannelGate)}  # fmt: skip


@pytest.mark.parametrize(
    "plan, error, match",
    [
        ({"no_such_group": [0]}, ValueError, "No channel group named"),
        ({"conv2d": [0, 99]}, ValueError, r"must be in \[0, 8\)"),
        ({"conv2d": [-1, 2]}, ValueError, r"must be in \[0, 8\)"),
        ({"conv2d": [1, 1, 2]}, ValueError, "duplicates"),
        ({"conv2d": []}, ValueError, "would empty"),
        ({"dense_1": [0]}, tcp.UnsupportedLayerError, "model output"),
        ([("conv2d", [0])], TypeError, "plan maps group names"),
    ],
)
def test_bad_plans_change_nothing(gated, plan, error, match):
    names = {g.name for g in tcp.ChannelGraph(gated).groups}
    assert "conv2d" in names and "dense_1" in names
    before = _gate_state(gated)
    # a valid entry first: it must not be applied either when a later entry is bad
    full = {"conv2d_1": [0, 1, 2]} | plan if isinstance(plan, dict) else plan
    with pytest.raises(error, match=match):
        tcp.set_kept_channels(gated, full)
    after = _gate_state(gated)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(error, match=match):
        tcp.compact(gated, plan)


def test_wrap_twice_and_unwrapped_set(gated):
    with pytest.raises(ValueError, match="already has ChannelGate"):
        tcp.wrap(gated)
    with pytest.raises(ValueError, match="call tfchannelprune.wrap"):
        tcp.set_kept_channels(zoo.plain_cnn(), {"conv2d": [0]})


def test_non_binary_gate_refused_by_compact(gated):
    gate = next(layer for layer in zoo.leaf_layers(gated) if isinstance(layer, tcp.ChannelGate))
    gate.gate.assign(np.full(gate.gate.shape, 0.5, "float32"))
    with pytest.raises(ValueError, match="other than 0 and 1"):
        tcp.compact(gated)
