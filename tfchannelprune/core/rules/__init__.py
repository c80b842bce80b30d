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

import keras

from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.rules.base import (
    BARRIER_NOTE,
    CHANNELWISE_ACTIVATIONS,
    ZERO_PRESERVING_ACTIVATIONS,
    Passthrough,
    Rule,
    _activation_name,
    barrier,
    prod,
)
from tfchannelprune.core.rules.channelwise import (
    ActivationRule,
    ChannelGateRule,
    ChannelwiseParamRule,
    CrossChannelNormRule,
    OpRule,
    PReLURule,
    RescalingRule,
    SoftmaxRule,
)
from tfchannelprune.core.rules.layout import ConcatRule, FlattenRule, MergeRule
from tfchannelprune.core.rules.producers import (
    DenseRule,
    DepthwiseRule,
    ProducerRule,
    SeparableRule,
    TransposeRule,
)
from tfchannelprune.core.rules.traced import traced_elementwise as read_traced

__all__ = [
    "BARRIER_NOTE", "CHANNELWISE_ACTIVATIONS", "ZERO_PRESERVING_ACTIVATIONS", "ActivationRule",
    "ChannelGateRule", "ChannelwiseParamRule", "ConcatRule", "CrossChannelNormRule", "DenseRule",
    "DepthwiseRule", "FlattenRule", "MergeRule", "OpRule", "PReLURule", "Passthrough",
    "ProducerRule", "RescalingRule", "Rule", "SeparableRule", "SoftmaxRule", "TransposeRule",
    "barrier", "get", "prod", "register_rule", "traceable", "traced_elementwise",
]  # fmt: skip


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
        _REGISTRY[ChannelGate] = ChannelGateRule()
    return _REGISTRY


def traceable(op) -> bool:
    """Whether a layer should be traced (its ``call`` replayed on symbolic inputs) and
    inlined: a layer of a class without a rule, or an Activation of a custom function."""
    if not isinstance(op, keras.layers.Layer) or isinstance(op, ChannelGate):
        return False
    if type(op) is keras.layers.Activation:
        return _activation_name(op).startswith("custom function")
    return type(get(op)) is Rule


def traced_elementwise(traced) -> Rule:
    """The rule of a kept-whole custom layer, read from its traced graph."""
    return read_traced(traced, get)


def get(op) -> Rule:
    """The rule for a layer or operation (exact class match; unknown classes are barriers)."""
    return _registry().get(type(op), _DEFAULT)
