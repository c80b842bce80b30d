"""Gaze models: log-density output, loss, training, distillation, saving, LiteRT parity."""

import math

import keras
import numpy as np
import pytest

from tfchannelprune import gaze
from tfchannelprune.gaze import layers as gaze_layers
from tfchannelprune.gaze import metrics
from tfchannelprune.gaze.train import fixation_nll

SIZE = (32, 32)


@pytest.fixture(scope="module")
def dataset():
    return gaze.make_dataset(40, size=SIZE, fixations_per_image=20, seed=0)


def _student(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return gaze.build_student((*SIZE, 3), width=4, stages=3, **kwargs)


def test_output_is_a_log_density(dataset):
    model = _student()
    log_p = np.asarray(model(dataset.images[:3]))
    assert log_p.shape == (3, *SIZE)
    np.testing.assert_allclose(np.exp(log_p).sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_backbone_and_readout_are_standard_keras_layers():
    model = _student()
    custom = [layer for layer in model.layers if not type(layer).__module__.startswith("keras.")]
    assert [type(layer).__name__ for layer in custom] == ["LogCentreBias", "SpatialLogSoftmax"]
    blur = [layer for layer in model.layers if layer.name.startswith("blur_")]
    assert len(blur) == 2 and not any(layer.trainable for layer in blur)
    taps = np.asarray(blur[0].kernel)[:, 0, 0, 0]
    np.testing.assert_allclose(taps, gaze_layers.gaussian_taps(1.5), rtol=1e-6)
    assert taps.sum() == pytest.approx(1.0)


def test_teacher_is_larger_than_student():
    teacher = gaze.build_teacher((*SIZE, 3), width=8)
    assert teacher.count_params() > 4 * _student().count_params()
    assert teacher.output_shape == (None, *SIZE)


def test_builder_errors():
    with pytest.raises(ValueError, match="multiples of the backbone stride 4"):
        gaze.build_student((30, 32, 3), width=4, stages=3)
    model = _student()
    with pytest.raises(ValueError, match=r"shape \(32, 32\)"):
        gaze.model.centre_bias_layer(model).set_log_density(np.zeros((4, 4)))


def test_fixation_nll_hand_computed():
    uniform = np.full((2, 4, 4), -math.log(16), np.float32)
    counts = np.zeros((2, 4, 4), np.float32)
    counts[0, 0, 0], counts[1, 1, 1] = 3, 1
    per_image = np.asarray(fixation_nll(counts, uniform))
    assert per_image.mean() == pytest.approx(math.log(16), rel=1e-6)
    log_p = uniform.copy()
    log_p[0] = np.log(np.full((4, 4), 0.5 / 15))
    log_p[0, 0, 0] = math.log(0.5)
    # fixation weighting: (3 * log 2 + log 16) / 4; image weighting: (log 2 + log 16) / 2
    assert np.asarray(fixation_nll(counts, log_p)).mean() == pytest.approx(
        (3 * math.log(2) + math.log(16)) / 4, rel=1e-6
    )
    assert np.asarray(fixation_nll(counts, log_p, "image")).mean() == pytest.approx(
        (math.log(2) + math.log(16)) / 2, rel=1e-6
    )
    with pytest.raises(ValueError, match="weighting"):
        gaze.FixationNLL(weighting="pixel")


def test_training_decreases_the_loss_and_beats_uniform(dataset):
    train, test = dataset.split(32)
    model = _student()
    base = gaze.fit_centre_bias(model, train)
    history = gaze.train_gaze(model, train, epochs=4, batch_size=8, learning_rate=3e-3)
    loss = history.history["loss"]
    assert loss[-1] < loss[0] - 0.05
    assert history.history["information_gain"][-1] > 0  # over uniform, bits/fixation
    scores = metrics.evaluate(model.predict(test.images, verbose=0), test, base)
    assert scores["log_likelihood"] > -math.log2(32 * 32)


def test_distillation_targets_and_distil(dataset):
    teacher, student = _student(seed=1), _student(seed=2)
    targets = gaze.distillation_targets(teacher, dataset, fixation_weight=0.1)
    np.testing.assert_allclose(targets.sum(axis=(1, 2)), 1.0, atol=1e-5)
    teacher_p = np.exp(teacher.predict(dataset.images, verbose=0))
    maps = dataset.fixation_maps()
    expected = 0.1 * maps / maps.sum(axis=(1, 2), keepdims=True) + 0.9 * teacher_p
    np.testing.assert_allclose(targets, expected, atol=1e-6)
    history = gaze.distil(student, teacher, dataset, epochs=3, learning_rate=3e-3)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_save_load_round_trip(tmp_path, dataset):
    model = _student()
    gaze.fit_centre_bias(model, dataset)
    gaze.train_gaze(model, dataset.subset(range(8)), epochs=1)
    path = tmp_path / "student.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: all registered
    x = dataset.images[:4]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert isinstance(loaded.loss, gaze.FixationNLL)
    # Rebuilding from the config alone restores the fixed blur through its registered initializer.
    rebuilt = keras.Model.from_config(model.get_config())
    np.testing.assert_allclose(
        rebuilt.get_layer("blur_x").kernel, model.get_layer("blur_x").kernel, rtol=1e-6
    )


def test_litert_parity(tmp_path, dataset):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = _student()
    gaze.fit_centre_bias(model, dataset)
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    for image in dataset.images[:3]:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        np.testing.assert_allclose(got, model(image[None]), atol=1e-4)


def test_deepgaze_enlarged_input_and_early_stopped_readout(dataset):
    from tfchannelprune.gaze import deepgaze

    keras.utils.set_random_seed(0)
    vgg = deepgaze.vgg16_features((*SIZE, 3), taps=("block3_conv3",), weights=None, upsample=2)
    assert vgg.output_shape == (None, 16, 16, 256)  # VGG16 on 64 px: block 3 at stride 4 of it
    assert vgg.layers[1].name == "enlarge"
    with pytest.raises(ValueError, match="upsample"):
        deepgaze.vgg16_features((*SIZE, 3), weights=None, upsample=0)
    train, val = dataset.subset(range(12)), dataset.subset(range(12, 20))
    feats = deepgaze.extract_features(vgg, dataset.images[:20])
    readout = deepgaze.build_readout(feats.shape[1:], SIZE, upsampling="matmul")
    history = deepgaze.train_readout(
        readout, feats[:12], train, epochs=6, batch_size=16, learning_rate=1e-2,
        validation=(feats[12:], val), patience=2,
    )  # fmt: skip
    # the best epoch's weights are restored: the readout scores its minimum validation loss
    now = readout.evaluate(feats[12:].astype(np.float32), val.fixation_maps(), verbose=0)
    now = now[0] if isinstance(now, list) else now
    assert now == pytest.approx(min(history.history["val_loss"]), rel=1e-4)
    with pytest.raises(ValueError, match="one map per image"):
        deepgaze.train_readout(readout, feats[:12], train, validation=(feats[12:], train))
