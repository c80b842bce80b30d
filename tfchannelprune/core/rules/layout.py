"""Rules that combine or rearrange channel layouts: merges, Concatenate, Flatten/Reshape."""

from __future__ import annotations

import keras
import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.rules.base import (
    AS_IS,
    Rule,
    _last_axis,
    masked,
    prod,
)


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

    def carries_constants(self, fn) -> bool:
        return self._zero

    def subset(self, fn):
        return AS_IS


class ConcatRule(Rule):
    mixes = False

    def zero_preserving(self, fn) -> bool:
        return True

    def propagate(self, ctx, fn) -> None:
        rank = len(fn.input_shapes[0])
        axis = getattr(fn.op, "axis", None)
        if axis is None:
            axis = _keras.node_kwargs(fn.node).get("axis", 0)
        layouts = [ctx.layout(t) for t in fn.inputs]
        if _last_axis(axis, rank):
            layout = ctx.concat(layouts)
        else:
            layout = ctx.unify(layouts, fn)
        for t in fn.outputs:
            ctx.set(t, layout)

    def carries_constants(self, fn) -> bool:
        return True

    def subset(self, fn):
        return AS_IS


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

    def carries_constants(self, fn) -> bool:
        return True

    def flattens(self, fn) -> bool:
        return len(fn.output_shapes[0]) == 2

    def subset(self, fn):
        if isinstance(fn.op, keras.layers.Reshape):
            return masked("Reshape's target shape holds the full channel count")
        return AS_IS

    def cut(self, layer, fn, in_keep, out_keep):
        if not isinstance(layer, keras.layers.Reshape):
            return None
        config = layer.get_config()
        target = list(config["target_shape"])
        target[-1] = len(out_keep)
        config["target_shape"] = tuple(target)
        return config, None
