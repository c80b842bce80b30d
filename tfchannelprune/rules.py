"""Per-layer rules: how each layer type produces, passes or consumes channels, and how it is cut.

A rule answers, for one call of one layer (a ``FlatNode``):

* ``propagate(ctx, fn)``: the channel layout of the outputs from the layouts of the inputs
  (new group, same layout, unified, concatenated, tiled ...), and which groups it blocks;
* ``mixes``: whether each output reads several input channels, so a switched-off input channel
  must be exactly zero when it gets there (a gate goes in front);
* ``zero_preserving(fn)``: whether an all-zero input channel gives an all-zero output channel;
* ``cut(layer, fn, in_keep, out_keep)``: the config and weights of the smaller layer;
* ``macs(fn, in_w, out_w)``: multiply-accumulates at the given channel widths.

The channel axis is the last axis (channels_last). Anything else is a barrier.
Layers are matched by exact class: a subclass may override ``call`` and is a barrier.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tfchannelprune import _keras

BARRIER_NOTE = "not known to tfchannelprune"
ZERO_PRESERVING_ACTIVATIONS = {
    "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "tanh", "linear",
    "hard_silu", "hard_swish", "mish", "softsign", "celu", "glu", "hard_tanh", "tanh_shrink",
    "soft_shrink", "hard_shrink", "sparse_plus", "squareplus", None,
}  # fmt: skip
CHANNELWISE_ACTIVATIONS = ZERO_PRESERVING_ACTIVATIONS | {
    "sigmoid", "hard_sigmoid", "softplus", "exponential", "log_sigmoid", "sparse_sigmoid",
}  # fmt: skip


def prod(values) -> int:
    return int(math.prod(int(v) for v in values))


def _activation_name(layer) -> str | None:
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    return keras.activations.serialize(act) if callable(act) else act


class Rule:
    """Default: a barrier. Inputs' groups become unprunable; outputs get unprunable groups."""

    mixes = True

    def check(self, fn) -> str | None:
        """Why this call cannot be handled by the rule (then it is a barrier), or None."""
        return None

    def zero_preserving(self, fn) -> bool:
        return False

    def propagate(self, ctx, fn) -> None:
        reason = f"{type(fn.op).__name__} {fn.path!r} is {BARRIER_NOTE}"
        barrier(ctx, fn, reason)

    def cut(self, layer, fn, in_keep, out_keep):
        return None  # nothing to change

    def macs(self, fn, in_w: int, out_w: int) -> int:
        return 0


def barrier(ctx, fn, reason: str) -> None:
    for t in fn.inputs:
        ctx.block(ctx.layout(t), reason)
    for i, t in enumerate(fn.outputs):
        ctx.set(t, ctx.new_group(fn, i, blocked=reason))


def _last_axis(axis, rank: int) -> bool:
    if isinstance(axis, (list, tuple)):
        return len(axis) == 1 and _last_axis(axis[0], rank)
    return axis in (-1, rank - 1)


class Passthrough(Rule):
    """Channel c out depends only on channel c in (activations, pooling, dropout, padding...)."""

    mixes = False

    def __init__(self, zero_preserving: bool = True):
        self._zero = zero_preserving

    def check(self, fn):
        if getattr(fn.op, "data_format", "channels_last") == "channels_first":
            return "channels_first data format"
        if len(fn.inputs) < 1:
            return "no tensor input"
        return None

    def zero_preserving(self, fn) -> bool:
        return self._zero

    def propagate(self, ctx, fn) -> None:
        layout = ctx.layout(fn.inputs[0])
        for t in fn.outputs:
            ctx.set(t, layout)


class ActivationRule(Passthrough):
    def check(self, fn):
        name = _activation_name(fn.op)
        if name in ("softmax", "log_softmax"):
            return f"{name} normalises across channels"
        if name not in CHANNELWISE_ACTIVATIONS:
            return f"activation {name!r} is {BARRIER_NOTE}"
        return None

    def zero_preserving(self, fn) -> bool:
        return _activation_name(fn.op) in ZERO_PRESERVING_ACTIVATIONS


