"""The rule contract: every registered layer class, and a custom layer registered here, runs
through every feature that reads rule declarations.

For each class a tiny model puts it after a prunable producer ``p`` (Conv, BatchNorm, ReLU)
and before a consumer, then checks:

* the declarations themselves: each ``WeightAxis`` names a weight whose axis has one index
  (times ``repeat``) per channel position of its side;
* compact: the gated model equals the compact one (1e-5) under a random plan;
* weight signals: ``l1_weight`` scores are finite, >= 0 and one per channel;
* mean replacement: a channel of ``p`` made constant is removed with its constant folded into
  the consumers' biases, and the output stays equal (exact layers) or gets closer than
  removing it without the fold (layers that break constancy at borders);
* the dynamic executor: running on the active channels equals ``compact(model, plan)``.

A newly registered class without a builder below fails ``test_every_registered_class_has_a_builder``.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import zoo
from keras import layers as L

import tfchannelprune as tcp
import tfchannelprune.gaze.layers as gaze_layers
from tfchannelprune import _keras
from tfchannelprune.core import rules
from tfchannelprune.core.gate import gate_layers, is_wrapped, record_gate_inputs
from tfchannelprune.core.plans import get_kept_channels
from tfchannelprune.core.rules import GATHERED, Passthrough, WeightAxis
from tfchannelprune.dead.mean_replacement import mean_replacement_shift
from tfchannelprune.dynamic.executor import ChannelExecutor


# ---------------------------------------------------------------------- a custom layer
@keras.saving.register_keras_serializable(package="contract_test")
class Scale(keras.layers.Layer):
    """y = x * scale, one learned scale per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


class ScaleRule(Passthrough):
    """Channel c out = scale[c] * channel c in: zero-preserving, one weight per channel."""

    def propagate(self, ctx, fn):
        super().propagate(ctx, fn)
        ctx.member(fn, "channelwise", ctx.layout(fn.inputs[0]))

    def cut(self, layer, fn, in_keep, out_keep):
        return layer.get_config(), {"scale": layer.scale.numpy()[in_keep]}

    def weight_axes(self, fn):
        return (WeightAxis("scale", 0, "in"),)

    def channel_scale(self, fn):
        return "scale"  # what the bn_scale signal reads

    def subset(self, fn):
        return GATHERED

    def call_subset(self, layer, fn, x, weights, training):
        return x * keras.ops.cast(weights["scale"], x.dtype), {}


tcp.register_rule(Scale, ScaleRule())


