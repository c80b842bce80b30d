"""DeepGaze-II-style gaze models: CNN backbone, 1x1 readout, blur, centre bias, log-softmax.

The head follows DeepGaze II (Kümmerer, Wallis, Gatys, Bethge, ICCV 2017) as re-implemented by
Theis et al. 2018 ("Faster gaze prediction with dense networks and Fisher pruning",
arXiv:1801.05787): the readout runs *before* upsampling (cheaper), the Gaussian blur is
separable, then a log centre bias is added and a softmax over pixels turns scores into a density:

    log Q(y, x | I) = [G_sigma * U(R(F(I)))](y, x) + log Q_cb(y, x) - logsumexp(...)

The output is an (N, H, W) natural log-density (`exp` sums to 1 per image). Backbones and readout
are plain Conv2D / BatchNormalization / ReLU / MaxPooling2D layers, so the channel-pruning graph
can prune them; the blur is two fixed `DepthwiseConv2D` layers on one channel, and the last two
layers are the registered `LogCentreBias` and `SpatialLogSoftmax`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from tfchannelprune.gaze.layers import (
    BlurredUpsampling,
    GaussianKernel,
    LogCentreBias,
    SpatialLogSoftmax,
)

__all__ = ["build_gaze_model", "build_student", "build_teacher", "centre_bias_layer", "gaze_head"]


def gaze_head(
    features,
    image_size: tuple[int, int],
    readout_widths: Sequence[int] = (16, 32, 2),
    activation: str = "relu",
    blur_sigma: float = 1.5,
    centre_bias_sigma: float = 0.3,
    upsampling: str = "layers",
):
    """The DeepGaze II head on a feature map: 1x1 readout, upsample, blur, centre bias, softmax.

    Args:
        features: symbolic (N, h, w, C) tensor with `image_size` a multiple of (h, w).
        image_size: (H, W) of the output log-density.
        readout_widths: widths of the hidden 1x1 convolutions; a final 1x1 conv to one channel
            follows. DeepGaze II uses (16, 32, 2) with softplus; ReLU is the default here
            (prunable, and a native LiteRT op).
        activation: activation of the hidden readout layers.
        blur_sigma: Gaussian blur std in output pixels (DeepGaze II: about 1 degree of visual
            angle, tuned on data); 0 for no blur.
        centre_bias_sigma: initial centre-bias Gaussian std as a fraction of the image side.
        upsampling: "layers": `UpSampling2D` (bilinear) then two fixed `DepthwiseConv2D` blur
            passes; "matmul": the same function as one `BlurredUpsampling` layer (two small
            matmuls), about 20x faster in LiteRT at 64x64, where XNNPACK is slow on
            single-channel convolutions.

    Returns:
        Symbolic (N, H, W) log-density.
    """
    if upsampling not in ("layers", "matmul"):
        raise ValueError(
            f"`upsampling` must be 'layers' or 'matmul'. Received: upsampling={upsampling!r}"
        )
    h, w = (int(s) for s in image_size)
    fh, fw = features.shape[1], features.shape[2]
    if fh is None or fw is None or h % fh or w % fw or h // fh != w // fw:
        raise ValueError(
            "The feature map must divide the image size by the same integer factor on both "
            f"axes. Received: image_size={(h, w)}, features.shape={tuple(features.shape)}"
        )
    x = features
    for i, width in enumerate(readout_widths):
        x = keras.layers.Conv2D(width, 1, activation=activation, name=f"readout_{i}")(x)
    x = keras.layers.Conv2D(1, 1, name="readout_out")(x)
    if upsampling == "matmul":
        x = BlurredUpsampling(h // fh, blur_sigma, name="upsample_blur")(x)
        x = LogCentreBias(centre_bias_sigma, name="centre_bias")(x)
        return SpatialLogSoftmax(name="log_density")(x)
    if h // fh > 1:
        x = keras.layers.UpSampling2D(h // fh, interpolation="bilinear", name="upsample")(x)
    if blur_sigma > 0:  # zero padding pulls border scores towards 0; the readout learns it
        taps = 2 * math.ceil(3 * blur_sigma) + 1
        blur = {"use_bias": False, "trainable": False, "padding": "same"}
        init = GaussianKernel(blur_sigma)
        for axis, kernel in (("y", (taps, 1)), ("x", (1, taps))):
            x = keras.layers.DepthwiseConv2D(
                kernel, depthwise_initializer=init, name=f"blur_{axis}", **blur
            )(x)
    x = LogCentreBias(centre_bias_sigma, name="centre_bias")(x)
    return SpatialLogSoftmax(name="log_density")(x)


def conv_backbone(
    inputs,
    stage_widths: Sequence[int],
    convs_per_stage: Sequence[int],
    name: str,
):
    """VGG-style stages of Conv2D(3x3, no bias) -> BatchNormalization -> ReLU, max-pool between.

    The output stride is `2 ** (len(stage_widths) - 1)`.
    """
    if len(stage_widths) != len(convs_per_stage) or not stage_widths:
        raise ValueError(
            "`stage_widths` and `convs_per_stage` must be non-empty and of equal length. "
            f"Received: stage_widths={stage_widths}, convs_per_stage={convs_per_stage}"
        )
    x = inputs
    for s, (width, n_convs) in enumerate(zip(stage_widths, convs_per_stage, strict=True)):
        if s > 0:
            x = keras.layers.MaxPooling2D(2, name=f"{name}_pool{s}")(x)
        for c in range(n_convs):
            prefix = f"{name}_s{s}c{c}"
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=prefix)(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    return x


def build_gaze_model(
    input_shape: tuple[int, int, int] = (64, 64, 3),
    stage_widths: Sequence[int] = (16, 32, 48, 64),
    convs_per_stage: Sequence[int] | None = None,
    readout_widths: Sequence[int] = (16, 32, 2),
    blur_sigma: float = 1.5,
    centre_bias_sigma: float = 0.3,
    upsampling: str = "layers",
    name: str = "gaze",
) -> keras.Model:
    """A gaze model: `conv_backbone` + `gaze_head`, output (N, H, W) log-density.

    Args:
        input_shape: (H, W, 3); H and W must be multiples of the backbone stride.
        stage_widths: output channels of each backbone stage.
        convs_per_stage: 3x3 convolutions in each stage (default one each).
        readout_widths, blur_sigma, centre_bias_sigma, upsampling: see `gaze_head`.
        name: model name, also the prefix of the backbone layers.
    """
    convs_per_stage = convs_per_stage or (1,) * len(stage_widths)
    stride = 2 ** (len(stage_widths) - 1)
    h, w = input_shape[0], input_shape[1]
    if h is None or w is None or h % stride or w % stride:
        raise ValueError(
            f"Input height and width must be multiples of the backbone stride {stride} "
            f"({len(stage_widths)} stages). Received: input_shape={input_shape}"
        )
    inputs = keras.Input(input_shape, name="image")
    features = conv_backbone(inputs, stage_widths, convs_per_stage, name=f"{name}_backbone")
    outputs = gaze_head(
        features, (h, w), readout_widths, blur_sigma=blur_sigma,
        centre_bias_sigma=centre_bias_sigma, upsampling=upsampling,
    )  # fmt: skip
    return keras.Model(inputs, outputs, name=name)


def build_student(
    input_shape: tuple[int, int, int] = (64, 64, 3),
    width: int = 16,
    stages: int = 4,
    **head_kwargs,
) -> keras.Model:
    """FastGaze-style student: `stages` conv/BN/ReLU blocks of widths width * (1, 2, 3, 4, ...).

    FastGaze (Theis et al. 2018) reads out only the last conv layer of its backbone, trains it end
    to end by distillation, then Fisher-prunes it; this is a small, width-configurable stand-in.
    """
    widths = tuple(width * (i + 1) for i in range(stages))
    return build_gaze_model(input_shape, widths, (1,) * stages, name="student", **head_kwargs)


def build_teacher(
    input_shape: tuple[int, int, int] = (64, 64, 3),
    width: int = 32,
    **head_kwargs,
) -> keras.Model:
    """A larger VGG-11-like teacher: four stages, widths width * (1, 2, 4, 4), convs (1, 1, 2, 2).

    The paper's teacher is an ensemble of ten DeepGaze II models on pretrained VGG-19 features;
    no pretrained weights are available offline here, so the teacher is trained from scratch.
    """
    widths = (width, 2 * width, 4 * width, 4 * width)
    return build_gaze_model(input_shape, widths, (1, 1, 2, 2), name="teacher", **head_kwargs)


def centre_bias_layer(model: keras.Model) -> LogCentreBias:
    """The model's `LogCentreBias` layer (e.g. to `set_log_density` from training fixations)."""
    found = [layer for layer in model.layers if isinstance(layer, LogCentreBias)]
    if len(found) != 1:
        raise ValueError(
            "Expected exactly one LogCentreBias layer in the model. "
            f"Received: {len(found)} in model '{model.name}'"
        )
    return found[0]
