"""The rule for a custom layer that owns weights and whose traced ``call`` is element-wise.

Such a layer (a learnable scalar affine ``scale * x + bias``, say) cannot be inlined: its
weights belong to no sub-layer the rebuilt model could hold. It is kept whole, and its traced
graph only tells the channel graph that it maps channel c to channel c.
"""

from __future__ import annotations

import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.rules.base import Passthrough
from tfchannelprune.core.rules.channelwise import ChannelwiseParamRule
from tfchannelprune.core.rules.layout import MergeRule


class TracedElementwiseRule(Passthrough):
    """Channel c out depends only on channel c in, as read from the layer's traced graph."""

    def __init__(self, reason: str | None = None):
        super().__init__(zero_preserving=False)
        self._reason = reason

    def check(self, fn):
        return self._reason or super().check(fn)


def _why_not_elementwise(node, rule) -> str | None:
    name = type(node.operation).__name__
    if not isinstance(rule, (MergeRule, Passthrough)) or isinstance(rule, ChannelwiseParamRule):
        return f"its call() uses {name}, which is not element-wise"
    if len(node.input_tensors) != 1:
        return f"its call() combines several tensors in {name}"
    if any(np.size(c) > 1 for c in _keras.node_constant_args(node)):
        return f"its call() uses a non-scalar constant or weight in {name}"
    if tuple(node.input_tensors[0].shape) != tuple(node.outputs[0].shape):
        return f"its call() changes the shape in {name}"
    return None


def traced_elementwise(traced, get) -> TracedElementwiseRule:
    """The rule for a leaf custom layer from its traced graph; ``get`` is the rule registry.
    ``traced`` is None when the layer's TensorFlow graph was found element-wise instead."""
    if traced is None:
        return TracedElementwiseRule()
    for node in _keras.nodes_in_order(traced):
        why = _why_not_elementwise(node, get(node.operation))
        if why is not None:
            return TracedElementwiseRule(f"owns weights and {why}")
    return TracedElementwiseRule()
