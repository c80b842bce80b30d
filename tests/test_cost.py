"""MACs and params per layer, and the marginal MACs of one channel of a group."""

import json
import warnings

import keras
import numpy as np
import pytest
import zoo
from keras import layers as L

import tfchannelprune as tcp
from tfchannelprune.cli import main


def test_macs_by_hand():
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)  # 10*10*9*3*8 = 21600
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)  # 8*8*9*16 = 9216
    x = L.SeparableConv2D(4, 3, name="sep")(x)  # 6*6*9*16 + 6*6*16*4 = 5184 + 2304
    x = L.Conv2D(6, 1, groups=2, name="grouped")(x)  # 6*6*1*2*6 = 432
    x = L.Flatten()(x)
    out = L.Dense(5, name="head")(x)  # 216*5 = 1080
    model = keras.Model(inp, out)
    per_layer = tcp.count_macs(model, per_layer=True)
    assert per_layer["c1"] == 21600
    assert per_layer["dw"] == 9216
    assert per_layer["sep"] == 5184 + 2304
    assert per_layer["grouped"] == 432
    assert per_layer["head"] == 1080
    assert tcp.count_macs(model) == 21600 + 9216 + 7488 + 432 + 1080
    assert tcp.count_params(model) == model.count_params()


def _layout_twin(data_format):
    shape = (3, 20, 24) if data_format == "channels_first" else (20, 24, 3)
    kw = {"data_format": data_format}
    inp = keras.Input(shape)
    x = L.Conv2D(8, 3, name="c1", **kw)(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw", **kw)(x)
    x = L.SeparableConv2D(4, 3, name="sep", **kw)(x)
    x = L.Conv2DTranspose(6, 3, strides=2, name="up", **kw)(x)
    x = L.GlobalAveragePooling2D(name="gap", **kw)(x)
    return keras.Model(inp, L.Dense(5, name="head")(x))


def test_channels_first_layers_cost_what_their_channels_last_twins_cost():
    """A channels_first model (a barrier: nothing on it is prunable) was costed with its W
    axis as the channels and (C, H) as the spatial size: 1,004,288 MACs for a model of 203,936
    (summary() printed it)."""
    first, last = _layout_twin("channels_first"), _layout_twin("channels_last")
    per_layer = tcp.count_macs(first, per_layer=True)
    assert per_layer == tcp.count_macs(last, per_layer=True)
    assert per_layer["c1"] == 18 * 22 * 9 * 3 * 8
    assert per_layer["dw"] == 16 * 20 * 9 * 16
    assert per_layer["head"] == 6 * 5
    assert tcp.count_params(first) == first.count_params()


def test_summary_shows_the_channels_of_channels_first_groups():
    """summary() printed the W axis (24, 22, 20 ...) as the widths of a channels_first
    model's groups: the graph reads the last axis as channels, which there is W."""
    info = tcp.summary(_layout_twin("channels_first"), print_fn=lambda s: None)
    widths = {g["name"]: (g["kept"], g["size"]) for g in info["groups"]}
    assert not any(g["prunable"] for g in info["groups"])
    (inp,) = [name for name in widths if name.startswith("input_layer")]
    assert widths.pop(inp) == (3, 3)
    channels = {"c1": 8, "dw": 16, "sep": 4, "up": 6, "gap": 6, "head": 5}
    assert widths == {name: (c, c) for name, c in channels.items()}


@pytest.mark.parametrize("name", ["resnet_style", "densenet_style", "mobilenetv2_style",
                                  "flatten_dense", "separable_blocks", "conv1d_model"])  # fmt: skip
def test_marginal_macs_equal_brute_force(name):
    model = zoo.ZOO[name]()
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    plan = zoo.random_plan(graph, seed=2, fraction=0.75)
    tcp.set_kept_channels(gated, plan, graph=graph)
    marginal = tcp.marginal_macs(graph)
    current = tcp.count_macs(graph)
    for group, kept in plan.items():
        if len(kept) < 2:
            continue
        fewer = {**plan, group: kept[1:]}
        expected = current - tcp.count_macs(graph, plan=fewer)
        assert marginal[group] == pytest.approx(expected), group
    assert set(marginal) == {g.name for g in graph.prunable_groups}


def test_counts_follow_gates_and_match_compact():
    model = zoo.randomize(zoo.densenet_style())
    gated = tcp.wrap(model)
    tcp.set_kept_channels(gated, zoo.random_plan(tcp.ChannelGraph(gated), seed=9))
    small = tcp.compact(gated)
    assert tcp.count_macs(gated) == tcp.count_macs(small) < tcp.count_macs(model)
    assert tcp.count_params(gated) == small.count_params()
    assert tcp.count_params(gated, per_layer=True) == tcp.count_params(small, per_layer=True)


def test_summary_and_report_cli(tmp_path, capsys):
    gated = tcp.wrap(zoo.plain_cnn())
    tcp.set_kept_channels(gated, zoo.random_plan(tcp.ChannelGraph(gated), seed=1))
    info = tcp.summary(gated, print_fn=lambda s: None)
    assert info["macs"] == tcp.count_macs(gated)
    assert any(g["kept"] < g["size"] for g in info["groups"])
    path = tmp_path / "gated.keras"
    gated.save(path)
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "channel groups" in text and "MACs" in text and "model output" in text
    assert main(["report", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == tcp.count_params(gated)
    assert np.sum([g["prunable"] for g in data["groups"]]) == len(
        tcp.ChannelGraph(gated).prunable_groups
    )


def test_report_cli_with_dead_channels(tmp_path, capsys):
    model = zoo.plain_cnn()
    first_conv = next(layer for layer in model.layers if isinstance(layer, L.Conv2D))
    kernel = first_conv.kernel.numpy()
    kernel[..., 2] = 0.0  # channel 2 of the first conv: constant output (then BN, ReLU)
    first_conv.kernel.assign(kernel)
    path, data = tmp_path / "m.keras", tmp_path / "x.npy"
    model.save(path)
    np.save(data, np.random.default_rng(0).normal(size=(32, 16, 16, 3)).astype("float32"))
    assert main(["report", str(path), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    groups = {g["group"]: g for g in report["dead"]["groups"]}
    assert 2 in groups[first_conv.name]["dead"]  # (random Dense ReLUs may be dead too)
    assert report["dead"]["dead_channels"] >= 1
    assert groups[first_conv.name]["macs_saved"] > 0
    assert report["macs"] == tcp.count_macs(model)


class _OpaqueMix(keras.layers.Layer):
    """Mixes channels with a raw TensorFlow op: cannot be traced, no rule knows its cost."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 4), name="w")

    def call(self, x):
        import tensorflow as tf

        return tf.linalg.matmul(x, self.w)


def test_count_macs_warns_once_naming_a_layer_it_cannot_cost():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="conv")(inp)  # 4*4*9*3*8 = 3456
    x = _OpaqueMix(name="opaque_mix_for_cost_test")(x)
    out = keras.ops.matmul(L.GlobalAveragePooling2D()(x), np.ones((4, 2), "float32"))
    model = keras.Model(inp, out)
    with pytest.warns(UserWarning, match=r"0 MACs for _OpaqueMix 'opaque_mix_for_cost_test'") as w:
        assert tcp.count_macs(model) == 3456  # the layer is left out, and the warning says so
    assert "Matmul" in str(w[0].message)  # a keras.ops operation without a rule, named too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tcp.count_macs(model) == 3456  # once: the same layers do not warn again
    # known layers never warn
    plain = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(4, 3), L.BatchNormalization(),
                              L.ReLU(), L.GlobalAveragePooling2D(), L.Dense(2)])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tcp.count_macs(plain)