class SoftmaxRule(Passthrough):
    def check(self, fn):
        rank = len(fn.input_shapes[0])
        if _last_axis(getattr(fn.op, "axis", -1), rank):
            return "softmax normalises across channels"
        return None


class OpRule(Passthrough):
    """A keras.ops elementwise op applied to one tensor (and maybe scalar constants)."""

    def check(self, fn):
        if len(fn.inputs) != 1:
            return "elementwise op on several tensors"
        for c in _keras.node_constant_args(fn.node):
            if np.ndim(c) > 0 and np.size(c) > 1:
                return "elementwise op with a non-scalar constant"
        return None


class MergeRule(Rule):
    """Add, Subtract, Multiply, Average, Maximum, Minimum (layers and keras.ops): the inputs'
    channels are coupled position by position; a 1-channel input only broadcasts."""

    mixes = False

    def __init__(self, zero_preserving: bool = True):
        self._zero = zero_preserving

    def zero_preserving(self, fn) -> bool:
        return self._zero

    def check(self, fn):
        if len(fn.inputs) == 1:
            return None if self._scalar_constants(fn) else "non-scalar constant operand"
        widths = {s[-1] for s in fn.input_shapes if len(s) and s[-1] != 1}
        if len(widths) > 1:
            return f"inputs of different channel counts {sorted(widths)}"
        return None

    @staticmethod
    def _scalar_constants(fn) -> bool:
        return all(np.size(c) <= 1 for c in _keras.node_constant_args(fn.node))

    def propagate(self, ctx, fn) -> None:
        full = [
            t for t, s in zip(fn.inputs, fn.input_shapes) if not (len(s) and s[-1] == 1)
        ] or fn.inputs[:1]
        layout = ctx.unify([ctx.layout(t) for t in full], fn)
        for t in fn.outputs:
            ctx.set(t, layout)


class ConcatRule(Rule):
    mixes = False

    def zero_preserving(self, fn) -> bool:
        return True

    def propagate(self, ctx, fn) -> None:
        rank = len(fn.input_shapes[0])
        axis = getattr(fn.op, "axis", None)
        if axis is None:
            axis = fn.node.arguments.kwargs.get("axis", 0)
        layouts = [ctx.layout(t) for t in fn.inputs]
        if _last_axis(axis, rank):
            layout = ctx.concat(layouts)
        else:
            layout = ctx.unify(layouts, fn)
        for t in fn.outputs:
            ctx.set(t, layout)


class FlattenRule(Rule):
    """Flatten / Reshape: keeps the channel axis or flattens (h, w, c) into one axis, where a
    channel sits at every position p*C + c (channels_last order)."""

    mixes = True  # the gate goes in front, so the channel layout stays simple

    def zero_preserving(self, fn) -> bool:
        return True

    def _mode(self, fn) -> str | None:
        in_shape, out_shape = fn.input_shapes[0], fn.output_shapes[0]
        if getattr(fn.op, "data_format", "channels_last") == "channels_first":
            return None
        if len(in_shape) < 2 or in_shape[-1] is None:
            return None
        if len(out_shape) == len(in_shape) and tuple(out_shape) == tuple(in_shape):
            return "same"
        if len(out_shape) == 2 and None not in in_shape[1:]:
            return "flatten"
        if out_shape[-1] == in_shape[-1] and len(out_shape) >= 2:
            return "keep_last"
        return None

    def check(self, fn):
        return None if self._mode(fn) else "reshape that moves channels off the last axis"

    def propagate(self, ctx, fn) -> None:
        layout = ctx.layout(fn.inputs[0])
        if self._mode(fn) == "flatten":
            layout = ctx.tile(layout, prod(fn.input_shapes[0][1:-1]))
        ctx.set(fn.outputs[0], layout)

    def cut(self, layer, fn, in_keep, out_keep):
        if not isinstance(layer, keras.layers.Reshape):
            return None
        config = layer.get_config()
        target = list(config["target_shape"])
        target[-1] = len(out_keep)
        config["target_shape"] = tuple(target)
        return config, None


