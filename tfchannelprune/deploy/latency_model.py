"""``LatencyModel``: a measured LiteRT latency table of a Keras model, per channel group.

The approach of NetAdapt (Yang et al., ECCV 2018, arXiv:1804.03230) and HALP (Shen et al.,
NeurIPS 2022, arXiv:2210.06659): time the layers once per width on the target runtime, and
predict any pruned model's latency from the table instead of exporting it.

The model is cut into units (``latency_measure``: a leaf call and the BatchNorm / activation
calls LiteRT folds into it). For every prunable group, each unit it touches is timed as a
micro-model at a few kept widths of that group (the others whole): a unit's latency along one
group is a curve, interpolated between the sampled widths, and stepped when a probe inside an
XNNPACK tile shows that the tile costs the same at any width (output channels are computed in
tiles; input channels are not). A unit touched by several groups (a conv between two) takes
the product of its curves' ratios. The sum over units, mapped (piecewise linear) onto three
measured exports (the whole model, every group cut to 1/2 and 1/4), is the prediction;
`LatencyModel.check` reports its error on other pruned exports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping

import keras
import numpy as np

from tfchannelprune.core.gate import is_wrapped
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.wrap import strip
from tfchannelprune.deploy import latency_measure as measure

FRACTIONS = (0.75, 0.5, 0.25, 0.125)
CALIBRATION = (0.5, 0.25)
# XNNPACK on this machine (AVX-512): 1x1 convs step every 16 output channels, depthwise convs
# are slower at widths off a multiple of 8 (65 channels cost more than 80); see docs/export.md
TILE = 16  # uniform cuts exported and timed, besides the whole model
# round_to="auto": a narrower width saving under half the group's mean rate is "not faster"
SLOW_SAVING = 0.5


@dataclasses.dataclass(frozen=True)
class Curve:
    """One unit's latency (ms, overhead removed) along one group's kept width."""

    widths: tuple[int, ...]
    ms: tuple[float, ...]
    stepped: bool
    tile: int

    def __call__(self, width: int) -> float:
        size = self.widths[-1]
        if self.stepped and width > self.tile:
            width = min(size, math.ceil(width / self.tile) * self.tile)
        return float(np.interp(width, self.widths, self.ms))

    def ratio(self, width: int) -> float:
        full = self.ms[-1]
        return self(width) / full if full > 0 else 1.0


@dataclasses.dataclass(frozen=True)
class Unit:
    paths: tuple[str, ...]
    ms: float  # at full width, overhead removed
    curves: Mapping[str, Curve]

    def at(self, widths: Mapping[str, int]) -> float:
        value = self.ms
        for name, curve in self.curves.items():
            if name in widths:
                value *= curve.ratio(widths[name])
        return value


class LatencyModel:
    """Predicted LiteRT latency (ms, batch 1, XNNPACK) of a model at any kept widths.

    Args:
        model: a Keras model (wrapped or not) with fixed input shapes.
        dtype: ``"float32"`` or ``"int8"`` (full integer, calibrated on random inputs).
        num_threads: interpreter threads.
        cache_dir: where measurements are kept (default ``~/.cache/tfchannelprune/latency``,
            or ``$TFCHANNELPRUNE_CACHE/latency``); a second build of the same layers is instant.
        rounds: interleaved timing rounds (fastest invoke per round, median over rounds).
        fractions: kept fractions sampled per group (rounded up to ``tile``), besides the
            full width, one tile, 8 and a probe just past a tile boundary.
        tile: the channel step sampled widths are aligned to; a curve is "stepped" when the
            probe (first width of a tile) costs as much as the tile's end (XNNPACK computes
            output channels and depthwise channels in such tiles; input channels cost
            linearly), and is then read at the width rounded up to the tile.
        calibrate: export and time the whole model and every group cut to 1/2 and 1/4, and
            map the sum of units onto them (piecewise linear); without, the plain sum.
        verbose: 1 prints progress.

    Attributes:
        sizes: {group: full width}; ``full_ms``: the measured unpruned model (when calibrated);
        ``points``: calibration (sum of units, measured ms), `add_point` adds one;
        ``build_seconds``; ``measured``: micro-models timed in this build (0 when all cached).

    Raises:
        ImportError: LiteRT (``ai_edge_litert``) is not installed.
        ValueError: unknown dtype or num_threads < 1.

    Example:

    >>> table = LatencyModel(model, dtype="float32", num_threads=1)
    >>> table.predict({"conv1": 16})          # ms with conv1's group at 16 channels
    """

    def __init__(self, model, *, dtype: str = "float32", num_threads: int = 1,
                 cache_dir=None, rounds: int = 3, fractions=FRACTIONS, tile: int = TILE,
                 calibrate: bool = True, verbose: int = 1):  # fmt: skip
        if dtype not in measure.DTYPES:
            raise ValueError(f"dtype must be one of {measure.DTYPES}. Received: dtype={dtype!r}")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1. Received: {num_threads=}")
        start = time.perf_counter()
        self.bench = measure.MicroBench(num_threads, rounds)  # raises without LiteRT
        self.dtype, self.num_threads = dtype, num_threads
        # ChannelGraph raises the TypeError that says what is taken for a non-model
        self.model = strip(model) if isinstance(model, keras.Model) and is_wrapped(model) else model
        self.graph = ChannelGraph(self.model)
        self.cache = measure.LatencyCache(cache_dir, dtype, num_threads)  # a bad path: now
        self.sizes = {g.name: g.size for g in self.graph.prunable_groups}
        self.tile = tile
        self.fractions, self.verbose = tuple(fractions), verbose
        self.measured = 0
        self.overhead_ms = self._timed({"overhead": measure.overhead_model})["overhead"]
        self.units = self._build_units()
        self.full_ms, self.points = None, []  # calibration: (sum of units, measured ms)
        self._by_group = {n: [u for u in self.units if n in u.curves] for n in self.sizes}
        if calibrate:
            self._calibrate()
        self.cache.save()
        self.build_seconds = time.perf_counter() - start

    def _calibrate(self) -> None:
        """Export and time (interleaved) the whole model and every group cut to each of
        ``CALIBRATION`` of its width; map the sum of units onto them. The three timings are
        cached like the units' (keyed by every unit's key), so a second build exports nothing."""
        from tfchannelprune.core.surgery import compact

        plans = [{}] + [{n: range(max(1, round(size * f))) for n, size in self.sizes.items()}
                        for f in CALIBRATION if self.sizes]  # fmt: skip
        text = json.dumps([self._unit_keys, list(self.sizes.values()), CALIBRATION])
        keys = [f"calibration-{hashlib.sha1(text.encode()).hexdigest()}-{i}"
                for i in range(len(plans))]  # fmt: skip
        if not all(k in self.cache.values for k in keys):
            models = [compact(self.model, plan) if plan else self.model for plan in plans]
            self.cache.values.update(zip(keys, self.measure_many(models), strict=True))
        measured = [self.cache.values[k] for k in keys]
        self.full_ms = measured[0]
        for plan, ms in zip(plans, measured, strict=True):
            self.add_point({n: len(k) for n, k in plan.items()}, ms)

    def add_point(self, widths: Mapping[str, int], measured_ms: float) -> None:
        """Calibrate on one more measured export (``widths``: its groups' kept widths)."""
        raw = sum(u.at(self._check(widths)) for u in self.units)
        self.points = sorted([p for p in self.points if abs(p[0] - raw) > 1e-3 * raw]
                             + [(raw, float(measured_ms))])  # fmt: skip

    @property
    def scale(self) -> float:
        """Measured ms per ms of the units' sum, over the calibration range."""
        if len(self.points) < 2:
            return self.points[0][1] / self.points[0][0] if self.points else 1.0
        (r0, m0), (r1, m1) = self.points[0], self.points[-1]
        return (m1 - m0) / (r1 - r0) if m1 > m0 else m1 / r1

    def _calibrated(self, raw: float) -> float:
        """Piecewise linear through the calibration points, proportional beyond them."""
        if not self.points:
            return raw + self.overhead_ms
        raws, ms = zip(*self.points)
        if raw <= raws[0]:
            return raw * ms[0] / raws[0]
        if raw >= raws[-1]:
            return raw * ms[-1] / raws[-1]
        return float(np.interp(raw, raws, ms))

    # ------------------------------------------------------------------ building
    def _samples(self, size: int) -> tuple[list[int], int | None]:
        """Widths timed for a group of ``size`` channels, and a probe inside a tile."""
        tile = self.tile
        up = [min(size, math.ceil(size * f / tile) * tile) for f in self.fractions]
        widths = sorted({size, min(size, tile), min(size, 8), *up} - {0})
        inside = [w for w in widths if w > tile and w - tile + 1 not in widths and w < size]
        if not inside:
            return widths, None
        middle = min(inside, key=lambda w: abs(w - size / 2))
        return widths, middle - tile + 1

    def _build_units(self) -> list[Unit]:
        todo, plans = {}, []
        for unit in measure.units_of(self.graph):
            names = measure.groups_of(self.graph, unit) & set(self.sizes)
            jobs = {None: ({}, 0)}
            for name in names:
                widths, probe = self._samples(self.sizes[name])
                for w in widths + ([probe] if probe else []):
                    mask = np.zeros(self.sizes[name], bool)
                    mask[:w] = True
                    jobs[(name, w)] = ({name: mask}, w)
            keys = {}
            for job, (masks, _) in jobs.items():
                key = measure.unit_key(self.graph, unit, masks, self.dtype, self.num_threads)
                keys[job] = key
                if key not in self.cache.values:
                    todo[key] = (unit, masks)
            plans.append((unit, names, keys))
        self._unit_keys = [sorted(keys.values()) for _, _, keys in plans]
        self._timed({k: (lambda u=u, m=m: measure.unit_model(self.graph, u, m))
                     for k, (u, m) in todo.items()})  # fmt: skip
        return [self._unit(unit, names, keys) for unit, names, keys in plans]

    def _unit(self, unit, names, keys) -> Unit:
        value = self.cache.values
        net = lambda key: max(value[key] - self.overhead_ms, 0.02 * value[key])  # noqa: E731
        curves = {}
        for name in sorted(names):
            widths, probe = self._samples(self.sizes[name])
            ms = [net(keys[(name, w)]) for w in widths]
            stepped = False
            if probe:
                at_probe = net(keys[(name, probe)])
                above = min(w for w in widths if w > probe)
                linear = float(np.interp(probe, widths, ms))
                stepped = abs(at_probe - ms[widths.index(above)]) < abs(at_probe - linear)
                if not stepped:
                    pairs = sorted(zip([*widths, probe], [*ms, at_probe]))
                    widths, ms = [p[0] for p in pairs], [p[1] for p in pairs]
            curves[name] = Curve(tuple(widths), tuple(ms), stepped, self.tile)
        return Unit(tuple(fn.path for fn, _ in unit), net(keys[None]), curves)

    def _timed(self, builders: Mapping[str, object], chunk: int = 48) -> dict[str, float]:
        """Build, convert and time the models not in the cache (interleaved, in chunks)."""
        keys = [k for k in builders if k not in self.cache.values]
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            flatbuffers = [measure.convert_micro(builders[k](), self.dtype) for k in part]
            for key, ms in zip(part, self.bench.time(flatbuffers), strict=True):
                self.cache.values[key] = ms
            self.measured += len(part)
            if self.verbose:
                print(f"[latency] timed {self.measured} micro-models")
        return {k: self.cache.values[k] for k in builders}

    # ------------------------------------------------------------------ queries
    def predict(self, widths: Mapping[str, int] | None = None) -> float:
        """Predicted latency in ms with each named group at its kept width (others whole)."""
        widths = self._check(widths or {})
        return self._calibrated(sum(u.at(widths) for u in self.units))

    def predict_plan(self, plan_or_model) -> float:
        """Predicted latency of a plan ({group: kept indices}) or a compact/wrapped model."""
        return self.predict(self.widths_of(plan_or_model))

    def widths_of(self, plan_or_model) -> dict[str, int]:
        """{group: kept width} of a plan or of a compact/wrapped model (groups by name)."""
        if isinstance(plan_or_model, Mapping):
            return {n: len(k) for n, k in plan_or_model.items()}
        from tfchannelprune.core.plans import gate_masks

        graph = ChannelGraph(plan_or_model)
        masks = gate_masks(graph) if is_wrapped(plan_or_model) else {}
        return {g.name: int(masks[g.name].sum()) if g.name in masks else g.size
                for g in graph.prunable_groups if g.name in self.sizes}  # fmt: skip

    def group_ms(self, name: str, widths: Mapping[str, int]) -> float:
        """Predicted ms of the units ``name`` touches, at ``widths`` (scaled)."""
        return self.scale * sum(u.at(widths) for u in self._by_group.get(name, ()))

    def neighbours(self, name: str) -> set[str]:
        """Groups sharing a unit with ``name`` (their costs change when it does)."""
        return {n for u in self._by_group.get(name, ()) for n in u.curves}

    def allowed_widths(self, name: str, tolerance: float = SLOW_SAVING) -> list[int]:
        """Widths worth keeping for ``name`` (ascending): each is measurably faster than the
        next wider allowed one (it saves at least ``tolerance`` x the group's mean ms per
        channel); the widths in between cost about the same and are skipped."""
        size = self.sizes[name]
        cost = [self.group_ms(name, {name: w}) for w in range(1, size + 1)]
        rate = (cost[-1] - cost[0]) / max(size - 1, 1)
        allowed, last = [size], cost[-1]
        for w in range(size - 1, 0, -1):
            if last - cost[w - 1] >= tolerance * rate * (allowed[-1] - w) and rate > 0:
                allowed.append(w)
                last = cost[w - 1]
        return sorted(allowed)

    def _check(self, widths: Mapping[str, int]) -> dict[str, int]:
        unknown = sorted(set(widths) - set(self.sizes))
        if unknown:
            raise ValueError(
                f"Unknown channel group(s) {unknown[:5]} for this latency model (groups of "
                f"{self.model.name!r}). Received: widths={dict(widths)}"
            )
        return dict(widths)

    # ------------------------------------------------------------------ measuring
    def measure(self, model, rounds: int | None = None) -> float:
        """Measured latency (ms) of ``model`` (compacted first when wrapped), as timed here."""
        return self.measure_many([model], rounds)[0]

    def measure_many(self, models, rounds: int | None = None) -> list[float]:
        """Measured latencies (ms) of several models, timed in interleaved rounds."""
        from tfchannelprune.core.surgery import compact

        flatbuffers = [measure.convert_micro(compact(m) if is_wrapped(m) else m, self.dtype)
                       for m in models]  # fmt: skip
        bench = measure.MicroBench(self.num_threads, rounds or max(self.bench.rounds, 5), 0.2, 10)
        return bench.time(flatbuffers)

    def check(self, models) -> list[dict]:
        """Predicted vs measured latency of compact (or wrapped) models; the relative error."""
        rows = []
        models = list(models)
        for model, measured in zip(models, self.measure_many(models), strict=True):
            predicted = self.predict_plan(model)
            rows.append({"predicted_ms": predicted, "measured_ms": measured,
                         "error": predicted / measured - 1})  # fmt: skip
        return rows

