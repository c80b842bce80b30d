"""tfchannelprune: structured channel pruning for Keras 3 (TensorFlow backend)."""

from tfchannelprune import signals
from tfchannelprune.accumulator import SaliencyAccumulator
from tfchannelprune.callbacks import ChannelPruning
from tfchannelprune.collect import collect_saliency
from tfchannelprune.cost import count_macs, count_params, marginal_macs
from tfchannelprune.dead import DeadReport, find_dead_channels, remove_dead_channels
from tfchannelprune.dead_monitor import DeadChannelMonitor
from tfchannelprune.dynamic import DynamicChannelExecution
from tfchannelprune.errors import UnsupportedLayerError, UnsupportedModelError
from tfchannelprune.gate_stats import gate_input_means
from tfchannelprune.gates import (
    ChannelGate,
    get_kept_channels,
    set_kept_channels,
    strip,
    wrap,
)
from tfchannelprune.graph import ChannelGraph, ChannelGroup
from tfchannelprune.iterative import PruneResult, prune
from tfchannelprune.mean_replacement import mean_replacement_shift
from tfchannelprune.report import summary
from tfchannelprune.schedules import ConstantSchedule, PolynomialSchedule
from tfchannelprune.select import SelectionConfig
from tfchannelprune.surgery import compact

__version__ = "0.1.0"

__all__ = [
    "ChannelGate",
    "ChannelGraph",
    "ChannelGroup",
    "ChannelPruning",
    "ConstantSchedule",
    "DeadChannelMonitor",
    "DeadReport",
    "DynamicChannelExecution",
    "PolynomialSchedule",
    "PruneResult",
    "SaliencyAccumulator",
    "SelectionConfig",
    "UnsupportedLayerError",
    "UnsupportedModelError",
    "collect_saliency",
    "compact",
    "count_macs",
    "count_params",
    "find_dead_channels",
    "gate_input_means",
    "get_kept_channels",
    "marginal_macs",
    "mean_replacement_shift",
    "prune",
    "remove_dead_channels",
    "set_kept_channels",
    "signals",
    "strip",
    "summary",
    "wrap",
]
