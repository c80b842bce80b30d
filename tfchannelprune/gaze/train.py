"""Training gaze models: the fixation log-likelihood loss, distillation targets, fit helpers.

Theis et al. 2018 train by maximum likelihood of fixations, i.e. minimise the cross-entropy
`-E[log Q(z | I)]` over fixation locations z, and distil a student from a teacher with
`0.1 * CE(human fixations) + 0.9 * CE(teacher density)` (arXiv:1801.05787). Cross-entropy is linear
in its target, so on one image that loss equals the cross-entropy to the mixed target
`0.1 * empirical fixation map + 0.9 * teacher density` (`distillation_targets`). In the paper the
two terms come from different datasets (MIT1003 fixations, SALICON teacher maps); here both are
on the same images.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfchannelprune.gaze import data as gaze_data
from tfchannelprune.gaze import metrics
from tfchannelprune.gaze.keras_metrics import NSS, InformationGain, LogLikelihood
from tfchannelprune.gaze.model import centre_bias_layer

__all__ = [
    "FixationNLL",
    "compile_gaze",
    "distil",
    "distillation_targets",
    "fit_centre_bias",
    "fixation_nll",
    "train_gaze",
]

_WEIGHTINGS = ("fixation", "image")


def fixation_nll(y_true, y_pred, weighting: str = "fixation"):
    """Negative log-likelihood per fixation in nats, one value per image.

    Args:
        y_true: (N, H, W) non-negative target: fixation counts, or a density (distillation).
        y_pred: (N, H, W) natural log-density.
        weighting: "fixation": values are scaled so that their batch mean is
            `total NLL / total fixations` of the batch (every fixation counts once, as in the
            log-likelihood metric); "image": each image's target is normalised to sum 1, so the
            batch mean is the mean per-image cross-entropy.

    Returns:
        (N,) tensor whose mean is the loss.
    """
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"`weighting` must be one of {_WEIGHTINGS}. Received: {weighting!r}")
    y_true = ops.cast(y_true, y_pred.dtype)
    per_image = -ops.sum(y_true * y_pred, axis=(1, 2))
    mass = ops.sum(y_true, axis=(1, 2))
    if weighting == "image":
        return ops.divide_no_nan(per_image, mass)
    n = ops.cast(ops.shape(y_pred)[0], y_pred.dtype)
    return ops.divide_no_nan(per_image * n, ops.sum(mass))


@keras.saving.register_keras_serializable(package="tfchannelprune")
class FixationNLL(keras.losses.Loss):
    """Keras loss wrapping `fixation_nll` (nats per fixation). Use "sum_over_batch_size"."""

    def __init__(
        self, weighting="fixation", name="fixation_nll", reduction="sum_over_batch_size", dtype=None
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"`weighting` must be one of {_WEIGHTINGS}. Received: {weighting!r}")
        self.weighting = weighting

    def call(self, y_true, y_pred):
        return fixation_nll(y_true, y_pred, self.weighting)

    def get_config(self):
        return {**super().get_config(), "weighting": self.weighting}


def fit_centre_bias(model: keras.Model, dataset: gaze_data.GazeDataset, **kwargs) -> np.ndarray:
    """Set the model's centre bias from the dataset's pooled fixations; returns the log-density.

    Keyword arguments go to `metrics.centre_bias_log_density`. Use the training split only.
    """
    log_density = metrics.centre_bias_log_density(dataset.fixation_maps(), **kwargs)
    centre_bias_layer(model).set_log_density(log_density)
    return log_density


def compile_gaze(model: keras.Model, learning_rate: float = 1e-3, baseline="uniform") -> None:
    """Compile with Adam, `FixationNLL` and the LL / IG / NSS metrics."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=FixationNLL(),
        metrics=[LogLikelihood(), InformationGain(baseline), NSS()],
    )


def train_gaze(
    model: keras.Model,
    dataset: gaze_data.GazeDataset,
    targets="fixations",
    epochs: int = 10,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    validation: gaze_data.GazeDataset | None = None,
    augment: bool = False,
    seed: int = 0,
    verbose: int = 0,
) -> keras.callbacks.History:
    """Compile (see `compile_gaze`) and fit on `dataset`.

    Args:
        targets: "fixations" (maximum likelihood of the fixations) or an (N, H, W) array such as
            `distillation_targets`.
        validation: evaluated on its fixations after every epoch.
        augment: random left-right flips (see `data.as_tf_dataset`).
    """
    compile_gaze(model, learning_rate)
    train = gaze_data.as_tf_dataset(
        dataset, batch_size, targets, shuffle=True, seed=seed, augment=augment
    )
    val = None if validation is None else gaze_data.as_tf_dataset(validation, batch_size)
    return model.fit(train, epochs=epochs, validation_data=val, shuffle=False, verbose=verbose)


def distillation_targets(
    teacher: keras.Model,
    dataset: gaze_data.GazeDataset,
    fixation_weight: float = 0.1,
    batch_size: int = 32,
) -> np.ndarray:
    """`fixation_weight * empirical fixation map + (1 - fixation_weight) * teacher density`.

    The empirical map is the fixation counts normalised per image (an image without fixations
    takes the teacher density alone). Returns (N, H, W) float32 targets, each summing to 1.
    """
    if not 0.0 <= fixation_weight <= 1.0:
        raise ValueError(f"`fixation_weight` must be in [0, 1]. Received: {fixation_weight}")
    log_p = teacher.predict(dataset.images, batch_size=batch_size, verbose=0)
    teacher_density = np.exp(log_p.astype(np.float64))
    teacher_density /= teacher_density.sum(axis=(1, 2), keepdims=True)
    counts = dataset.fixation_maps(dtype=np.float64)
    totals = counts.sum(axis=(1, 2), keepdims=True)
    empirical = np.divide(counts, totals, out=teacher_density.copy(), where=totals > 0)
    return (fixation_weight * empirical + (1 - fixation_weight) * teacher_density).astype(
        np.float32
    )


def distil(
    student: keras.Model,
    teacher: keras.Model,
    dataset: gaze_data.GazeDataset,
    fixation_weight: float = 0.1,
    **train_kwargs,
) -> keras.callbacks.History:
    """Train `student` on `distillation_targets(teacher, dataset, fixation_weight)`."""
    targets = distillation_targets(teacher, dataset, fixation_weight)
    return train_gaze(student, dataset, targets=targets, **train_kwargs)
