"""Tests for tfchannelprune.export and tfchannelprune.latency (tiny models, LiteRT on CPU)."""

from __future__ import annotations

import dataclasses
import os
import sys
import types

import ai_edge_litert  # noqa: F401 - in the [test] extra: missing is a failure, not a skip
import keras
import numpy as np
import pytest

from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.deploy import export, latency
from tfchannelprune.deploy.export import UnsupportedOpError, export_tflite
from tfchannelprune.deploy.latency import (
    benchmark_tflite,
    compare,
    latency_table,
    preferred_width,
    round_width,
)


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x), name="tiny")


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((48, 8, 8, 3)).astype("float32")


def _input_dtype(path: str):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path).get_input_details()[0]["dtype"]


def test_float_export_matches_keras_and_fills_report(tiny_model, tmp_path):
    path = tmp_path / "tiny.tflite"
    report = export_tflite(tiny_model, path)
    assert report.path == str(path)
    assert report.size_bytes == os.path.getsize(path) > 0
    assert report.quantize is None and report.top1_agreement is None
    assert report.max_rel_error <= 1e-4 and report.parity_ok
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(report.ops)
    assert "parity ok" in report.summary()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.parity_ok = False


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_reduced_precision_within_bound(tiny_model, data, tmp_path, quantize):
    report = export_tflite(tiny_model, tmp_path / "m.tflite", quantize, sample_inputs=data[:8])
    assert report.parity_ok
    assert report.max_rel_error <= export.PARITY_BOUNDS[quantize]


def test_int8_quantises_io_and_agrees_on_top1(tiny_model, data, tmp_path):
    path = str(tmp_path / "int8.tflite")
    report = export_tflite(
        tiny_model, path, "int8", representative_data=data[:32], sample_inputs=data[32:]
    )
    assert _input_dtype(path) == np.int8
    assert report.top1_agreement is not None and report.top1_agreement >= 0.9
    assert report.max_rel_error <= export.PARITY_BOUNDS["int8"] and report.parity_ok


def test_parity_check_catches_a_wrong_output_scale(tiny_model, data, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "dequantize_output", lambda y, detail: y.astype(np.float64))
    with pytest.warns(UserWarning, match="differs from Keras"):
        report = export_tflite(
            tiny_model, tmp_path / "m.tflite", "int8", representative_data=data[:16]
        )
    assert not report.parity_ok


