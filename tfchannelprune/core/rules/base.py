"""The base rule (a barrier), its declarations, the pass-through rule and shared helpers.

Besides how a layer type is coupled, cut and costed, its rule DECLARES everything the features
need to know about it, so that no feature branches on a rule or layer class:

* ``weight_axes(fn)``: which axes of which weights hold one channel each (``WeightAxis``):
  frozen slices of the dynamic executor, subset execution and non-learning checks read them;
* ``kernel_axis(fn, side)``: the kernel that weight-based signals (L1, L2, FPGM ...) score
  for the output (``"out"``, producer) or input (``"in"``, consumer) channels;
* ``channel_scale(fn)``: the per-channel scale weight that ``bn_scale`` reads (BN's gamma);
* ``fold_constant(layer, fn, u)``: how a constant input channel folds into the bias (mean
  replacement), None when the layer is not a consumer with a bias;
* ``carries_constants(fn)``: whether constant input channels stay constants through it;
* ``flattens(fn)``: whether the output's channel axis holds every input position (Flatten);
* ``subset(fn)`` / ``call_subset(...)``: how the dynamic executor runs the call on a subset of
  its channels (``SubsetExecution``: ``"as_is"``, ``"gathered"`` or ``"masked"`` with a reason);
* ``known`` (False only for unknown layer types) and ``is_gate`` (our ``ChannelGate``).

Every declaration has a safe default: no weight axes, nothing folded, no constants carried,
and the masked fallback for subset execution.
"""

from __future__ import annotations

import dataclasses
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
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    return keras.activations.serialize(act) if callable(act) else act


@dataclasses.dataclass(frozen=True)
class WeightAxis:
    """One axis of one weight along which each index belongs to one channel.

    Args:
        weight: the weight's name (``variable.name``: ``"kernel"``, ``"bias"``, ``"gamma"``...).
        axis: the axis (non-negative).
        side: ``"in"`` (indexed like the first input's channel positions) or ``"out"`` (like
            the first output's).
        repeat: each position spans ``repeat`` consecutive indices along the axis (the
            pointwise rows of a SeparableConv with ``depth_multiplier`` m: position c owns
            rows c*m ... c*m + m - 1).
    """

    weight: str
    axis: int
    side: str
    repeat: int = 1

    def __post_init__(self):
        if self.side not in ("in", "out"):
            raise ValueError(f'side must be "in" or "out". Received: side={self.side!r}')
        if self.axis < 0 or self.repeat < 1:
            raise ValueError(
                f"axis must be >= 0 and repeat >= 1. Received: axis={self.axis}, "
                f"repeat={self.repeat}"
            )


@dataclasses.dataclass(frozen=True)
class SubsetExecution:
    """How the dynamic executor runs a call when only some channels are active.

    ``mode`` is one of:

    * ``"as_is"``: the layer runs unchanged on tensors that hold only the active channels
      (element-wise layers without per-channel weights, merges, channel concatenation);
    * ``"gathered"``: the executor gathers every weight along its ``weight_axes`` on the active
      positions and calls the rule's ``call_subset`` with them;
    * ``"masked"``: it cannot; the input is scattered back to full width with zeros, the layer
      runs in full and the inactive outputs are dropped. ``reason`` says why.
    """

    mode: str
    reason: str = ""

    def __post_init__(self):
        if self.mode not in ("as_is", "gathered", "masked"):
            raise ValueError(
                'mode must be "as_is", "gathered" or "masked". Received: mode=' + repr(self.mode)
            )
        if self.mode == "masked" and not self.reason:
            raise ValueError("A masked subset execution needs a reason. Received: reason=''")


AS_IS = SubsetExecution("as_is")
GATHERED = SubsetExecution("gathered")


def masked(reason: str) -> SubsetExecution:
    return SubsetExecution("masked", reason)


class Rule:
    """Default: a barrier. Inputs' groups become unprunable; outputs get unprunable groups.

    Subclass it (or ``Passthrough``, ``ProducerRule`` ...) to teach a layer type, override what
    differs, and ``register_rule`` it. The declarations below keep their safe defaults unless
    overridden.
    """

    mixes = True
    known = True  # False only for the rule of layer types nobody taught (UnknownLayerRule)
    is_gate = False  # True only for our ChannelGate

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

    # ------------------------------------------------------------------ declarations
    def weight_axes(self, fn) -> tuple[WeightAxis, ...]:
        """Every channel axis of the layer's weights (none by default)."""
        return ()

    def kernel_axis(self, fn, side: str) -> WeightAxis | None:
        """The kernel that weight-based signals score for the ``side`` channels: ``"out"``
        for the channels the layer produces, ``"in"`` for those it consumes (None: none)."""
        return None

    def channel_scale(self, fn) -> str | None:
        """The name of a per-channel scale weight (BatchNorm's gamma), or None."""
        return None

    def fold_constant(self, layer, fn, u):
        """The change of the layer's bias (over its output channels) when its first input
        holds the constant vector ``u`` (over the input channel positions) instead of the
        removed channels; None when the layer does not read channels into a bias."""
        return None

    def carries_constants(self, fn) -> bool:
        """Whether constant input channels give constant output channels that depend on
        those constants only, so mean replacement can push them through."""
        return False

    def flattens(self, fn) -> bool:
        """Whether the output's channel axis holds every spatial position of the input's
        channels (position p*C + c), as Flatten does."""
        return False

    def subset(self, fn) -> SubsetExecution:
        """How the dynamic executor runs this call on a subset of its channels."""
        return masked(f"{type(self).__name__} declares no subset execution")

    def call_subset(self, layer, fn, x, weights, training: bool):
        """The call on the active channels (``subset(fn).mode == "gathered"``).

        Args:
            layer: the layer (``fn.op``).
            fn: its call.
            x: the first input with only the active channel positions.
            weights: {weight name: value gathered on the active positions of its
                ``weight_axes``} (weights without channel axes come whole).
            training: training mode.

        Returns:
            (output on the active output positions, {weight name: new value} for weights the
            call updates, such as moving statistics; gathered like ``weights``).
        """
        raise NotImplementedError(
            f"{type(self).__name__} declares gathered subset execution but does not "
            "implement call_subset(layer, fn, x, weights, training)."
        )


class UnknownLayerRule(Rule):
    """The rule of every layer type nobody taught: a barrier."""

    known = False

    def subset(self, fn) -> SubsetExecution:
        return masked(f"{type(fn.op).__name__} is {BARRIER_NOTE}")


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

    def carries_constants(self, fn) -> bool:
        return self.zero_preserving(fn)

    def subset(self, fn) -> SubsetExecution:
        if getattr(fn.op, "weights", None):
            return masked(f"{type(fn.op).__name__} has weights without declared channel axes")
        return AS_IS
