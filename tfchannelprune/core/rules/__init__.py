"""Per-layer rules: how each layer type produces, passes or consumes channels, and how it is cut.

A rule answers, for one call of one layer (a ``FlatNode``):

* ``propagate(ctx, fn)``: the channel layout of the outputs from the layouts of the inputs
  (new group, same layout, unified, concatenated, tiled ...), and which groups it blocks;
* ``mixes``: whether each output reads several input channels, so a switched-off input channel
  must be exactly zero when it gets there (a gate goes in front);
* ``zero_preserving(fn)``: whether an all-zero input channel gives an all-zero output channel;
* ``cut(layer, fn, in_keep, out_keep)``: the config and weights of the smaller layer;
* ``macs(fn, in_w, out_w)``: multiply-accumulates at the given channel widths;

and declares what every feature needs to know about its layer type (``base``): the channel
axes of its weights, the kernel weight-based signals score, its per-channel scale, how a
constant input channel folds into its bias, whether constants pass through it, and how the
dynamic executor runs it on a channel subset. Features read these declarations and never
branch on a rule or layer class.

The channel axis is the last axis (channels_last). Anything else is a barrier.
Layers are matched by exact class: a subclass may override ``call`` and is a barrier.
"""

from __future__ import annotations

import keras

from tfchannelprune import _keras
from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.rules.base import (
    AS_IS,
    BARRIER_NOTE,
    CHANNELWISE_ACTIVATIONS,
    GATHERED,
    ZERO_PRESERVING_ACTIVATIONS,
    Passthrough,
    Rule,
    SubsetExecution,
    UnknownLayerRule,
    WeightAxis,
    barrier,
    masked,
    prod,
)
from tfchannelprune.core.rules.channelwise import (
    ActivationRule,
    BatchNormRule,
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

__all__ = [
    "AS_IS", "BARRIER_NOTE", "CHANNELWISE_ACTIVATIONS", "GATHERED", "ZERO_PRESERVING_ACTIVATIONS",
    "ActivationRule", "BatchNormRule", "ChannelGateRule", "ChannelwiseParamRule", "ConcatRule",
    "CrossChannelNormRule", "DenseRule", "DepthwiseRule", "FlattenRule", "MergeRule", "OpRule",
    "PReLURule", "Passthrough", "ProducerRule", "RescalingRule", "Rule", "SeparableRule",
    "SoftmaxRule", "SubsetExecution", "TransposeRule", "UnknownLayerRule", "WeightAxis",
    "barrier", "get", "masked", "prod", "register_rule", "registered",
]  # fmt: skip


def _build_registry() -> dict[type, Rule]:
    L = keras.layers
    registry: dict[type, Rule] = {}

    def add(rule: Rule, *classes) -> None:
        for cls in classes:
            if cls is not None:
                registry[cls] = rule

    def ops(module: str, *names: str) -> list:
        return [_keras.operation_class(module, n) for n in names]

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
    add(BatchNormRule(), L.BatchNormalization)
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
    add(MergeRule(True), *ops("numpy", "Add", "Subtract", "Multiply", "Maximum", "Minimum"))
    add(ConcatRule(), *ops("numpy", "Concatenate"))
    add(OpRule(True), *ops("nn", "Relu", "Relu6", "Silu", "Gelu", "HardSilu", "LeakyRelu",
                           "Elu", "Selu", "Softsign", "Celu", "HardTanh", "TanhShrink"))  # fmt: skip
    add(OpRule(True), *ops("numpy", "Tanh", "Negative", "Absolute", "Square"))
    add(OpRule(False), *ops("nn", "Sigmoid", "HardSigmoid", "Softplus", "LogSigmoid"))
    add(OpRule(True), *ops("numpy", "TrueDivide", "Divide"))
    return registry

_REGISTRY: dict[type, Rule] | None = None
_DEFAULT = UnknownLayerRule()


def register_rule(cls: type, rule: Rule) -> None:
    """Teach tfchannelprune a layer class: how it couples, cuts and costs channels, and what
    the features need to know about it (see ``Rule``; docs/core.md has a worked example).

    Layers are matched by exact class, so register each subclass too. Registering a class
    again replaces its rule.

    Args:
        cls: the layer (or ``keras.ops`` operation) class.
        rule: an instance of ``Rule`` or of one of its subclasses.

    Raises:
        TypeError: when ``cls`` is not a class or ``rule`` is not a ``Rule`` instance.

    Example:
        >>> register_rule(MyScale, Passthrough(zero_preserving=True))
    """
    if not isinstance(cls, type):
        raise TypeError(
            "register_rule expects the layer class itself (e.g. MyLayer, not MyLayer()). "
            f"Received: cls={cls!r} of type {type(cls).__name__}"
        )
    if isinstance(rule, type) or not isinstance(rule, Rule):
        hint = " (an instance: Rule(), not the class Rule)" if isinstance(rule, type) else ""
        raise TypeError(
            f"register_rule expects a tfchannelprune Rule instance{hint}. "
            f"Received: rule={rule!r} for cls={cls.__name__}"
        )
    _registry()[cls] = rule


def registered() -> dict[type, Rule]:
    """{class: rule} of every class the graph knows (a copy)."""
    return dict(_registry())


def _registry() -> dict[type, Rule]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _build_registry()
        _REGISTRY[ChannelGate] = ChannelGateRule()
    return _REGISTRY


def get(op) -> Rule:
    """The rule for a layer or operation (exact class match; unknown classes are barriers)."""
    return _registry().get(type(op), _DEFAULT)
