"""tfchannelprune: structured channel pruning for Keras 3 (TensorFlow backend)."""

from tfchannelprune.core.cost import count_macs, count_params, marginal_macs
from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.graph import ChannelGraph, ChannelGroup
from tfchannelprune.core.plan_files import apply_plan, save_plan
from tfchannelprune.core.plans import get_kept_channels, set_kept_channels
from tfchannelprune.core.rules import (
    AS_IS,
    GATHERED,
    ChannelwiseParamRule,
    DenseRule,
    Passthrough,
    ProducerRule,
    Rule,
    WeightAxis,
    masked,
    register_rule,
)
from tfchannelprune.core.summary import summary
from tfchannelprune.core.surgery import compact
from tfchannelprune.core.wrap import strip, wrap
from tfchannelprune.dead.detect import DeadReport, find_dead_channels, remove_dead_channels
from tfchannelprune.dead.gate_inputs import gate_input_means
from tfchannelprune.dead.mean_replacement import mean_replacement_shift
from tfchannelprune.dead.monitor import DeadChannelMonitor
from tfchannelprune.deploy.export import export_tflite
from tfchannelprune.deploy.latency import (
    benchmark_tflite,
    compare,
    latency_table,
    preferred_width,
    round_width,
)
from tfchannelprune.deploy.latency_model import LatencyModel
from tfchannelprune.dynamic.callback import DynamicChannelExecution
from tfchannelprune.errors import (
    NonFiniteInputError,
    TargetNotReachedWarning,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from tfchannelprune.prune.callback import ChannelPruning
from tfchannelprune.prune.loop import PruneResult, prune
from tfchannelprune.prune.schedules import ConstantSchedule, PolynomialSchedule
from tfchannelprune.prune.select import SelectionConfig, select_channels
from tfchannelprune.saliency import signals
from tfchannelprune.saliency.accumulator import SaliencyAccumulator
from tfchannelprune.saliency.collect import collect_saliency, oracle_loss_change
from tfchannelprune.saliency.fpgm import FPGM
from tfchannelprune.saliency.importance import Importance, ScoringContext
from tfchannelprune.saliency.registry import register_importance
from tfchannelprune.saliency.train_step import TrainStepSaliency

__version__ = "0.1.0"

__all__ = [
    "AS_IS",
    "ChannelGate",
    "ChannelGraph",
    "ChannelGroup",
    "ChannelPruning",
    "ChannelwiseParamRule",
    "ConstantSchedule",
    "DeadChannelMonitor",
    "DeadReport",
    "DenseRule",
    "DynamicChannelExecution",
    "FPGM",
    "GATHERED",
    "Importance",
    "LatencyModel",
    "NonFiniteInputError",
    "Passthrough",
    "PolynomialSchedule",
    "ProducerRule",
    "PruneResult",
    "Rule",
    "SaliencyAccumulator",
    "ScoringContext",
    "SelectionConfig",
    "TargetNotReachedWarning",
    "TrainStepSaliency",
    "UnsupportedLayerError",
    "UnsupportedModelError",
    "WeightAxis",
    "apply_plan",
    "benchmark_tflite",
    "collect_saliency",
    "compact",
    "compare",
    "count_macs",
    "count_params",
    "export_tflite",
    "find_dead_channels",
    "gate_input_means",
    "get_kept_channels",
    "latency_table",
    "marginal_macs",
    "masked",
    "mean_replacement_shift",
    "oracle_loss_change",
    "preferred_width",
    "prune",
    "register_importance",
    "register_rule",
    "remove_dead_channels",
    "round_width",
    "save_plan",
    "select_channels",
    "set_kept_channels",
    "signals",
    "strip",
    "summary",
    "wrap",
]
