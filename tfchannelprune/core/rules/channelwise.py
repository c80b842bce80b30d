"""Rules for layers that act on each channel on its own: activations, element-wise ops,
BatchNorm/PReLU parameters, cross-channel norms, Rescaling, and our ChannelGate."""

from __future__ import annotations

import keras
import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.rules.base import (
    AS_IS,
    BARRIER_NOTE,
    CHANNELWISE_ACTIVATIONS,
    GATHERED,
    ZERO_PRESERVING_ACTIVATIONS,
    Passthrough,
    WeightAxis,
    _activation_name,
    _last_axis,
    masked,
)


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

    def weight_axes(self, fn):
        width = fn.input_shapes[0][-1]
        return tuple(
            WeightAxis(v.name, len(v.shape) - 1, "in")
            for v in fn.op.weights
            if len(v.shape) and v.shape[-1] == width
        )

    def subset(self, fn):
        return masked(f"{type(fn.op).__name__}: per-channel parameters without a subset call")


class BatchNormRule(ChannelwiseParamRule):
    """BatchNormalization: gamma, beta and moving statistics per channel. On a channel subset
    it normalises the active channels and updates only their moving statistics."""

    def channel_scale(self, fn):
        return "gamma" if fn.op.scale else None

    def subset(self, fn):
        return masked("batch renormalization") if fn.op.renorm else GATHERED

    def call_subset(self, layer, fn, x, weights, training):
        x = keras.ops.cast(x, keras.backend.result_type(x.dtype, "float32"))
        w = {k: keras.ops.cast(v, x.dtype) for k, v in weights.items()}
        updates = {}
        if training and layer.trainable:
            axes = list(range(len(x.shape) - 1))
            mean, variance = keras.ops.moments(x, axes=axes, synchronized=layer.synchronized)
            for name, stat in (("moving_mean", mean), ("moving_variance", variance)):
                updates[name] = w[name] * layer.momentum + stat * (1.0 - layer.momentum)
        else:
            mean, variance = w["moving_mean"], w["moving_variance"]
        y = keras.ops.batch_normalization(
            x, mean, variance, axis=-1, offset=w.get("beta"), scale=w.get("gamma"),
            epsilon=layer.epsilon,
        )  # fmt: skip
        return keras.ops.cast(y, layer.compute_dtype), updates


class PReLURule(ChannelwiseParamRule):
    def __init__(self):
        super().__init__(zero_preserving=True)

    def check(self, fn):
        return Passthrough.check(self, fn)

    def subset(self, fn):
        return GATHERED

    def call_subset(self, layer, fn, x, weights, training):
        alpha = keras.ops.cast(weights["alpha"], x.dtype)
        return keras.ops.relu(x) - alpha * keras.ops.relu(-x), {}


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

    def subset(self, fn):
        return masked(f"{type(fn.op).__name__} statistics span several channels")


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

    def subset(self, fn):
        width = fn.input_shapes[0][-1]
        for key in ("scale", "offset"):
            value = np.asarray(getattr(fn.op, key))
            if value.ndim and value.shape[-1] == width and width > 1:
                return masked(f"per-channel {key} in the config of {fn.op.name!r}")
        return AS_IS


class ChannelGateRule(Passthrough):
    """Our own gate: a pass-through that records which tensor it gates."""

    is_gate = True

    def zero_preserving(self, fn) -> bool:
        return True

    def weight_axes(self, fn):
        return (WeightAxis("gate", 0, "in"),)

    def subset(self, fn):
        return GATHERED

    def call_subset(self, layer, fn, x, weights, training):
        return x * keras.ops.cast(weights["gate"], x.dtype), {}

    def propagate(self, ctx, fn) -> None:
        super().propagate(ctx, fn)
        ctx.gate(fn, ctx.layout(fn.inputs[0]))
