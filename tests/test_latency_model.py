"""LatencyModel: measured per-group LiteRT latency tables, and latency in the selection.

Tiny models, two sampled widths, one timing round and a temporary cache keep this fast; the
MobileNetV2 / ResNet50 tables and the prediction error live in benchmarks/latency_pruning.py.
"""

from __future__ import annotations

import sys
import time

import keras
import numpy as np
import pytest

import tfchannelprune as tcp
from tfchannelprune.deploy import latency_measure
from tfchannelprune.prune import select

pytest.importorskip("ai_edge_litert")

FAST = {"fractions": (0.5,), "rounds": 1}


def _net(width=32, spatial=24):
    x = keras.Input((spatial, spatial, 3))
    y = keras.layers.Conv2D(width, 3, padding="same", name="c1")(x)
    y = keras.layers.BatchNormalization(name="bn1")(y)
    y = keras.layers.ReLU(name="r1")(y)
    y = keras.layers.Conv2D(2 * width, 3, padding="same", name="c2")(y)
    y = keras.layers.ReLU(name="r2")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(10, name="out")(y))


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    cache = tmp_path_factory.mktemp("latency_cache")
    model = _net()
    start = time.perf_counter()
    latency = tcp.LatencyModel(model, cache_dir=cache, **FAST)
    first = time.perf_counter() - start
    return model, latency, cache, first


def test_units_fold_batchnorm_and_activations(table):
    _, latency, _, _ = table
    paths = [u.paths for u in latency.units]
    assert ("c1", "bn1", "r1") in paths and ("c2", "r2") in paths
    # c2's unit reads c1's group and writes its own: two curves, multiplied
    unit = next(u for u in latency.units if u.paths[0] == "c2")
    assert set(unit.curves) == {"c1", "c2"}


def test_prediction_is_calibrated_and_falls_with_width(table):
    _, latency, _, _ = table
    assert latency.full_ms > 0 and latency.predict() == pytest.approx(latency.full_ms)
    widths = [latency.predict({"c2": w}) for w in (64, 32, 8)]
    assert widths[0] > widths[1] > widths[2]
    both = latency.predict({"c1": 8, "c2": 8})
    assert both < min(latency.predict({"c1": 8}), widths[2])
    with pytest.raises(ValueError, match="Unknown channel group"):
        latency.predict({"nope": 3})


def test_second_build_reads_the_cache(table):
    model, _, cache, first = table
    start = time.perf_counter()
    again = tcp.LatencyModel(model, cache_dir=cache, calibrate=False, **FAST)
    assert again.measured == 0
    assert time.perf_counter() - start < first


def test_prediction_tracks_a_measured_export(table):
    model, latency, _, _ = table
    small = tcp.compact(model, {"c1": range(8), "c2": range(16)})
    [row] = latency.check([small])
    assert row["predicted_ms"] < latency.full_ms and row["measured_ms"] < latency.full_ms
    assert abs(row["error"]) < 0.6  # loose: two cores shared with other jobs


def test_allowed_widths_are_ascending_and_end_at_full(table):
    _, latency, _, _ = table
    allowed = latency.allowed_widths("c2")
    assert allowed == sorted(allowed) and allowed[-1] == 64 and allowed[0] >= 1


def test_selection_meets_a_latency_target_through_the_table(table):
    model, latency, _, _ = table
    graph = tcp.ChannelGraph(tcp.wrap(model))
    scores = {g.name: np.arange(g.size, dtype=float) for g in graph.prunable_groups}
    target = 0.5 * latency.full_ms
    config = select.SelectionConfig(cost="latency", beta="auto", round_to="auto")
    masks = select.select_channels(graph, scores, {}, config, target_latency=target,
                                   latency=latency)  # fmt: skip
    widths = {n: int(m.sum()) for n, m in masks.items()}
    assert latency.predict(widths) <= target
    for name, width in widths.items():
        assert width in latency.allowed_widths(name)
    with pytest.raises(ValueError, match="need a LatencyModel"):
        select.select_channels(graph, scores, {}, config, target_latency=target)


