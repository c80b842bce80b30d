"""tfchannelprune: structured channel pruning for Keras 3 (TensorFlow backend)."""

from tfchannelprune.cost import count_macs, count_params, marginal_macs
from tfchannelprune.errors import UnsupportedLayerError, UnsupportedModelError
from tfchannelprune.gates import (
    ChannelGate,
    get_kept_channels,
    set_kept_channels,
    strip,
    wrap,
)
from tfchannelprune.graph import ChannelGraph, ChannelGroup
from tfchannelprune.report import summary
from tfchannelprune.surgery import compact

__version__ = "0.1.0"

__all__ = [
    "ChannelGate",
    "ChannelGraph",
    "ChannelGroup",
    "UnsupportedLayerError",
    "UnsupportedModelError",
    "compact",
    "count_macs",
    "count_params",
    "get_kept_channels",
    "marginal_macs",
    "set_kept_channels",
    "strip",
    "summary",
    "wrap",
]
