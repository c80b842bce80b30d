"""Issue 12: models Keras 3 users have (keras_hub CNNs, custom layers, subclassed models,
channel operations), the three bugs, and the coverage they reach."""

import importlib.util
import threading
import time

import coverage_check as cc
import hub_zoo
import keras
import numpy as np
import pytest
from keras import layers as L
from keras import ops

import tfchannelprune as tcp


def run_within(seconds, fn):
    """``fn()`` in a thread; fails (instead of hanging the suite) when it takes too long."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds} s"
    return result.get("value")


# ------------------------------------------------------------------------------ the bugs
def test_outer_model_reusing_nested_input_finishes():
    inp = keras.Input((8, 8, 3))
    inner = keras.Model(inp, L.Conv2D(4, 3)(inp))
    x = L.GlobalAveragePooling2D()(inner(inner.input))
    outer = keras.Model(inner.input, L.Dense(2)(x))
    graph = run_within(20, lambda: tcp.ChannelGraph(outer))
    assert [g.name for g in graph.prunable_groups] == [f"{inner.name}/{inner.layers[1].name}"]
    _, _, plan, diff = cc.check_gated_equals_compact(outer)
    assert plan and diff <= 1e-5


def test_custom_activation_function_is_traced():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="c1")(inp)
    x = L.Activation(lambda t: t * 2.0)(x)
    model = keras.Model(inp, L.Conv2D(2, 1)(x))
    assert tcp.ChannelGraph(model).group("c1").prunable
    _, _, plan, diff = cc.check_gated_equals_compact(model)
    assert plan == {"c1": plan["c1"]} and diff <= 1e-5


def _nested_on_unknown_size():
    inp = keras.Input((None, None, 3))
    inner = keras.Model(inp, L.Conv2D(4, 3, name="inner_conv")(inp), name="inner")
    outer_in = keras.Input((16, 16, 3))
    return keras.Model(outer_in, L.Conv2D(2, 1, name="head")(inner(outer_in)))


def test_count_macs_uses_outer_shapes_of_a_nested_model():
    macs = tcp.count_macs(_nested_on_unknown_size(), per_layer=True)
    assert macs == {"inner/inner_conv": 14 * 14 * 9 * 3 * 4, "head": 14 * 14 * 4 * 2}


def test_count_macs_of_truly_unknown_size_is_a_named_error():
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, L.Conv2D(2, 1)(L.Conv2D(4, 3)(inp)))
    with pytest.raises(tcp.UnsupportedModelError, match="spatial size"):
        tcp.count_macs(model)


# ------------------------------------------------------------------ custom layers, subclassed
class ConvBlock(keras.layers.Layer):
    """A composite layer: Keras layers and keras.ops inside ``call``."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(filters, 3, padding="same", name="conv")
        self.bn = L.BatchNormalization(name="bn")
        self.proj = L.Conv2D(filters, 1, name="proj")

    def call(self, x, training=None):
        y = ops.relu(self.bn(self.conv(x), training=training))
        pooled = ops.mean(y, axis=(1, 2), keepdims=True)  # squeeze-and-excitation pooling
        return self.proj(y * ops.sigmoid(pooled)) + y


class RawTF(keras.layers.Layer):
    def call(self, x):
        import tensorflow as tf

        return tf.nn.relu(x)


class SubclassedNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stem = L.Conv2D(8, 3, padding="same")
        self.block = ConvBlock(8)
        self.head = L.Dense(3)

    def call(self, x, training=None):
        x = ops.pad(self.stem(x), [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = self.block(x, training=training)
        left, right = ops.split(x, 2, axis=-1)
        x = ops.concatenate([ops.relu(left), right], axis=-1)
        return self.head(ops.mean(x, axis=(1, 2)))


def composite_model():
    inp = keras.Input((8, 8, 3))
    x = ConvBlock(6, name="block")(L.Conv2D(6, 3, name="stem")(inp))
    x = ops.image.resize(ops.transpose(x, (0, 2, 1, 3)), (12, 12))
    x = x[:, 1:, :, :]
    x = ops.reshape(ops.reshape(x, (-1, 11 * 12, 6)), (-1, 11, 12, 6))
    pooled = L.GlobalAveragePooling2D()(x)
    outputs = {"logits": L.Dense(2)(pooled), "score": L.Dense(1)(pooled)}
    return keras.Model(inp, outputs, name="composite")


def test_composite_layer_is_inlined():
    model = composite_model()
    graph = tcp.ChannelGraph(model)
    names = {g.name for g in graph.prunable_groups}
    assert names == {"stem", "block/conv"}  # proj is added to conv's output: one group
    assert graph.group("block/conv").producers == ("block/conv", "block/proj")
    assert all(g.prunable for g in graph.groups if g.reason not in cc.EDGE_REASONS)
    gated, small, plan, diff = cc.check_gated_equals_compact(model)
    assert plan and diff <= 1e-5
    assert small.count_params() < model.count_params()
    # the compact form is Functional, the block's inner structure kept as a nested model
    assert isinstance(small.get_layer("block"), keras.Model)
    x = cc.sample_input(model)
    assert sorted(small(x)) == ["logits", "score"]


def test_untraceable_layer_stays_barrier_naming_the_line():
    inp = keras.Input((8, 8, 3))
    x = RawTF()(L.Conv2D(4, 3, name="c1")(inp))
    model = keras.Model(inp, L.Conv2D(2, 1)(x))
    group = tcp.ChannelGraph(model).group("c1")
    assert not group.prunable
    assert "tf.nn.relu(x)" in group.reason and "test_coverage.py" in group.reason
    with pytest.raises(tcp.UnsupportedLayerError):
        tcp.compact(model, plan={"c1": [0, 1]})


def test_subclassed_model_wrap_prune_compact_export(tmp_path):
    model = SubclassedNet()
    x = np.random.default_rng(0).normal(size=(2, 10, 10, 3)).astype("float32")
    model(x)
    graph = tcp.ChannelGraph(model)
    assert len(graph.prunable_groups) >= 3
    gated, small, plan, diff = cc.check_gated_equals_compact(model, shape=(10, 10, 3))
    assert plan and diff <= 1e-5
    assert {g.name for g in tcp.ChannelGraph(gated).groups} == {g.name for g in graph.groups}
    assert small.count_params() < model.count_params()
    report = tcp.export_tflite(small, tmp_path / "small.tflite", sample_inputs=x[:1])
    assert report.parity_ok


def test_subclassed_model_not_built_is_named_error():
    with pytest.raises(tcp.UnsupportedModelError, match="not built"):
        tcp.ChannelGraph(SubclassedNet())


class ShippedDetector(keras.Model):
    """Fully convolutional, built the way pretrained detectors ship: ``build()`` builds the
    layers itself (no input shape recorded), then weights are loaded."""

    def __init__(self, head_first=False, **kwargs):
        super().__init__(**kwargs)
        if head_first:  # attribute order differs from call order: the guess must fail loudly
            self.head = L.Conv2D(4, 1, name="head")
        self.stem = L.Conv2D(8, 3, padding="same", name="stem")
        self.bn = L.BatchNormalization(name="bn")
        self.mid = L.Conv2D(6, 3, padding="same", name="mid")
        if not head_first:
            self.head = L.Conv2D(4, 1, name="head")

    def build(self, input_shape=None):
        self.stem.build((None, None, None, 3))
        self.bn.build((None, None, None, 8))
        self.mid.build((None, None, None, 8))
        self.head.build((None, None, None, 6))

    def call(self, x):
        x = ops.relu(self.bn(self.stem(x)))
        return self.head(ops.relu(self.mid(x)))


def _shipped(tmp_path, **kwargs):
    source = ShippedDetector(**kwargs)
    source.build()
    cc.randomize(source)
    path = str(tmp_path / "detector.weights.h5")
    source.save_weights(path)
    model = ShippedDetector(**kwargs)
    model.build()  # no input shape, as shipped
    model.load_weights(path)
    return model


def test_subclassed_model_built_without_input_shape_is_traced(tmp_path):
    model = _shipped(tmp_path)
    assert model.built and not model._build_shapes_dict  # built, but no shape recorded
    gated = tcp.wrap(model)  # traced on (None, None, None, 3): stem's kernel has 3 inputs
    assert tuple(gated.inputs[0].shape) == (None, None, None, 3)
    plan = {"stem": [0, 3, 5, 6], "mid": [1, 2, 4]}
    tcp.set_kept_channels(gated, plan)
    small = tcp.compact(gated)
    assert small.get_layer("stem").filters == 4 and small.get_layer("mid").filters == 3
    for size in ((12, 12), (9, 17)):  # the spatial size stays free
        x = cc.sample_input(gated, shape=(*size, 3))
        assert cc.worst_rel_diff(cc.outputs(gated, x), cc.outputs(small, x)) <= 1e-5
        assert cc.worst_rel_diff(cc.outputs(model, x), cc.outputs(gated, x)) > 1e-4  # not vacuous
    full = tcp.wrap(model)  # all gates open: the loaded weights, unchanged
    x = cc.sample_input(full, shape=(10, 10, 3))
    assert cc.worst_rel_diff(cc.outputs(model, x), cc.outputs(full, x)) <= 1e-6
    with pytest.raises(tcp.UnsupportedModelError, match="spatial size"):
        tcp.count_macs(model)  # the spatial size is unknown: the refusal says so
    sized = tcp.wrap(model, input_shape=(10, 10, 3))
    assert tcp.count_macs(sized) == 10 * 10 * (9 * 3 * 8 + 9 * 8 * 6 + 6 * 4)


def test_a_wrong_first_layer_guess_is_refused_and_input_shape_fixes_it(tmp_path):
    model = _shipped(tmp_path, head_first=True)  # `head` (6 inputs) is the first attribute
    with pytest.raises(tcp.UnsupportedModelError, match=r"traced on \(None, None, None, 6\).*"
                       r"'head'.*input_shape="):  # fmt: skip
        tcp.ChannelGraph(model)
    graph = tcp.ChannelGraph(model, input_shape=(None, None, 3))
    assert {g.name for g in graph.prunable_groups} == {"stem", "mid"}
    gated = tcp.wrap(model, input_shape=(None, None, 3))
    tcp.set_kept_channels(gated, {"stem": [1, 2], "mid": [0, 5]})
    x = cc.sample_input(gated, shape=(8, 8, 3))
    assert cc.worst_rel_diff(cc.outputs(gated, x), cc.outputs(tcp.compact(gated), x)) <= 1e-5
    with pytest.raises(ValueError, match="input_shape="):  # a Functional model has its own
        tcp.ChannelGraph(gated, input_shape=(9, 9, 3))


# ------------------------------------------------------------------------------ keras_hub
# keras-hub is installed by `make install` (--no-deps, see the Makefile), not by the [test]
# extra: only the tests that build its models are skipped without it, each with this reason.
needs_keras_hub = pytest.mark.skipif(
    importlib.util.find_spec("keras_hub") is None,
    reason="keras-hub is not installed (`make install` installs it with --no-deps)",
)
FAST = [n for n in hub_zoo.HUB_MODELS if n not in ("basnet", "segmenter_deeplabv3")]


@needs_keras_hub
@pytest.mark.parametrize("name", FAST + ["basnet"])
def test_keras_hub_gated_equals_compact(name):
    start = time.time()
    model = hub_zoo.build(name)
    report = cc.coverage(model)
    gated, small, plan, diff = cc.check_gated_equals_compact(model)
    assert plan and diff <= 1e-5
    before = {(g.name, g.size, g.prunable) for g in tcp.ChannelGraph(model).groups}
    assert before == {(g.name, g.size, g.prunable) for g in tcp.ChannelGraph(gated).groups}
    assert report["share"] >= 0.9, report["reasons"]
    assert time.time() - start < 60


@needs_keras_hub
def test_keras_hub_task_model_keeps_output_structure():
    model = hub_zoo.image_segmenter()
    _, small, plan, diff = cc.check_gated_equals_compact(model)
    assert plan and diff <= 1e-5
    assert isinstance(small, keras.Model) and small.output_shape == model.output_shape


# ------------------------------------------------------------------------ grouped convs
def grouped_model(groups=3):
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(12, 3, padding="same", name="stem")(inp)))
    x = L.Conv2D(12, 3, padding="same", groups=groups, name="grouped")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    return keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(x)), name="grouped_model")


