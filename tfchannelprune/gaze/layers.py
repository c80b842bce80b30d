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

from tfchannelprune.core import rules

__all__ = [
    "BlurredUpsampling",
    "GaussianKernel",
    "LogCentreBias",
    "SpatialLogSoftmax",
    "blurred_upsampling_matrix",
    "gaussian_taps",
]


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

    Computed as a `log_softmax` over the flattened pixels, which LiteRT runs as one fused
    `LOG_SOFTMAX` kernel, also in int8 (its output then has the fixed scale 16/256 and zero
    point 127, i.e. log-densities below about -15.9 are clipped). A `logsumexp` here would
    convert to REDUCE_MAX / EXP / SUM / LOG, whose int8 versions lose about 1 nat.
    """

    def call(self, inputs):
        x = ops.squeeze(inputs, axis=-1)
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            h, w = ops.shape(x)[1], ops.shape(x)[2]
        flat = ops.log_softmax(ops.reshape(x, (-1, h * w)), axis=-1)
        return ops.reshape(flat, (-1, h, w))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


def blurred_upsampling_matrix(size: int, factor: int, sigma: float) -> np.ndarray:
    """(size * factor, size) matrix of 1-D bilinear upsampling then a zero-padded Gaussian blur.

    Bilinear with half-pixel centres and edge clamping, as `UpSampling2D(interpolation=
    "bilinear")`; the blur is the "same"-padded convolution with `gaussian_taps(sigma)`, as the
    separable `DepthwiseConv2D` blur of `gaze_head`. `sigma` is in output pixels; 0: no blur.
    """
    n = size * factor
    up = np.zeros((n, size))
    for y in range(n):
        u = min(max((y + 0.5) / factor - 0.5, 0.0), size - 1.0)
        lo = int(math.floor(u))
        hi = min(lo + 1, size - 1)
        up[y, lo] += 1 - (u - lo)
        up[y, hi] += u - lo
    if sigma <= 0:
        return up
    taps = gaussian_taps(sigma)
    radius = len(taps) // 2
    blur = np.zeros((n, n))
    for y in range(n):
        for k, tap in enumerate(taps):
            if 0 <= y + k - radius < n:
                blur[y, y + k - radius] = tap
    return blur @ up


@keras.saving.register_keras_serializable(package="tfchannelprune")
class BlurredUpsampling(keras.layers.Layer):
    """Bilinear upsampling and a Gaussian blur of a (N, h, w, 1) map as two small matmuls.

    Both are linear and separable, so `out = A_y @ x @ A_x^T` with the fixed
    `blurred_upsampling_matrix` on each axis: the same function as `UpSampling2D(bilinear)`
    followed by the two blur `DepthwiseConv2D` passes (max difference ~1e-8), but LiteRT runs it
    as two FULLY_CONNECTED ops: XNNPACK is slow on single-channel convolutions (at 64x64 the
    blur passes took 0.17 ms, this takes 0.01 ms, float32 and int8 alike).

    Args:
        factor: integer upsampling factor on both axes.
        sigma: blur std in output pixels (0: no blur).
    """

    def __init__(self, factor: int, sigma: float = 1.5, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if int(factor) != factor or factor < 1 or sigma < 0:
            raise ValueError(
                "`factor` must be an integer >= 1 and `sigma` >= 0. "
                f"Received: factor={factor}, sigma={sigma}"
            )
        self.factor, self.sigma = int(factor), float(sigma)

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None or input_shape[-1] != 1:
            raise ValueError(
                "BlurredUpsampling needs a fixed spatial size and one channel, (N, h, w, 1). "
                f"Received: input_shape={input_shape}"
            )
        # Constants folded into the graph, rebuilt from the config (no weights to save).
        self._rows_t = blurred_upsampling_matrix(h, self.factor, self.sigma).T.astype("float32")
        self._cols_t = blurred_upsampling_matrix(w, self.factor, self.sigma).T.astype("float32")

    def call(self, inputs):
        # Constant on the right: LiteRT FULLY_CONNECTED, which int8 quantizes per tensor well
        # (a constant on the left became an int8 BATCH_MATMUL that lost the output scale).
        x = ops.squeeze(inputs, axis=-1)
        x = ops.matmul(x, ops.convert_to_tensor(self._cols_t, inputs.dtype))  # (N, h, W)
        x = ops.transpose(x, (0, 2, 1))
        x = ops.matmul(x, ops.convert_to_tensor(self._rows_t, inputs.dtype))  # (N, W, H)
        return ops.expand_dims(ops.transpose(x, (0, 2, 1)), -1)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (
            n,
            None if h is None else h * self.factor,
            None if w is None else w * self.factor,
            c,
        )

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "sigma": self.sigma}


class _BlurredUpsamplingRule(rules.Rule):
    """A barrier for the channel graph (its one channel is not prunable) whose MACs count."""

    def macs(self, fn, in_w: int, out_w: int) -> int:
        _, h, w, _ = fn.input_shapes[0]
        _, big_h, big_w, _ = fn.output_shapes[0]
        return int(in_w * (h * big_w * w + big_w * big_h * h))


rules.register_rule(BlurredUpsampling, _BlurredUpsamplingRule())


def _log_gaussian(shape, sigma: float) -> np.ndarray:
    h, w = shape
    ys = (np.arange(h) + 0.5) / h - 0.5
    xs = (np.arange(w) + 0.5) / w - 0.5
    log_g = -(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2)
    log_g -= np.log(np.sum(np.exp(log_g)))
    return log_g.astype(np.float32)