def test_selection_config_checks_cost_and_round_to():
    assert select.SelectionConfig(round_to="auto", cost="latency").round_to == "auto"
    with pytest.raises(ValueError, match="cost must be one of"):
        select.SelectionConfig(cost="flops")
    with pytest.raises(ValueError, match="round_to must be an int or 'auto'"):
        select.SelectionConfig(round_to="fast")


def test_prune_to_a_latency_records_the_measured_export(table):
    model, latency, _, _ = table
    x = np.random.default_rng(0).standard_normal((16, 24, 24, 3)).astype("float32")
    y = np.arange(16) % 10
    result = tcp.prune(model, (x, y), "sparse_categorical_crossentropy", signal="l1_weight",
                       target_latency=0.5 * latency.full_ms, rounds=1, fine_tune_epochs=0,
                       latency_model=latency, verbose=0)  # fmt: skip
    record = result.history[-1]
    assert record["predicted_ms"] <= 0.5 * latency.full_ms + 1e-9
    assert record["latency_ms"] > 0 and record["macs_fraction"] < 1


@pytest.mark.parametrize("dtype, threads", [("int8", 1), ("float32", 2)])
def test_int8_and_threads(tmp_path, dtype, threads):
    model = _net(width=32, spatial=24)
    latency = tcp.LatencyModel(model, dtype=dtype, num_threads=threads, cache_dir=tmp_path,
                               **FAST)  # fmt: skip
    assert latency.predict() == pytest.approx(latency.full_ms)
    assert latency.predict({"c1": 8, "c2": 8}) < latency.predict()
    assert any(f"{dtype}-t{threads}" in p.name for p in tmp_path.iterdir())


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        tcp.LatencyModel(_net(8, 8), dtype="float16", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="num_threads must be an int >= 1"):
        tcp.LatencyModel(_net(8, 8), num_threads=0, cache_dir=tmp_path)


def test_a_non_model_or_unusable_cache_dir_is_refused_before_any_timing(tmp_path, monkeypatch):
    timed = []
    monkeypatch.setattr(latency_measure.MicroBench, "time", lambda *a, **k: timed.append(a))
    for bad in (None, "model.keras"):
        with pytest.raises(TypeError, match="Expected a keras.Model"):
            tcp.LatencyModel(bad, cache_dir=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="cache_dir"):
        tcp.LatencyModel(_net(8, 8), cache_dir=tmp_path / "file" / "cache")
    assert timed == []


