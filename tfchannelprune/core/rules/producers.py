"""Rules for layers that make new channels from all their inputs: convolutions (plain,
transposed, separable, depthwise) and Dense."""

from __future__ import annotations

import keras
import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.rules.base import (
    CHANNELWISE_ACTIVATIONS,
    GATHERED,
    Rule,
    WeightAxis,
    _activation_name,
    masked,
    prod,
)


def _ndim(layer, name: str) -> int | None:
    """The rank of the layer's weight ``name`` (None when it has none)."""
    for v in layer.weights:
        if v.name == name:
            return len(v.shape)
    return None


def _bias_axes(layer) -> tuple[WeightAxis, ...]:
    return (WeightAxis("bias", 0, "out"),) if _ndim(layer, "bias") else ()


def _subset_or_masked(fn, method: str):
    """Gathered execution for a layer that has ``method`` and a channel-wise activation."""
    layer = fn.op
    if method and not hasattr(layer, method):
        return masked(f"{type(layer).__name__} has no {method}()")
    if getattr(layer, "padding", None) == "causal":
        return masked("causal padding is applied inside call()")
    act = _activation_name(layer)
    if act not in CHANNELWISE_ACTIVATIONS:
        return masked(f"activation {act!r} mixes channels")
    return GATHERED


def _finish(layer, y, weights):
    """Bias and activation after the linear part of a producer's call."""
    if "bias" in weights:
        y = y + keras.ops.cast(weights["bias"], y.dtype)
    return layer.activation(y) if layer.activation is not None else y


def _inputs(layer, x, weights, *names):
    x = keras.ops.cast(x, layer.compute_dtype)
    return (x, *(keras.ops.cast(weights[n], x.dtype) for n in names))


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

    # ------------------------------------------------------------------ declarations
    def _kernel_axes(self, fn) -> dict[str, WeightAxis]:
        ndim = _ndim(fn.op, "kernel")
        if ndim is None:
            return {}
        shape = np.empty((0,) * ndim)
        axes = {"out": WeightAxis("kernel", self.out_axis(shape), "out")}
        if not self.is_channelwise(fn):
            axes["in"] = WeightAxis("kernel", self.in_axis(shape), "in")
        return axes

    def weight_axes(self, fn):
        return tuple(self._kernel_axes(fn).values()) + _bias_axes(fn.op)

    def kernel_axis(self, fn, side):
        return None if self.is_channelwise(fn) else self._kernel_axes(fn).get(side)

    def fold_constant(self, layer, fn, u):
        if self.is_channelwise(fn):
            return None  # a channel-wise conv loses the channel with it
        kernel = np.asarray(layer.kernel.numpy(), np.float64)
        taps = kernel.sum(axis=tuple(range(kernel.ndim - 2)))  # (in, out); Dense: the kernel
        return u @ taps

    def subset(self, fn):
        if self.is_channelwise(fn):
            return masked("grouped convolution with one channel per group")
        return _subset_or_masked(fn, "convolution_op")

    def call_subset(self, layer, fn, x, weights, training):
        x, kernel = _inputs(layer, x, weights, "kernel")
        return _finish(layer, layer.convolution_op(x, kernel), weights), {}


class DenseRule(ProducerRule):
    width_key = "units"

    def macs(self, fn, in_w, out_w) -> int:
        return prod(fn.output_shapes[0][1:-1]) * in_w * out_w

    def subset(self, fn):
        return _subset_or_masked(fn, "")

    def call_subset(self, layer, fn, x, weights, training):
        x, kernel = _inputs(layer, x, weights, "kernel")
        return _finish(layer, keras.ops.matmul(x, kernel), weights), {}


class TransposeRule(ProducerRule):
    """Conv{1,2,3}DTranspose: the kernel is (*k, out, in)."""

    def in_axis(self, kernel) -> int:
        return kernel.ndim - 1

    def out_axis(self, kernel) -> int:
        return kernel.ndim - 2

    def macs(self, fn, in_w, out_w) -> int:
        kernel = prod(fn.op.kernel_size)
        return prod(fn.input_shapes[0][1:-1]) * kernel * in_w * out_w

    def fold_constant(self, layer, fn, u):
        # (out, in) taps, averaged over output positions (exact for stride 1, and whenever
        # the kernel size is a multiple of the stride)
        kernel = np.asarray(layer.kernel.numpy(), np.float64)
        taps = kernel.sum(axis=tuple(range(kernel.ndim - 2)))
        return taps @ u / float(np.prod(layer.strides))

    def subset(self, fn):
        return _subset_or_masked(fn, "")

    def call_subset(self, layer, fn, x, weights, training):
        x, kernel = _inputs(layer, x, weights, "kernel")
        y = keras.ops.conv_transpose(
            x, kernel, strides=list(layer.strides), padding=layer.padding,
            output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )  # fmt: skip
        return _finish(layer, y, weights), {}


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

    def _kernel_axes(self, fn):
        dw, pw = _ndim(fn.op, "depthwise_kernel"), _ndim(fn.op, "pointwise_kernel")
        return {
            "in": WeightAxis("depthwise_kernel", dw - 2, "in"),
            "out": WeightAxis("pointwise_kernel", pw - 1, "out"),
        }

    def weight_axes(self, fn):
        pw, dm = _ndim(fn.op, "pointwise_kernel"), fn.op.depth_multiplier
        rows = WeightAxis("pointwise_kernel", pw - 2, "in", repeat=dm)
        return (*self._kernel_axes(fn).values(), rows, *_bias_axes(fn.op))

    def fold_constant(self, layer, fn, u):
        depthwise = np.asarray(layer.depthwise_kernel.numpy(), np.float64)
        pointwise = np.asarray(layer.pointwise_kernel.numpy(), np.float64)
        taps = depthwise.sum(axis=tuple(range(depthwise.ndim - 2)))  # (C_in, dm)
        middle = (u[:, None] * taps).reshape(-1)  # position c*dm + m, as in the pointwise rows
        return middle @ pointwise.reshape(-1, pointwise.shape[-1])

    def subset(self, fn):
        return _subset_or_masked(fn, "")

    def call_subset(self, layer, fn, x, weights, training):
        x, dw, pw = _inputs(layer, x, weights, "depthwise_kernel", "pointwise_kernel")
        y = keras.ops.separable_conv(
            x, dw, pw, strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format,
        )  # fmt: skip
        return _finish(layer, y, weights), {}


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

    def weight_axes(self, fn):
        kernel = WeightAxis("kernel", _ndim(fn.op, "kernel") - 2, "in")
        return (kernel, *_bias_axes(fn.op))

    def kernel_axis(self, fn, side):
        return None  # its channels are its input's: no channels of its own to score

    def fold_constant(self, layer, fn, u):
        return None  # channel-wise: a removed channel goes with it

    def subset(self, fn):
        return _subset_or_masked(fn, "")

    def call_subset(self, layer, fn, x, weights, training):
        x, kernel = _inputs(layer, x, weights, "kernel")
        y = keras.ops.depthwise_conv(
            x, kernel, strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format,
        )  # fmt: skip
        return _finish(layer, y, weights), {}
