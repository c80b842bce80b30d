"""Gaze prediction (Theis et al. 2018, issue 8): data, metrics, models, Fisher pruning, export.

Importing this package registers the gaze layers, losses and metrics for `.keras` loading.
"""

from tfchannelprune.gaze import (
    data,
    deepgaze,
    export,
    folders,
    keras_metrics,
    layers,
    metrics,
    model,
    pruning,
    train,
)
from tfchannelprune.gaze.data import GazeDataset, SceneConfig, as_tf_dataset, make_dataset
from tfchannelprune.gaze.export import GazeExport, export_gaze
from tfchannelprune.gaze.folders import load_fixation_folder
from tfchannelprune.gaze.keras_metrics import NSS, FixationAUC, InformationGain, LogLikelihood
from tfchannelprune.gaze.layers import GaussianKernel, LogCentreBias, SpatialLogSoftmax
from tfchannelprune.gaze.model import build_gaze_model, build_student, build_teacher
from tfchannelprune.gaze.pruning import PrunedStudent, fisher_prune, prune_student, pruning_path
from tfchannelprune.gaze.train import (
    FixationNLL,
    distil,
    distillation_targets,
    fit_centre_bias,
    fixation_nll,
    train_gaze,
)

__all__ = [
    "FixationAUC",
    "FixationNLL",
    "GaussianKernel",
    "GazeDataset",
    "GazeExport",
    "InformationGain",
    "LogCentreBias",
    "LogLikelihood",
    "NSS",
    "PrunedStudent",
    "SceneConfig",
    "SpatialLogSoftmax",
    "as_tf_dataset",
    "build_gaze_model",
    "build_student",
    "build_teacher",
    "data",
    "deepgaze",
    "distil",
    "distillation_targets",
    "export",
    "export_gaze",
    "fisher_prune",
    "fit_centre_bias",
    "fixation_nll",
    "folders",
    "keras_metrics",
    "layers",
    "load_fixation_folder",
    "make_dataset",
    "metrics",
    "model",
    "prune_student",
    "pruning",
    "pruning_path",
    "train",
    "train_gaze",
]