class ProducerRule(Rule):
    """Conv1D/2D/3D, Conv transpose, Dense, SeparableConv: output channels are a new group;
    input channels are read jointly (sliced from the kernel's input axis)."""

    mixes = True
    width_key = "filters"

    def check(self, fn):
        layer = fn.op
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            return "channels_first data format"
        if len(fn.inputs) != 1:
            return "called on several tensors"
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return "LoRA or quantized weights"
        groups = getattr(layer, "groups", 1)
        if groups != 1 and not self.is_channelwise(fn):
            return f"grouped convolution (groups={groups}) couples channels within each group"
        return None

    def is_channelwise(self, fn) -> bool:
        c_in = fn.input_shapes[0][-1]
        return getattr(fn.op, "groups", 1) == c_in == getattr(fn.op, self.width_key, None)

    def propagate(self, ctx, fn) -> None:
        if self.is_channelwise(fn):  # grouped conv with one channel per group
            layout = ctx.layout(fn.inputs[0])
            ctx.member(fn, "channelwise", layout)
            ctx.set(fn.outputs[0], layout)
            return
        ctx.member(fn, "consumer", ctx.layout(fn.inputs[0]))
        out = ctx.new_group(fn, 0)
        ctx.member(fn, "producer", out)
        ctx.set(fn.outputs[0], out)

    def in_axis(self, kernel) -> int:
        return kernel.ndim - 2

    def out_axis(self, kernel) -> int:
        return kernel.ndim - 1

    def cut(self, layer, fn, in_keep, out_keep):
        weights = _keras.weights_by_name(layer)
        config = layer.get_config()
        config[self.width_key] = len(out_keep)
        kernel = weights["kernel"]
        if self.is_channelwise(fn):
            config["groups"] = len(out_keep)
            weights["kernel"] = np.take(kernel, out_keep, axis=self.out_axis(kernel))
        else:
            kernel = np.take(kernel, in_keep, axis=self.in_axis(kernel))
            weights["kernel"] = np.take(kernel, out_keep, axis=self.out_axis(kernel))
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep]
        return config, weights

    def macs(self, fn, in_w, out_w) -> int:
        kernel = prod(getattr(fn.op, "kernel_size", ()))
        groups = in_w if self.is_channelwise(fn) else getattr(fn.op, "groups", 1)
        return prod(fn.output_shapes[0][1:-1]) * kernel * (in_w // max(groups, 1)) * out_w


class DenseRule(ProducerRule):
    width_key = "units"

    def macs(self, fn, in_w, out_w) -> int:
        return prod(fn.output_shapes[0][1:-1]) * in_w * out_w


class TransposeRule(ProducerRule):
    """Conv{1,2,3}DTranspose: the kernel is (*k, out, in)."""

    def in_axis(self, kernel) -> int:
        return kernel.ndim - 1

    def out_axis(self, kernel) -> int:
        return kernel.ndim - 2

    def macs(self, fn, in_w, out_w) -> int:
        kernel = prod(fn.op.kernel_size)
        return prod(fn.input_shapes[0][1:-1]) * kernel * in_w * out_w


class SeparableRule(ProducerRule):
    def cut(self, layer, fn, in_keep, out_keep):
        weights = _keras.weights_by_name(layer)
        config = layer.get_config()
        config["filters"] = len(out_keep)
        dm = layer.depth_multiplier
        weights["depthwise_kernel"] = weights["depthwise_kernel"][..., in_keep, :]
        rows = (np.asarray(in_keep)[:, None] * dm + np.arange(dm)[None, :]).reshape(-1)
        pointwise = weights["pointwise_kernel"][..., rows, :]
        weights["pointwise_kernel"] = pointwise[..., out_keep]
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep]
        return config, weights

    def macs(self, fn, in_w, out_w) -> int:
        spatial = prod(fn.output_shapes[0][1:-1])
        dm = fn.op.depth_multiplier
        return spatial * prod(fn.op.kernel_size) * in_w * dm + spatial * in_w * dm * out_w


