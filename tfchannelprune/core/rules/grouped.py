"""Convolutions with 1 < groups < channels: every group must keep the same width.

Conv group g reads input positions [g*k, (g+1)*k) (k = C_in / groups) through kernel rows
0..k-1, and writes output positions [g*m, (g+1)*m) (m = filters / groups). Position j of every
input group is coupled (one channel-graph group), and so is output j of every conv group: a
pruned channel leaves each conv group at once, so the result is again a valid grouped
convolution. The producer feeding it has its channels split per conv group (``split_at``).
Depthwise-like convolutions (groups == C_in == filters) stay channel-wise (``ProducerRule``).
"""

from __future__ import annotations

import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.rules.base import masked
from tfchannelprune.core.rules.producers import ProducerRule


class ConvRule(ProducerRule):
    """Conv1D/2D/3D: plain, channel-wise (one channel per group) or grouped."""

    def is_grouped(self, fn) -> bool:
        return getattr(fn.op, "groups", 1) > 1 and not self.is_channelwise(fn)

    def check(self, fn):
        why = super().check(fn)
        if why is not None and why.startswith("grouped convolution"):
            return None
        return why

    def propagate(self, ctx, fn) -> None:
        if not self.is_grouped(fn):
            return super().propagate(ctx, fn)
        groups = fn.op.groups
        layout = ctx.layout(fn.inputs[0])
        k = len(layout) // groups
        layout = ctx.split_at(layout, [k * g for g in range(1, groups)])
        parts = [type(layout)(layout.gid[g * k : (g + 1) * k], layout.ch[g * k : (g + 1) * k])
                 for g in range(groups)]  # fmt: skip
        ctx.unify(parts, fn)
        ctx.member(fn, "consumer", ctx.layout_of(fn.inputs[0]))
        out = ctx.new_group(fn, 0, size=fn.output_shapes[0][-1] // groups)
        ctx.member(fn, "producer", out)
        ctx.set(fn.outputs[0], ctx.tile(out, groups))

    def cut(self, layer, fn, in_keep, out_keep):
        if not self.is_grouped(fn):
            return super().cut(layer, fn, in_keep, out_keep)
        k = fn.input_shapes[0][-1] // layer.groups
        rows = np.asarray(in_keep)[np.asarray(in_keep) < k]  # the same rows in every group
        weights = _keras.weights_by_name(layer)
        config = layer.get_config()
        config["filters"] = len(out_keep)
        kernel = np.take(weights["kernel"], rows, axis=self.in_axis(weights["kernel"]))
        weights["kernel"] = np.take(kernel, out_keep, axis=self.out_axis(kernel))
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep]
        return config, weights

    # the kernel's input axis holds k rows, not one per input position
    def weight_axes(self, fn):
        axes = super().weight_axes(fn)
        return tuple(a for a in axes if a.side == "out") if self.is_grouped(fn) else axes

    def kernel_axis(self, fn, side):
        return None if self.is_grouped(fn) and side == "in" else super().kernel_axis(fn, side)

    def fold_constant(self, layer, fn, u):
        return None if self.is_grouped(fn) else super().fold_constant(layer, fn, u)

    def subset(self, fn):
        return masked("grouped convolution") if self.is_grouped(fn) else super().subset(fn)