def test_grouped_conv_keeps_equal_group_widths():
    model = grouped_model()
    graph = tcp.ChannelGraph(model)
    sizes = {g.name: g.size for g in graph.prunable_groups}
    # 12 channels in 3 conv groups: position j of every group is one channel-graph group
    assert sizes == {"stem[:4]": 4, "grouped": 4}
    _, small, plan, diff = cc.check_gated_equals_compact(model)
    assert diff <= 1e-5
    conv = small.get_layer("grouped")
    kept_in, kept_out = len(plan["stem[:4]"]), len(plan["grouped"])
    assert conv.groups == 3 and conv.filters == 3 * kept_out
    assert conv.kernel.shape == (3, 3, kept_in, 3 * kept_out)
    assert small.get_layer("stem").filters == 3 * kept_in
    macs = tcp.count_macs(small, per_layer=True)
    assert macs["grouped"] == 8 * 8 * 9 * kept_in * 3 * kept_out


def test_grouped_conv_other_fraction_and_groups():
    _, _, plan, diff = cc.check_gated_equals_compact(grouped_model(groups=2), fraction=0.25)
    assert plan and diff <= 1e-5


def test_layers_inside_a_traced_layer_follow_the_training_flag():
    gated = tcp.wrap(composite_model())
    bn = gated.get_layer("block").get_layer("bn")
    before = bn.moving_mean.numpy().copy()
    x = cc.sample_input(gated, batch=4)
    gated.compile("sgd", {"logits": "mse", "score": "mse"})
    gated.fit(x, {"logits": np.zeros((4, 2)), "score": np.zeros((4, 1))}, epochs=1, verbose=0)
    assert not np.allclose(bn.moving_mean.numpy(), before)  # BN trained: training=True reached it
    y = gated(x, training=False)["logits"]
    assert np.allclose(y, gated.predict(x, verbose=0)["logits"], atol=1e-5)


def test_channel_slices_of_a_concatenation_and_of_a_group():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    b = L.Conv2D(4, 3, padding="same", name="b")(inp)
    x = ops.relu(ops.concatenate([a, b], axis=-1))
    left, right, mid = x[..., :6], x[:, :, :, 6:], x[..., 2:8]  # a; b; part of a and of b
    y = L.Conv2D(4, 1, name="left")(left) + L.Conv2D(4, 1, name="right")(right)
    y = y + L.Conv2D(4, 1, name="mid")(mid)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(y)))
    graph = tcp.ChannelGraph(model)
    assert {g.name for g in graph.prunable_groups} == {"a", "b", "left"}
    _, small, plan, diff = cc.check_gated_equals_compact(model, fraction=0.5)
    assert diff <= 1e-5
    kept_mid = int((np.asarray(plan["a"]) >= 2).sum() + (np.asarray(plan["b"]) < 2).sum())
    assert small.get_layer("mid").kernel.shape[2] == kept_mid
    with pytest.raises(tcp.UnsupportedLayerError, match="no channel"):
        tcp.compact(model, plan={"a": [0, 1], "b": [2, 3]})  # mid = a[2:6] + b[0:2]: empty