class DepthwiseRule(ProducerRule):
    """DepthwiseConv1D/2D: output channel c*dm + m comes from input channel c."""

    mixes = False

    def check(self, fn):
        if getattr(fn.op, "data_format", "channels_last") == "channels_first":
            return "channels_first data format"
        return None if len(fn.inputs) == 1 else "called on several tensors"

    def propagate(self, ctx, fn) -> None:
        layout = ctx.layout(fn.inputs[0])
        ctx.member(fn, "channelwise", layout)
        ctx.set(fn.outputs[0], ctx.repeat(layout, fn.op.depth_multiplier))

    def cut(self, layer, fn, in_keep, out_keep):
        weights = _keras.weights_by_name(layer)
        weights["kernel"] = weights["kernel"][..., in_keep, :]
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep]
        return layer.get_config(), weights

    def macs(self, fn, in_w, out_w) -> int:
        return prod(fn.output_shapes[0][1:-1]) * prod(fn.op.kernel_size) * out_w


class ChannelwiseParamRule(Passthrough):
    """Per-channel parameters along the last axis (BatchNormalization, PReLU ...)."""

    def __init__(self, zero_preserving: bool = False):
        super().__init__(zero_preserving)

    def check(self, fn):
        axis = getattr(fn.op, "axis", -1)
        if not _last_axis(axis, len(fn.input_shapes[0])):
            return f"normalises over axis {axis}, not the channel axis"
        return super().check(fn)

    def propagate(self, ctx, fn) -> None:
        layout = ctx.layout(fn.inputs[0])
        ctx.member(fn, "channelwise", layout)
        ctx.set(fn.outputs[0], layout)

    def cut(self, layer, fn, in_keep, out_keep):
        width = fn.input_shapes[0][-1]
        weights = {
            k: (v[..., in_keep] if v.ndim and v.shape[-1] == width else v)
            for k, v in _keras.weights_by_name(layer).items()
        }
        return layer.get_config(), weights


class PReLURule(ChannelwiseParamRule):
    def __init__(self):
        super().__init__(zero_preserving=True)

    def check(self, fn):
        return Passthrough.check(self, fn)


class CrossChannelNormRule(ChannelwiseParamRule):
    """LayerNormalization / GroupNormalization / UnitNormalization over the channel axis: the
    statistics mix channels, so removing one changes the others. The input channels are
    unprunable; the output keeps their layout (per-channel gamma/beta follow it)."""

    def check(self, fn):
        if isinstance(fn.op, keras.layers.GroupNormalization):
            return None if fn.op.axis in (-1, len(fn.input_shapes[0]) - 1) else "axis"
        return super().check(fn)

    def _per_channel(self, fn) -> bool:
        groups = getattr(fn.op, "groups", None)
        return groups is not None and groups == fn.input_shapes[0][-1]

    def propagate(self, ctx, fn) -> None:
        layout = ctx.layout(fn.inputs[0])
        if not self._per_channel(fn):
            name = type(fn.op).__name__
            ctx.block(layout, f"{name} {fn.path!r} normalises across channels")
        ctx.member(fn, "channelwise", layout)
        ctx.set(fn.outputs[0], layout)

    def cut(self, layer, fn, in_keep, out_keep):
        config, weights = super().cut(layer, fn, in_keep, out_keep)
        if self._per_channel(fn):
            config["groups"] = len(in_keep)
        return config, weights