def test_clear_error_without_litert(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        latency_measure.require_litert()


def test_channel_pruning_reads_the_table_not_an_export_per_event(table, monkeypatch):
    model, _, cache, _ = table
    latency = tcp.LatencyModel(model, cache_dir=cache, calibrate=False, **FAST)  # cached
    target = 0.6 * latency.predict()
    x = np.random.default_rng(0).standard_normal((32, 24, 24, 3)).astype("float32")
    y = np.arange(32) % 10
    gated = tcp.wrap(model)
    gated.compile("adam", "sparse_categorical_crossentropy")

    def no_export(self):
        raise AssertionError("exported at an event")

    monkeypatch.setattr(tcp.ChannelPruning, "measure_latency", no_export)
    pruning = tcp.ChannelPruning((x, y), "sparse_categorical_crossentropy", "l1_weight",
                                 target_latency=target, latency_model=latency,
                                 channels_per_step=None, verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[pruning])
    assert pruning.done and pruning.history[-1]["predicted_ms"] <= target
    assert pruning.final_latency_ms > 0


def _count_exports(monkeypatch) -> list:
    """Every model exported and timed (the table's calibration and measurements, the
    callback's ``measure_latency``), one entry per model."""
    exported = []
    many = tcp.LatencyModel.measure_many

    def counting(self, models, rounds=None):
        models = list(models)
        exported.extend(models)
        return many(self, models, rounds)

    def per_event(*args, **kwargs):
        raise AssertionError("an export per event")

    monkeypatch.setattr(tcp.LatencyModel, "measure_many", counting)
    monkeypatch.setattr(latency_measure, "exported_latency_ms", per_event)
    return exported


def test_channel_pruning_builds_its_table_and_times_one_export(tmp_path, monkeypatch):
    monkeypatch.setenv("TFCHANNELPRUNE_CACHE", str(tmp_path))  # the default cache_dir
    model = _net(width=16, spatial=8)
    first = tcp.LatencyModel(model, verbose=0)  # as a first fit would: now on disk
    target = 0.5 * (first.predict() + first.predict({"c1": 1, "c2": 1}))
    x = np.random.default_rng(0).standard_normal((32, 8, 8, 3)).astype("float32")
    y = np.arange(32) % 10
    gated = tcp.wrap(model)
    gated.compile("adam", "sparse_categorical_crossentropy")
    exported = _count_exports(monkeypatch)
    pruning = tcp.ChannelPruning(signal="l1_weight", target_latency=target, channels_per_step=6,
                                 verbose=0)  # fmt: skip
    gated.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[pruning])
    assert pruning.latency_model.measured == 0  # every timing came from the cache
    assert len(exported) == 1  # the final export; no calibration, nothing per event
    predicted = [r["predicted_ms"] for r in pruning.history]
    assert len(predicted) >= 2 and predicted == sorted(predicted, reverse=True)
    assert pruning.done and predicted[-1] <= target < predicted[0] + 1e-9
    assert predicted[-1] == pytest.approx(pruning.latency_model.predict_plan(gated))
    assert pruning.final_latency_ms > 0 and pruning.config.round_to == "auto"


def test_channel_pruning_without_litert_says_so_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        tcp.ChannelPruning(signal="l1_weight", target_latency=1.0)
    tcp.ChannelPruning(signal="l1_weight", target_macs=0.5)  # no table needed: no error


def test_confirming_a_latency_leaves_the_callers_table_as_it_was(table, monkeypatch):
    model, latency, _, _ = table
    before = list(latency.points)
    predicted = latency.predict({"c2": 32})
    macs = []

    def slow_device(self, small, rounds=None):  # 1.5x the table: recalibrate, retry
        macs.append(tcp.count_macs(small))
        return 1.5 * self.predict_plan(small)

    monkeypatch.setattr(tcp.LatencyModel, "measure", slow_device)
    x = np.random.default_rng(0).standard_normal((16, 24, 24, 3)).astype("float32")
    result = tcp.prune(model, (x, np.arange(16) % 10), "sparse_categorical_crossentropy",
                       signal="l1_weight", target_latency=0.5 * latency.full_ms, rounds=1,
                       fine_tune_epochs=0, latency_model=latency, verbose=0)  # fmt: skip
    assert len(macs) == 3 and macs[1] < macs[0]  # the copy was calibrated: a deeper cut
    assert latency.points == before and latency.predict({"c2": 32}) == predicted
    assert result.history[-1]["latency_ms"] > 0


def test_polynomial_schedule_lowers_the_latency_target_over_the_events():
    from tfchannelprune.prune.latency_events import LatencyTarget, schedule_progress

    assert schedule_progress("constant", 1, 4) == 1.0
    steps = [schedule_progress("polynomial", k, 4) for k in range(1, 6)]
    assert steps[0] == pytest.approx(1 - 0.75**3) and steps[3:] == [1.0, 1.0]
    target = LatencyTarget(2.0, table=object())  # a table given: LiteRT not needed yet
    target.original_ms = 10.0
    assert [target.target_at(p) for p in (0.0, 0.5, 1.0)] == [10.0, 6.0, 2.0]
