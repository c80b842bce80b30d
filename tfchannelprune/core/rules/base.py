"""The base rule (a barrier), the pass-through rule and shared helpers."""

from __future__ import annotations

import math

import keras

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
    """The registered name of a layer's activation; a custom function gets a name that no
    rule knows (``keras.activations.serialize`` returns a dict for it, or raises)."""
    act = getattr(layer, "activation", None)
    if act is None or isinstance(act, str):
        return act
    try:
        name = keras.activations.serialize(act)
    except Exception:  # noqa: BLE001 - e.g. a lambda whose source cannot be read
        name = None
    if isinstance(name, str):
        return name
    return f"custom function {getattr(act, '__name__', type(act).__name__)}"


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