class RescalingRule(Passthrough):
    """Rescaling: scale and offset may be per-channel vectors in the config."""

    def zero_preserving(self, fn) -> bool:
        return np.all(np.asarray(fn.op.offset) == 0)

    def cut(self, layer, fn, in_keep, out_keep):
        config = layer.get_config()
        width = fn.input_shapes[0][-1]
        for key in ("scale", "offset"):
            value = np.asarray(config[key])
            if value.ndim and value.shape[-1] == width and width > 1:
                config[key] = value[..., in_keep].tolist()
        return config, None


class ChannelGateRule(Passthrough):
    """Our own gate: a pass-through that records which tensor it gates."""

    def zero_preserving(self, fn) -> bool:
        return True

    def propagate(self, ctx, fn) -> None:
        super().propagate(ctx, fn)
        ctx.gate(fn, ctx.layout(fn.inputs[0]))


def _build_registry() -> dict[type, Rule]:
    L = keras.layers
    ops_nn = keras.src.ops.nn
    ops_np = keras.src.ops.numpy
    registry: dict[type, Rule] = {}

    def add(rule: Rule, *classes) -> None:
        for cls in classes:
            if cls is not None:
                registry[cls] = rule

    passthrough_zero = [
        "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout", "Identity",
        "ActivityRegularization", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D", "UpSampling1D", "UpSampling2D",
        "UpSampling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
        "Cropping2D", "Cropping3D", "Masking",
    ]  # fmt: skip
    add(Passthrough(True), *(getattr(L, n, None) for n in passthrough_zero))
    add(ActivationRule(), L.Activation)
    add(SoftmaxRule(), L.Softmax)
    add(PReLURule(), L.PReLU)
    add(ChannelwiseParamRule(), L.BatchNormalization)
    add(CrossChannelNormRule(), L.LayerNormalization, L.GroupNormalization)
    add(RescalingRule(), L.Rescaling)
    add(MergeRule(True), L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
    add(ConcatRule(), L.Concatenate)
    add(FlattenRule(), L.Flatten, L.Reshape)
    add(ProducerRule(), L.Conv1D, L.Conv2D, L.Conv3D)
    add(TransposeRule(), L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
    add(SeparableRule(), L.SeparableConv1D, L.SeparableConv2D)
    add(DepthwiseRule(), L.DepthwiseConv1D, L.DepthwiseConv2D)
    add(DenseRule(), L.Dense)
    # keras.ops operations as they appear in functional graphs (a + b, ops.relu(x) ...).
    add(MergeRule(True), ops_np.Add, ops_np.Subtract, ops_np.Multiply, ops_np.Maximum,
        ops_np.Minimum)  # fmt: skip
    add(ConcatRule(), ops_np.Concatenate)
    zero_ops = ["Relu", "Relu6", "Silu", "Gelu", "HardSilu", "LeakyRelu", "Elu", "Selu",
                "Softsign", "Celu", "HardTanh", "TanhShrink"]  # fmt: skip
    add(OpRule(True), *(getattr(ops_nn, n, None) for n in zero_ops))
    add(OpRule(True), ops_np.Tanh, ops_np.Negative, ops_np.Absolute, ops_np.Square)
    add(OpRule(False), ops_nn.Sigmoid, ops_nn.HardSigmoid, ops_nn.Softplus, ops_nn.LogSigmoid)
    add(OpRule(True), ops_np.TrueDivide, getattr(ops_np, "Divide", None))
    return registry


_REGISTRY: dict[type, Rule] | None = None
_DEFAULT = Rule()


def register_rule(cls: type, rule: Rule) -> None:
    """Teach the graph a layer class (for custom layers whose channel behaviour you know)."""
    _registry()[cls] = rule


def _registry() -> dict[type, Rule]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _build_registry()
        from tfchannelprune.gates import ChannelGate

        _REGISTRY[ChannelGate] = ChannelGateRule()
    return _REGISTRY


def get(op) -> Rule:
    """The rule for a layer or operation (exact class match; unknown classes are barriers)."""
    return _registry().get(type(op), _DEFAULT)
