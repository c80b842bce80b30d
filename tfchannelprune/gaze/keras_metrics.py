"""Keras metrics for gaze models: log-likelihood, information gain, NSS and AUC.

`y_true` is an (N, H, W) map of fixation counts (as made by `data.as_tf_dataset`), `y_pred` the
model's (N, H, W) natural log-density. The conventions are those of the NumPy twins in
`tfchannelprune.gaze.metrics` (log-likelihood per fixation in bits; NSS per fixation; AUC with all
pixels as negatives), and every value is accumulated per fixation over the batches, so the result
equals the NumPy metric on the whole evaluation set. `sample_weight`, if given, is one weight per
image and multiplies that image's fixation counts.

With distillation targets (a density instead of counts) `LogLikelihood` becomes the negative
cross-entropy to the target, in bits.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

__all__ = ["FixationAUC", "InformationGain", "LogLikelihood", "NSS"]


class _PerFixationMean(keras.metrics.Metric):
    """Base: accumulates `sum(w * value)` and `sum(w)` where w are the fixation counts."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def per_pixel(self, log_density):
        """The per-pixel value averaged over fixations, (N, H, W)."""
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        counts = ops.cast(y_true, "float32")
        if sample_weight is not None:
            counts = counts * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1, 1))
        self.total.assign_add(ops.sum(counts * self.per_pixel(y_pred)))
        self.count.assign_add(ops.sum(counts))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="tfchannelprune")
class LogLikelihood(_PerFixationMean):
    """Mean log-likelihood of the fixations, bits per fixation (`metrics.log_likelihood`)."""

    def __init__(self, name="log_likelihood", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_pixel(self, log_density):
        return log_density / math.log(2)


@keras.saving.register_keras_serializable(package="tfchannelprune")
class InformationGain(_PerFixationMean):
    """Information gain over a baseline, bits per fixation (`metrics.information_gain`).

    Args:
        baseline: "uniform", or an (H, W) natural log-density such as
            `metrics.centre_bias_log_density` of the training fixations (the benchmark
            convention). An array baseline is stored in the config as a nested list.
    """

    def __init__(self, baseline="uniform", name="information_gain", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(baseline, str) and baseline != "uniform":
            raise ValueError(
                "`baseline` must be 'uniform' or an (H, W) log-density. "
                f"Received: baseline={baseline!r}"
            )
        if not isinstance(baseline, str):
            baseline = np.asarray(baseline, dtype=np.float32)
            if baseline.ndim != 2:
                raise ValueError(
                    f"`baseline` must be an (H, W) log-density. Received: shape={baseline.shape}"
                )
        self.baseline = baseline

    def per_pixel(self, log_density):
        if isinstance(self.baseline, str):
            h, w = ops.shape(log_density)[1], ops.shape(log_density)[2]
            base = -ops.log(ops.cast(h * w, "float32"))
        else:
            base = ops.convert_to_tensor(self.baseline)[None]
        return (log_density - base) / math.log(2)

    def get_config(self):
        base = self.baseline if isinstance(self.baseline, str) else self.baseline.tolist()
        return {**super().get_config(), "baseline": base}


@keras.saving.register_keras_serializable(package="tfchannelprune")
class NSS(_PerFixationMean):
    """Normalised scanpath saliency of the density `exp(y_pred)`, per fixation (`metrics.nss`).

    Each image's density is standardised (`ddof=0`); a constant map scores 0.
    """

    def __init__(self, name="nss", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_pixel(self, log_density):
        p = ops.exp(log_density)
        mean = ops.mean(p, axis=(1, 2), keepdims=True)
        std = ops.std(p, axis=(1, 2), keepdims=True)
        # A constant map scores 0; its std can round to a tiny non-zero value.
        spread = ops.max(p, axis=(1, 2), keepdims=True) - ops.min(p, axis=(1, 2), keepdims=True)
        std = ops.where(spread > 0, std, ops.zeros_like(std))
        return ops.divide_no_nan(p - mean, std)


@keras.saving.register_keras_serializable(package="tfchannelprune")
class FixationAUC(_PerFixationMean):
    """AUC with all pixels as negatives, ties counted half (`metrics.pixel_auc`).

    For each fixation, the fraction of the image's other pixels with lower predicted density,
    plus half of those with equal density; averaged over fixations. A constant map scores 0.5.
    (AUC-Judd needs the binary fixation map's unique pixels and per-image thresholds; use
    `metrics.auc_judd` for it.)
    """

    def __init__(self, name="fixation_auc", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_pixel(self, log_density):
        n = ops.shape(log_density)[0]
        flat = ops.reshape(log_density, (n, -1))
        sorted_flat = ops.sort(flat, axis=-1)

        def ranks(args):
            row, sorted_row = args
            lower = ops.searchsorted(sorted_row, row, side="left")
            upper = ops.searchsorted(sorted_row, row, side="right")
            return ops.cast(lower, "float32") + 0.5 * ops.cast(upper - lower - 1, "float32")

        rank = ops.vectorized_map(ranks, (flat, sorted_flat))
        n_pix = ops.cast(ops.shape(flat)[1], "float32")
        return ops.reshape(rank / (n_pix - 1.0), ops.shape(log_density))
