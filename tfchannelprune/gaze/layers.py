"""The gaze head's custom pieces: a Gaussian kernel initializer, a log centre bias, a log-softmax.

All are registered for `.keras` saving under the package "tfchannelprune", so saved gaze models
load without `custom_objects` once `tfchannelprune.gaze` is imported. None of them has channels
to prune: they sit after the readout's single-channel output.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

__all__ = ["GaussianKernel", "LogCentreBias", "SpatialLogSoftmax", "gaussian_taps"]


def gaussian_taps(sigma: float, size: int | None = None) -> np.ndarray:
    """A normalised 1-D Gaussian of std `sigma` pixels; `size` defaults to `2*ceil(3 sigma)+1`."""
    if sigma <= 0:
        raise ValueError(f"`sigma` must be > 0. Received: sigma={sigma}")
    size = size or 2 * math.ceil(3 * sigma) + 1
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(t**2) / (2 * sigma**2))
    return taps / taps.sum()


@keras.saving.register_keras_serializable(package="tfchannelprune")
class GaussianKernel(keras.initializers.Initializer):
    """Initializer of a separable Gaussian blur tap for a `DepthwiseConv2D` kernel.

    The kernel shape is (k, 1, C, 1) for the vertical pass or (1, k, C, 1) for the horizontal
    one; every channel gets the same normalised 1-D Gaussian of std `sigma` pixels.

    Args:
        sigma: standard deviation in pixels.
    """

    def __init__(self, sigma: float):
        self.sigma = float(sigma)

    def __call__(self, shape, dtype=None):
        kh, kw = shape[0], shape[1]
        if min(kh, kw) != 1:
            raise ValueError(
                "GaussianKernel makes one pass of a separable blur: the kernel must be (k, 1) "
                f"or (1, k). Received: shape={tuple(shape)}"
            )
        taps = gaussian_taps(self.sigma, max(kh, kw)).reshape(kh, kw, 1, 1)
        kernel = np.broadcast_to(taps, tuple(shape)).astype(np.float32)
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"sigma": self.sigma}


@keras.saving.register_keras_serializable(package="tfchannelprune")
class LogCentreBias(keras.layers.Layer):
    """Adds a log centre-bias map `log Q_cb(y, x)` to a (N, H, W, 1) score map.

    DeepGaze II (Kümmerer et al. 2017): `Q(x, y | I) ∝ exp(score(x, y) + log Q_cb(x, y))`. The
    map is a weight of shape (H, W), initialised to the log of an isotropic Gaussian of std
    `sigma * side` and usually replaced by one estimated from training fixations with
    `set_log_density` (e.g. `metrics.centre_bias_log_density`). It is not trained unless
    `trainable=True`.

    Args:
        sigma: initial Gaussian std as a fraction of the image side.
    """

    def __init__(self, sigma: float = 0.3, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if sigma <= 0:
            raise ValueError(f"`sigma` must be > 0. Received: sigma={sigma}")
        self.sigma = float(sigma)

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None or input_shape[-1] != 1:
            raise ValueError(
                "LogCentreBias needs a fixed spatial size and one channel, (N, H, W, 1). "
                f"Received: input_shape={input_shape}"
            )
        self.log_density = self.add_weight(
            name="log_density",
            shape=(h, w),
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(
                _log_gaussian(shape, self.sigma), dtype=dtype
            ),
            trainable=True,  # still frozen while the layer's `trainable` is False
        )

    def call(self, inputs):
        return inputs + ops.cast(self.log_density, inputs.dtype)[None, :, :, None]

    def set_log_density(self, log_density) -> None:
        """Replace the map with `log_density` (H, W), e.g. from training fixations."""
        log_density = np.asarray(log_density, dtype=np.float32)
        if tuple(log_density.shape) != tuple(self.log_density.shape):
            raise ValueError(
                f"`log_density` must have shape {tuple(self.log_density.shape)}. "
                f"Received: shape={log_density.shape}"
            )
        self.log_density.assign(log_density)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="tfchannelprune")
class SpatialLogSoftmax(keras.layers.Layer):
    """Log-softmax over pixels: (N, H, W, 1) scores to an (N, H, W) log-density.

    `out = x - logsumexp_{y,x}(x)`, so `exp(out)` sums to 1 per image.
    """

    def call(self, inputs):
        x = ops.squeeze(inputs, axis=-1)
        return x - ops.logsumexp(x, axis=(1, 2), keepdims=True)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


def _log_gaussian(shape, sigma: float) -> np.ndarray:
    h, w = shape
    ys = (np.arange(h) + 0.5) / h - 0.5
    xs = (np.arange(w) + 0.5) / w - 0.5
    log_g = -(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2)
    log_g -= np.log(np.sum(np.exp(log_g)))
    return log_g.astype(np.float32)
