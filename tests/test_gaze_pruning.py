"""Fisher pruning of a gaze student with the cost term, compaction, LiteRT export and sidecar."""

import json

import keras
import numpy as np
import pytest

import tfchannelprune as tcp
from tfchannelprune import gaze
from tfchannelprune.deploy.latency import run_tflite
from tfchannelprune.gaze.export import log_density_normalisation_error

SIZE = (32, 32)
PRUNE = {"steps_per_event": 2, "calibration_size": 16, "batch_size": 8}


@pytest.fixture(scope="module")
def setup():
    train = gaze.make_dataset(32, size=SIZE, fixations_per_image=20, seed=0)
    keras.utils.set_random_seed(0)
    teacher = gaze.build_teacher((*SIZE, 3), width=4)
    student = gaze.build_student((*SIZE, 3), width=4, stages=3)
    for model in (teacher, student):
        gaze.fit_centre_bias(model, train)
    gaze.train_gaze(teacher, train, epochs=2, batch_size=8, learning_rate=3e-3)
    gaze.distil(student, teacher, train, epochs=2, batch_size=8, learning_rate=3e-3)
    targets = gaze.distillation_targets(teacher, train)
    return train, teacher, student, targets


@pytest.fixture(scope="module")
def pruned(setup):
    train, teacher, student, targets = setup
    return gaze.prune_student(
        student, teacher, train, target_macs=0.5, beta=1e-3, fine_tune_epochs=1,
        targets=targets, **PRUNE,
    )  # fmt: skip


def test_fisher_prune_with_beta_reaches_the_macs_target(setup, pruned):
    student = setup[2]
    before = tcp.count_macs(student)
    assert tcp.count_macs(pruned.gated) <= 0.5 * before
    assert pruned.macs == tcp.count_macs(pruned.model) == tcp.count_macs(pruned.gated)
    # one channel per event, as in the paper; the student itself is left untouched
    assert all(r["channels_removed_now"] <= 1 for r in pruned.history)
    assert pruned.history[-1]["target_reached"]
    assert tcp.count_macs(student) == before


@pytest.mark.parametrize("beta", ["auto", 1.0])
def test_fisher_prune_auto_and_float_beta(setup, beta):
    train, _, student, targets = setup
    gated, history = gaze.fisher_prune(
        student, train, targets, target_macs=0.6, beta=beta, channels_per_step=2, **PRUNE
    )
    assert tcp.count_macs(gated) <= 0.6 * tcp.count_macs(student)
    assert 0 < history[-1]["macs_fraction"] <= 0.6 and history[-1]["target_reached"]
    assert all(r["channels_removed_now"] <= 2 for r in history)


def test_compact_log_density_equals_the_gated_one(setup, pruned):
    images = setup[0].images[:8]
    small = tcp.compact(pruned.gated)
    assert small.count_params() < setup[2].count_params()
    np.testing.assert_allclose(small(images), pruned.gated(images), atol=1e-5)
    assert log_density_normalisation_error(small(images)) < 1e-5


def test_float_tflite_is_a_normalised_log_density_with_a_sidecar(setup, pruned, tmp_path):
    images = setup[0].images[:8]
    cb = {"source": "training fixations", "sigma": 0.05, "uniform_weight": 0.01}
    out = gaze.export_gaze(
        pruned.model, tmp_path / "gaze.tflite", sample_inputs=images, centre_bias=cb,
        metrics={"auc_judd": 0.8},
    )  # fmt: skip
    log_p = run_tflite(out.path, [images])[0]
    np.testing.assert_allclose(log_p, pruned.model(images), atol=1e-4)
    assert log_density_normalisation_error(log_p) < 1e-4
    assert out.max_abs_logsumexp < 1e-4 and out.report.parity_ok
    assert "LOG_SOFTMAX" in out.report.ops

    meta = json.loads((tmp_path / "gaze.json").read_text())
    assert meta == out.metadata and meta["model_file"] == "gaze.tflite"
    assert meta["input"]["shape"] == [1, *SIZE, 3] and meta["input"]["dtype"] == "float32"
    assert (
        meta["input"]["scale"] == pytest.approx(1 / 255)
        and "pixel / 255" in (meta["input"]["normalization"])
    )
    assert meta["input_shape"] == [1, *SIZE, 3] and meta["pixel_scale"] == "0-1"
    assert meta["output"] == "log_density" and meta["upsampling"]["output_size"] == list(SIZE)
    details = meta["output_details"]
    assert details["shape"] == [1, *SIZE] and "natural log" in details["log_base"]
    assert "exp(value) = 1" in meta["output_details"]["meaning"]
    assert meta["centre_bias"]["in_model"] and meta["centre_bias"]["sigma"] == 0.05
    assert meta["model"]["macs"] == pruned.macs and meta["metrics"] == {"auc_judd": 0.8}
    assert meta["checks"]["max_abs_logsumexp"] < 1e-4


def test_int8_export_states_its_error(setup, pruned, tmp_path):
    train = setup[0]
    out = gaze.export_gaze(
        pruned.model, tmp_path / "gaze_int8.tflite", quantize="int8",
        representative_data=train.images, include_centre_bias_map=True,
    )  # fmt: skip
    meta = out.metadata
    assert meta["input"]["dtype"] == "int8" and meta["output_details"]["dtype"] == "int8"
    q = meta["input"]["quantization"]
    assert q["scale"] == pytest.approx(1 / 255, rel=1e-4) and q["zero_point"] == -128
    assert meta["output_details"]["quantization"]["lowest_value"] == pytest.approx(-15.9375)
    checks = meta["checks"]
    assert checks["samples"] == 32 and 0 < checks["max_abs_error_vs_keras"] < 0.5
    assert 0 < checks["max_abs_logsumexp"] < 0.05  # int8 rounding, stated, not zero
    assert np.asarray(meta["centre_bias"]["log_density"]).shape == SIZE


def test_matmul_head_is_the_same_function_and_fast_to_export(setup, tmp_path):
    images = setup[0].images[:8]
    keras.utils.set_random_seed(3)
    layers_head = gaze.build_student((*SIZE, 3), width=4, stages=3)
    matmul_head = gaze.build_student((*SIZE, 3), width=4, stages=3, upsampling="matmul")
    for layer in matmul_head.layers:
        if layer.weights:
            layer.set_weights(layers_head.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(matmul_head(images), layers_head(images), atol=1e-5)
    kinds = {type(layer).__name__ for layer in matmul_head.layers}
    assert "BlurredUpsampling" in kinds and "DepthwiseConv2D" not in kinds
    # the head's two matmuls are counted: h*W*w + W*H*h MACs, 8x8 -> 32x32
    head = tcp.count_macs(matmul_head, per_layer=True)["upsample_blur"]
    assert head == 8 * 32 * 8 + 32 * 32 * 8
    path = tmp_path / "matmul.keras"
    matmul_head.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(images), matmul_head(images))
    out = gaze.export_gaze(matmul_head, tmp_path / "m.tflite", "int8", setup[0].images)
    assert "DEPTHWISE_CONV_2D" not in out.report.ops and out.report.parity_ok
    assert out.max_abs_logsumexp < 0.05


def test_errors(setup):
    train, teacher, student, targets = setup
    with pytest.raises(ValueError, match="one map per training image"):
        gaze.fisher_prune(student, train, targets[:4], target_macs=0.5)
    with pytest.raises(ValueError, match="the student's MACs"):
        gaze.pruning_path(student, teacher, train, [2 * tcp.count_macs(student)])
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match=r"one \(N, H, W\) log-density output"):
        gaze.export_gaze(other, "unused.tflite")