def test_int8_without_representative_data_is_rejected(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(tiny_model, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match="quantize='int4'"):
        export_tflite(tiny_model, tmp_path / "m.tflite", quantize="int4")
    assert not list(tmp_path.iterdir())


def test_sample_inputs_of_wrong_shape_are_rejected(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"shape=\(2, 4, 4, 3\)"):
        export_tflite(tiny_model, tmp_path / "m.tflite", sample_inputs=np.zeros((2, 4, 4, 3)))


def test_failed_conversion_leaves_existing_file_untouched(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export, "convert", fail)
    with pytest.raises(RuntimeError, match="exploded"):
        export_tflite(tiny_model, path)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_failed_write_leaves_no_temp_file(tiny_model, tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(export.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export_tflite(tiny_model, tmp_path / "m.tflite")
    assert not list(tmp_path.iterdir())


def test_unwritable_path_fails_before_converting(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "convert", lambda *a, **k: pytest.fail("converted anyway"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_tflite(tiny_model, tmp_path / "missing" / "m.tflite")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        export_tflite(tiny_model, tmp_path / "file" / "m.tflite")
    with pytest.raises(IsADirectoryError):
        export_tflite(tiny_model, tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_directory_is_rejected(tiny_model, tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            export_tflite(tiny_model, tmp_path / "m.tflite")
    finally:
        tmp_path.chmod(0o700)


class Inverse(keras.layers.Layer):
    """Matrix inverse: TFLite has no builtin kernel for it (needs the Flex delegate)."""

    def call(self, x):
        return keras.ops.inv(x)


def test_op_without_builtin_kernel_names_op_and_layer(tmp_path):
    inputs = keras.Input((4, 4))
    x = keras.layers.Dense(4, name="proj")(inputs)
    model = keras.Model(inputs, Inverse(name="my_inverse")(x))
    with pytest.raises(UnsupportedOpError, match="MatrixInverse") as info:
        export_tflite(model, tmp_path / "m.tflite")
    assert "MatrixInverse" in info.value.ops
    assert info.value.layers == ("my_inverse",)
    assert not list(tmp_path.iterdir())



def test_gated_model_is_compacted_before_conversion(tiny_model, tmp_path, monkeypatch):
    inputs = keras.Input((8, 8, 3))
    gated = keras.Model(inputs, tiny_model(ChannelGate()(inputs)))
    calls = []

    def compact(model, plan=None):
        calls.append(model)
        return tiny_model

    monkeypatch.setitem(
        sys.modules, "tfchannelprune.core.surgery", types.SimpleNamespace(compact=compact)
    )
    report = export_tflite(gated, tmp_path / "m.tflite")
    assert calls == [gated] and report.parity_ok


def test_wrapped_model_exports_compact_and_matches_gated_model(tiny_model, tmp_path):
    import tfchannelprune as tcp  # a renamed or missing public name fails here, never skips

    gated = tcp.wrap(tiny_model)
    group = next(g for g in tcp.ChannelGraph(gated).groups if g.prunable and g.size >= 4)
    tcp.set_kept_channels(gated, {group.name: list(range(group.size // 2))})
    full = export_tflite(tiny_model, tmp_path / "full.tflite")
    report = export_tflite(gated, tmp_path / "gated.tflite")
    assert report.parity_ok and report.max_rel_error <= 1e-4
    assert report.size_bytes < full.size_bytes
    assert "MUL" not in report.ops  # no gate multiplications left


def test_benchmark_reports_latency(tiny_model, tmp_path, capsys):
    path = export_tflite(tiny_model, tmp_path / "m.tflite").path
    report = benchmark_tflite(path, num_threads=1, runs=7, warmup=1)
    assert report.runs == 7 and report.num_threads == 1
    assert 0 < report.median_ms <= report.p90_ms
    speedup = compare(report, report.median_ms / 2, macs_before=4e6, macs_after=1e6)
    assert speedup.practical == pytest.approx(2.0)
    assert speedup.efficiency == pytest.approx(0.5)
    assert "practical/theoretical 0.50" in capsys.readouterr().out


def test_benchmark_missing_file_names_the_path(tmp_path):
    missing = str(tmp_path / "nope.tflite")
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        benchmark_tflite(missing)


def _step_table(tile: int = 32) -> dict:
    entries = [
        dict(
            dtype="float32",
            sweep="cout",
            kernel=3,
            spatial=16,
            cin=64,
            cout=w,
            median_ms=float(-(-w // tile)),
        )
        for w in range(8, 129, 4)
    ]
    return dict(entries=entries, cout_multiple={"float32": tile})


def test_preferred_width_follows_latency_steps():
    table = _step_table(32)
    assert preferred_width(40, table) == 64
    assert preferred_width(40, table, direction="down") == 32
    assert preferred_width(64, table) == 64
    assert preferred_width(20, table, direction="down") == 20  # nothing cheaper than one tile
    assert preferred_width(130, table) == 160
    assert round_width(37, 8) == 40 and round_width(3, 8) == 8
    with pytest.raises(ValueError, match="direction"):
        preferred_width(40, table, direction="sideways")


def test_shipped_width_table_loads():
    table = latency_table()
    assert table["entries"] and table["machine"]["cpu"] and table["date"]
    assert {e["dtype"] for e in table["entries"]} == {"float32", "int8"}
    assert preferred_width(8) >= 8


def _cli_main(monkeypatch):
    from tfchannelprune import cli

    return cli.main


def test_cli_export_and_bench_round_trip(tiny_model, data, tmp_path, monkeypatch, capsys):
    main = _cli_main(monkeypatch)
    model_path, data_path = str(tmp_path / "m.keras"), str(tmp_path / "x.npy")
    out = str(tmp_path / "m.tflite")
    tiny_model.save(model_path)
    np.save(data_path, data)
    argv = ["export", model_path, "-o", out, "--quantize", "int8", "--data", data_path]
    assert main(argv) == 0
    assert _input_dtype(out) == np.int8
    assert "parity ok" in capsys.readouterr().out
    assert main(["bench", out, "--threads", "1", "--runs", "3"]) == 0
    assert "median" in capsys.readouterr().out
    assert main(["bench", str(tmp_path / "gone.tflite")]) == 2
    assert "gone.tflite" in capsys.readouterr().err
    assert main(["export", model_path, "-o", str(tmp_path / "b.tflite"), "--quantize", "int8"]) == 2
    assert "representative_data" in capsys.readouterr().err
