"""Rules for layers that make new channels from all their inputs: convolutions (plain,
transposed, separable, depthwise) and Dense."""

from __future__ import annotations

import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.rules.base import (
    Rule,
    prod,
)


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