# ---------------------------------------------------------------------- the builders
def conv(rank):
    return {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[rank]


def pool(rank):
    return {1: L.GlobalAveragePooling1D, 2: L.GlobalAveragePooling2D, 3: L.GlobalAveragePooling3D}[rank]


def second(x, inp, width=6):
    """Another producer's output of the same spatial shape as ``x`` (for merges)."""
    rank = len(inp.shape) - 2
    y = conv(rank)(width, 1, name="q")(inp)
    return y if tuple(y.shape) == tuple(x.shape[:-1]) + (width,) else None


def plain(**kwargs):
    return lambda cls: lambda x, inp: cls(**kwargs)(x)


def merge(cls):
    return lambda x, inp: cls()([x, second(x, inp)])


def op(fn, *args):
    return lambda cls: lambda x, inp: fn(x, *args)


def op_merge(fn):
    return lambda cls: lambda x, inp: fn(x, second(x, inp))


SPEC = {
    # name: (how to build the middle from the class, not exact for mean replacement)
    **{n: (plain(), False) for n in ("ReLU", "LeakyReLU", "ELU", "Identity", "Flatten")},
    "ActivityRegularization": (plain(l1=0.01), False),
    **{n: (plain(rate=0.3), False) for n in ("Dropout", "GaussianDropout", "AlphaDropout")},
    **{f"SpatialDropout{r}D": (plain(rate=0.3), False) for r in (1, 2, 3)},
    "GaussianNoise": (plain(stddev=0.1), False),
    "Masking": (plain(mask_value=-99.0), False),
    "Activation": (plain(activation="tanh"), False),
    "Softmax": (plain(axis=1), False),
    "PReLU": (plain(alpha_initializer=keras.initializers.RandomUniform(0.1, 0.5)), False),
    "BatchNormalization": (plain(), False),
    "LayerNormalization": (plain(), False),
    "GroupNormalization": (plain(groups=6), False),
    "Rescaling": (plain(scale=0.5, offset=0.1), False),
    "Concatenate": (lambda cls: lambda x, inp: cls()([x, second(x, inp, 4)]), False),
    "Reshape": (lambda cls: lambda x, inp: cls((int(np.prod(x.shape[1:-1])), 6))(x), False),
    "Dense": (plain(units=5), False),
    "ChannelGate": (plain(), False),
    "Scale": (plain(), False),
    "BlurredUpsampling": (lambda cls: lambda x, inp: cls(2)(L.Conv2D(1, 1)(x)), False),
    **{n: (merge, False) for n in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")},
    **{f"{k}Pooling{r}D": (plain(pool_size=2), False) for k in ("Max", "Average")
       for r in (1, 2, 3)},
    **{f"Global{k}Pooling{r}D": (plain(), False) for k in ("Max", "Average") for r in (1, 2, 3)},
    **{f"UpSampling{r}D": (plain(), False) for r in (1, 2, 3)},
    **{f"ZeroPadding{r}D": (plain(), True) for r in (1, 2, 3)},
    **{f"Cropping{r}D": (plain(), False) for r in (1, 2, 3)},
    **{f"Conv{r}D": (plain(filters=5, kernel_size=3), False) for r in (1, 2, 3)},
    **{f"Conv{r}DTranspose": (plain(filters=5, kernel_size=2, strides=2), False)
       for r in (1, 2, 3)},
    **{f"SeparableConv{r}D": (plain(filters=5, kernel_size=3, depth_multiplier=2), False)
       for r in (1, 2)},
    **{f"DepthwiseConv{r}D": (plain(kernel_size=3, depth_multiplier=2), False) for r in (1, 2)},
    "Permute": (plain(dims=(2, 1, 3)), False),
    "Resizing": (plain(height=4, width=4), False),
}  # fmt: skip
SPATIAL = (1, 2)
OPS = {  # keras.ops operation classes (as they appear in functional graphs): how to call them
    **{n: op_merge(getattr(keras.ops, f)) for n, f in (
        ("Add", "add"), ("Subtract", "subtract"), ("Multiply", "multiply"),
        ("Maximum", "maximum"), ("Minimum", "minimum"))},
    "Concatenate": lambda cls: lambda x, inp: keras.ops.concatenate([x, second(x, inp, 4)], -1),
    **{n: op(getattr(keras.ops, f)) for n, f in (
        ("Relu", "relu"), ("Relu6", "relu6"), ("Silu", "silu"), ("Gelu", "gelu"),
        ("HardSilu", "hard_silu"), ("LeakyRelu", "leaky_relu"), ("Elu", "elu"),
        ("Selu", "selu"), ("Softsign", "softsign"), ("Celu", "celu"),
        ("HardTanh", "hard_tanh"), ("TanhShrink", "tanh_shrink"), ("Tanh", "tanh"),
        ("Negative", "negative"), ("Absolute", "absolute"), ("Square", "square"),
        ("Sigmoid", "sigmoid"), ("HardSigmoid", "hard_sigmoid"), ("Softplus", "softplus"),
        ("LogSigmoid", "log_sigmoid"))},
    "TrueDivide": op(keras.ops.true_divide, 2.0),
    "Divide": op(keras.ops.divide, 2.0),
    # channel operations (split on a spatial axis and joined again: "p" stays one group)
    **{n: op(getattr(keras.ops, n.lower()), SPATIAL, True)
       for n in ("Mean", "Sum", "Max", "Min", "Amax", "Amin")},
    "Split": op(lambda x: keras.ops.concatenate(keras.ops.split(x, 2, axis=1)[::-1], axis=1)),
    "Pad": op(keras.ops.pad, [[0, 0], [1, 1], [1, 1], [0, 0]]),
    "Transpose": op(keras.ops.transpose, (0, 2, 1, 3)),
    "GetItem": op(lambda x: x[:, 1:, ::2, :]),
    "Cast": op(keras.ops.cast, "float16"),
    "Sqrt": op(keras.ops.sqrt),
    "Reshape": op(keras.ops.reshape, (-1, 64, 6)),
    "Resize": op(keras.ops.image.resize, (4, 4)),
    "PadImages": op(keras.ops.image.pad_images, 1, 1, 1, 1),
    "CropImages": op(keras.ops.image.crop_images, 1, 1, 1, 1),
}  # fmt: skip
OPS_INEXACT = {"Pad", "PadImages"}  # zeros at the borders break constant channels
SHAPES = {1: (10, 3), 2: (8, 8, 3), 3: (4, 6, 6, 2)}
# Classes whose call in its builder's model runs on the masked fallback (with a reason);
# every other class must run on the channel subset ("as_is" or "gathered").
MASKED = {"layer:Reshape", "layer:LayerNormalization", "layer:GroupNormalization",
          "layer:BlurredUpsampling", "op:Reshape"}  # fmt: skip


def _key(cls) -> str:
    kind = "op" if cls.__module__.startswith("keras.src.ops") else "layer"
    return f"{kind}:{cls.__name__}"


def _builder(cls):
    if cls.__module__.startswith("keras.src.ops"):
        return OPS.get(cls.__name__), cls.__name__ in OPS_INEXACT
    make, inexact = SPEC.get(cls.__name__, (None, False))
    return make, inexact


def _rank(cls) -> int:
    found = re.search(r"([123])D", cls.__name__)
    return int(found.group(1)) if found else 2


def build(cls) -> tuple[keras.Model, bool]:
    make, inexact = _builder(cls)
    rank = 1 if cls.__name__ == "Masking" else _rank(cls)
    keras.utils.set_random_seed(0)
    inp = keras.Input(SHAPES[rank])
    x = L.ReLU()(L.BatchNormalization()(conv(rank)(6, 1, name="p")(inp)))
    y = make(cls)(x, inp)
    if y is None:
        pytest.fail(f"the builder of {_key(cls)} made no tensor")
    if len(y.shape) > 2:
        r = len(y.shape) - 2
        y = pool(r)()(conv(r)(5, 1, name="c")(y))
    model = keras.Model(inp, L.Dense(4, name="head")(y))
    return zoo.randomize(model, seed=0), inexact


def library_classes() -> list[type]:
    """Every class the library registers: Keras's and its own (tests and docs may register
    more, which they test themselves)."""
    return sorted(
        (c for c in rules.registered() if c.__module__.startswith(("keras.", "tfchannelprune."))),
        key=_key,
    )


CLASSES = library_classes() + [Scale]


def _uses(model, cls) -> bool:
    graph = _keras.flatten_graph(model)
    return any(type(fn.op) is cls for fn in graph.nodes)


def test_every_registered_class_has_a_builder():
    missing = [_key(c) for c in library_classes() if _builder(c)[0] is None]
    assert not missing, f"add a builder to tests/test_rules_contract.py for {missing}"
    assert gaze_layers.BlurredUpsampling in rules.registered()


# ---------------------------------------------------------------------- the contract
def _plan(graph, seed=0):
    return zoo.random_plan(graph, seed=seed, fraction=0.5)


def _check_weight_axes(graph):
    for fn, rule in zip(graph.flat.nodes, graph.rules):
        weights = {v.name: v for v in getattr(fn.op, "weights", [])}
        for a in rule.weight_axes(fn):
            assert a.weight in weights, (fn.path, a)
            width = (fn.input_shapes if a.side == "in" else fn.output_shapes)[0][-1]
            assert a.axis < len(weights[a.weight].shape), (fn.path, a)
            assert weights[a.weight].shape[a.axis] == width * a.repeat, (fn.path, a)


def _constant_channel(model, channel=2):
    """Make ``channel`` of ``p`` (and of ``q``, merged with it) the constant 1.3."""
    for name in ("p", "q"):
        if any(layer.name == name for layer in model.layers):
            layer = model.get_layer(name)
            kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
            kernel[..., channel], bias[channel] = 0.0, 1.3
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)


def _gate_means(gated, x) -> dict[str, np.ndarray]:
    """{gate path: mean of its input over x} (eagerly: quicker than gate_input_means here)."""
    paths = {id(g): p for p, g in gate_layers(gated).items()}
    means = {}

    def hook(gate, a):
        means[paths[id(gate)]] = np.asarray(a).reshape(-1, a.shape[-1]).mean(axis=0)
        return a

    with record_gate_inputs(hook):
        want = np.asarray(gated(x))
    return means, want


def _check_mean_replacement(gated, graph, x, inexact):
    means, want = _gate_means(gated, x)
    masks = {"p": np.arange(6) != 2}
    shift = mean_replacement_shift(graph, masks, means)
    plan = {"p": [0, 1, 3, 4, 5]}
    folded = np.asarray(tcp.compact(gated, plan, graph=graph, bias_shift=shift)(x))
    if inexact:
        dropped = np.asarray(tcp.compact(gated, plan, graph=graph)(x))
        assert np.abs(folded - want).max() < np.abs(dropped - want).max()
    else:
        assert shift, "removing a constant channel shifts some consumer's bias"
        np.testing.assert_allclose(folded, want, atol=1e-4)


def _check_weight_signal(gated, graph):
    scores = tcp.collect_saliency(gated, None, None, signal="l1_weight")
    assert scores and set(scores) <= {g.name for g in graph.prunable_groups}
    for name, s in scores.items():
        assert s.shape == (graph.group(name).size,) and np.all(np.isfinite(s)) and np.all(s >= 0)
    if graph.group("p").prunable:
        assert np.any(scores["p"] > 0)


def _check_compact_and_executor(gated, graph, x):
    """gated == compact under a random plan, and the executor on the active channels of the
    same plan (gates of the kept channels are on) == the compact model."""
    tcp.set_kept_channels(gated, zoo.random_plan(graph, seed=0, fraction=0.5))
    plan = get_kept_channels(gated)  # as the gates hold it (a hand-gated model may lack some)
    want = np.asarray(tcp.compact(gated, graph=graph)(x))
    np.testing.assert_allclose(want, np.asarray(gated(x)), atol=1e-5)
    executor = ChannelExecutor(graph, {g: len(c) for g, c in plan.items()})
    assert not executor.skipped
    active = {g: tf.constant(c, tf.int32) for g, c in plan.items()}
    got, _, _ = executor.run(x, active, training=False)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*does not support masking")  # Masking's mask, dropped
@pytest.mark.parametrize("cls", CLASSES, ids=_key)
def test_rule_contract(cls):
    model, inexact = build(cls)
    assert _uses(model, cls), f"the builder of {_key(cls)} does not call it"
    plain_graph = tcp.ChannelGraph(model)
    _check_weight_axes(plain_graph)
    modes = {r.subset(fn) for fn, r in zip(plain_graph.flat.nodes, plain_graph.rules)
             if type(fn.op) is cls}  # fmt: skip
    masked = {m.reason for m in modes if m.mode == "masked"}
    assert bool(masked) == (_key(cls) in MASKED), (_key(cls), masked)
    _constant_channel(model)
    gated = model if is_wrapped(model) else tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    x = zoo.sample_input(model, batch=4)
    p = graph.group("p")
    if not p.prunable:  # a barrier (or a cross-channel norm) must say why
        assert p.reason, _key(cls)
    else:
        _check_mean_replacement(gated, graph, x, inexact)
    if graph.prunable_groups:
        _check_weight_signal(gated, graph)
        _check_compact_and_executor(gated, graph, x)


@pytest.mark.parametrize(
    "cls", [L.DepthwiseConv2D, L.SeparableConv2D, L.PReLU, L.Conv2DTranspose, Scale], ids=_key
)
def test_runs_on_the_channel_subset(cls):
    model, _ = build(cls)
    graph = tcp.ChannelGraph(model)
    executor = ChannelExecutor(graph, {"p": 3})
    kinds = {fn.path: k for fn, k in zip(graph.flat.nodes, executor.kinds)}
    target = next(fn.path for fn in graph.flat.nodes if type(fn.op) is cls)
    assert kinds[target] == "gathered"
    assert "masked" not in kinds.values()


def test_register_rule_checks_its_arguments():
    with pytest.raises(TypeError, match="layer class itself"):
        tcp.register_rule(Scale(), ScaleRule())
    with pytest.raises(TypeError, match="not the class Rule"):
        tcp.register_rule(Scale, ScaleRule)
    with pytest.raises(TypeError, match="Rule instance"):
        tcp.register_rule(Scale, object())
    assert type(rules.get(Scale())) is ScaleRule
    assert not rules.get(keras.layers.Lambda(lambda t: t)).known


def test_bn_scale_reads_the_declared_channel_scale():
    inp = keras.Input((6, 6, 3))
    x = Scale(name="s")(L.Conv2D(5, 3, padding="same", name="p")(inp))
    model = keras.Model(inp, L.Conv2D(2, 1, name="c")(x))
    values = np.array([0.5, -2.0, 0.1, 3.0, -0.7], np.float32)
    model.get_layer("s").scale.assign(values)
    scores = tcp.collect_saliency(model, None, None, signal="bn_scale")
    np.testing.assert_allclose(scores["p"], np.abs(values), rtol=1e-6)


def test_declarations_check_their_values():
    with pytest.raises(ValueError, match="side"):
        WeightAxis("kernel", 0, "inner")
    with pytest.raises(ValueError, match="repeat"):
        WeightAxis("kernel", 0, "in", repeat=0)
    with pytest.raises(ValueError, match="reason"):
        rules.SubsetExecution("masked")
    with pytest.raises(ValueError, match="mode"):
        rules.SubsetExecution("partial")
    assert rules.masked("why").reason == "why"
