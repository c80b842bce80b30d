"""Gaze prediction (Theis et al. 2018, issue 8): data, metrics, DeepGaze-II-style models.

Importing this package registers the gaze layers, losses and metrics for `.keras` loading.
"""

from tfchannelprune.gaze import data, folders, keras_metrics, layers, metrics, model, train
from tfchannelprune.gaze.data import GazeDataset, SceneConfig, as_tf_dataset, make_dataset
from tfchannelprune.gaze.folders import load_fixation_folder
from tfchannelprune.gaze.keras_metrics import NSS, FixationAUC, InformationGain, LogLikelihood
from tfchannelprune.gaze.layers import GaussianKernel, LogCentreBias, SpatialLogSoftmax
from tfchannelprune.gaze.model import build_gaze_model, build_student, build_teacher
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
    "InformationGain",
    "LogCentreBias",
    "LogLikelihood",
    "NSS",
    "SceneConfig",
    "SpatialLogSoftmax",
    "as_tf_dataset",
    "build_gaze_model",
    "build_student",
    "build_teacher",
    "data",
    "distil",
    "distillation_targets",
    "fit_centre_bias",
    "fixation_nll",
    "folders",
    "keras_metrics",
    "layers",
    "load_fixation_folder",
    "make_dataset",
    "metrics",
    "model",
    "train",
    "train_gaze",
]
