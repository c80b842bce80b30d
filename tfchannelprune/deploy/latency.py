"""LiteRT latency: benchmark a ``.tflite`` file, compare two, and widths the runtime likes.

`benchmark_tflite` times ``Interpreter.invoke`` with the default XNNPACK delegate. `compare`
puts the measured speed-up beside the MACs speed-up. `latency_table` loads the shipped
single-conv latency table (``benchmarks/widths.py`` regenerates it) and `preferred_width`
reads it: XNNPACK computes output channels in tiles, so widths inside one tile cost the same.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import os
import time

import numpy as np

from tfchannelprune.core.convention import keyword_only


@dataclasses.dataclass(frozen=True)
class LatencyReport:
    """Latency of one ``.tflite`` file, batch 1, in milliseconds."""

    path: str
    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    num_threads: int

    def summary(self) -> str:
        return (
            f"{self.path}: median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, "
            f"mean {self.mean_ms:.3f} ms ({self.runs} runs, {self.num_threads} thread(s))"
        )


@dataclasses.dataclass(frozen=True)
class Speedup:
    """Measured (practical) speed-up beside the MACs (theoretical) one.

    ``efficiency`` is practical / theoretical: 1.0 means latency fell exactly as MACs did.
    """

    practical: float
    theoretical: float | None
    efficiency: float | None

    def summary(self) -> str:
        if self.theoretical is None:
            return f"latency speed-up {self.practical:.2f}x"
        return (
            f"latency speed-up {self.practical:.2f}x, MACs speed-up {self.theoretical:.2f}x, "
            f"practical/theoretical {self.efficiency:.2f}"
        )


@keyword_only("num_threads", "runs", "warmup")
def benchmark_tflite(
    path: str | os.PathLike, *, num_threads: int = 1, runs: int = 50, warmup: int = 5
) -> LatencyReport:
    """Time a ``.tflite`` file in the LiteRT interpreter (XNNPACK delegate, batch 1).

    Inputs are random (uniform over the int range for integer inputs, standard normal for
    float); the timing is of ``invoke()`` alone.

    Args:
        path: The ``.tflite`` file.
        num_threads: Interpreter threads.
        runs: Timed invocations.
        warmup: Untimed invocations first (XNNPACK packs weights on the first).

    Returns:
        A `LatencyReport`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``runs`` or ``num_threads`` is below 1, or ``warmup`` below 0.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .tflite file. Received: path={path}")
    if runs < 1 or num_threads < 1 or warmup < 0:
        raise ValueError(
            "runs and num_threads must be >= 1 and warmup >= 0. "
            f"Received: runs={runs}, num_threads={num_threads}, warmup={warmup}"
        )
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(
            detail["index"], _random_input(rng, detail["shape"], detail["dtype"])
        )
    times = np.array(_time_invokes(interpreter, runs, warmup)) * 1e3
    return LatencyReport(
        path,
        float(np.median(times)),
        float(np.percentile(times, 90)),
        float(np.mean(times)),
        runs,
        num_threads,
    )


def _time_invokes(interpreter, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return times


def _random_input(rng, shape, dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@keyword_only("macs_before", "macs_after")
def compare(
    before: LatencyReport | float,
    after: LatencyReport | float,
    *,
    macs_before: float | None = None,
    macs_after: float | None = None,
) -> Speedup:
    """Print and return the latency speed-up beside the MACs speed-up.

    Args:
        before, after: `LatencyReport`s or median latencies in ms.
        macs_before, macs_after: MACs of the two models; both or neither.

    Example:

    >>> compare(10.0, 4.0, macs_before=4e6, macs_after=1e6).efficiency
    latency speed-up 2.50x, MACs speed-up 4.00x, practical/theoretical 0.62
    0.625
    """
    before_ms, after_ms = (getattr(r, "median_ms", r) for r in (before, after))
    if before_ms <= 0 or after_ms <= 0:
        raise ValueError(f"Latencies must be positive. Received: {before_ms=}, {after_ms=}")
    if (macs_before is None) != (macs_after is None):
        raise ValueError(
            f"Give both MACs counts or neither. Received: {macs_before=}, {macs_after=}"
        )
    practical = before_ms / after_ms
    theoretical = efficiency = None
    if macs_before is not None:
        theoretical = macs_before / macs_after
        efficiency = practical / theoretical
    result = Speedup(practical, theoretical, efficiency)
    print(result.summary())
    return result


# --- running .tflite files ----------------------------------------------------------------


def list_ops(flatbuffer: bytes) -> list[str]:
    """TFLite op names of a flatbuffer in execution order, before any delegate takes them."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    # _get_ops_details is the interpreter's only op listing; keep its use in this one place.
    return [op["op_name"] for op in interpreter._get_ops_details()]


def run_tflite(model: bytes | str | os.PathLike, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a `export_tflite` file (or its bytes) one sample at a time; float64 outputs.

    Args:
        model: flatbuffer bytes or a ``.tflite`` path with a ``serving_default`` signature whose
            inputs are ``input_0..`` and outputs ``output_0..`` (as `export_tflite` writes).
        inputs: one float array per model input, samples on axis 0; quantized here for int8.

    Returns:
        One array per model output, samples on axis 0, int8 outputs dequantized.
    """
    from ai_edge_litert.interpreter import Interpreter

    source = (
        {"model_content": model} if isinstance(model, bytes) else {"model_path": os.fspath(model)}
    )
    runner = Interpreter(**source).get_signature_runner("serving_default")
    in_details, out_details = runner.get_input_details(), runner.get_output_details()
    outputs = [[] for _ in out_details]
    for i in range(len(inputs[0])):
        feed = {f"input_{k}": x[i : i + 1] for k, x in enumerate(inputs)}
        result = runner(**{name: quantize_input(x, in_details[name]) for name, x in feed.items()})
        for k, out in enumerate(outputs):
            out.append(dequantize_output(result[f"output_{k}"], out_details[f"output_{k}"]))
    return [np.concatenate(out) for out in outputs]


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float ``x`` in the dtype of an interpreter input (scale and zero point for int8)."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer) or np.issubdtype(x.dtype, np.integer):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """An interpreter output as float64 (int8 outputs mapped back with scale and zero point)."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float64) - zero_point) * scale
    return y.astype(np.float64)


# --- widths the runtime likes -----------------------------------------------------------------


def round_width(width: int, multiple: int) -> int:
    """Round ``width`` to the nearest multiple of ``multiple`` (never below ``multiple``)."""
    if width < 1 or multiple < 1:
        raise ValueError(f"width and multiple must be >= 1. Received: {width=}, {multiple=}")
    return max(multiple, int(math.floor(width / multiple + 0.5)) * multiple)


@functools.cache
def _shipped_table() -> str:
    resource = importlib.resources.files("tfchannelprune") / "_data" / "conv_widths.json"
    return resource.read_text(encoding="utf-8")


def latency_table(path: str | os.PathLike | None = None) -> dict:
    """Load a conv latency table (``benchmarks/widths.py`` output); the shipped one by default.

    The dict has ``machine``, ``date``, ``settings`` and ``entries``: one per measured conv with
    ``dtype``, ``kernel``, ``spatial``, ``sweep`` (``"cout"`` or ``"cin"``), ``cin``, ``cout``
    and ``median_ms``; and ``cout_multiple``, the output-channel tile per dtype fitted from it.
    """
    if path is None:
        return json.loads(_shipped_table())
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def width_costs(table: dict | None = None, dtype: str = "float32") -> dict[int, float]:
    """Latency per output width, summed over the table's settings, relative to the widest.

    Summing (rather than averaging ratios) lets the slow, precisely timed settings dominate
    the microsecond ones whose timings are mostly noise.
    """
    table = latency_table() if table is None else table
    curves: dict[tuple, dict[int, float]] = {}
    for entry in table["entries"]:
        if entry["sweep"] == "cout" and entry["dtype"] == dtype:
            key = (entry["kernel"], entry["spatial"], entry["cin"])
            curves.setdefault(key, {})[entry["cout"]] = entry["median_ms"]
    if not curves:
        raise ValueError(f"The table has no output-width sweep for dtype. Received: {dtype=}")
    widths = sorted(set.intersection(*(set(c) for c in curves.values())))
    totals = [sum(c[w] for c in curves.values()) for w in widths]
    return {w: total / totals[-1] for w, total in zip(widths, totals, strict=True)}


def preferred_width(
    width: int,
    table: dict | None = None,
    *,
    direction: str = "up",
    dtype: str = "float32",
    tolerance: float = 0.1,
) -> int:
    """The output width to keep instead of ``width``, from measured conv latency.

    Args:
        width: The number of channels a pruner would keep.
        table: A `latency_table` dict; the shipped one when None.
        direction: ``"up"``: the widest width that costs no more than ``width`` (channels for
            free). ``"down"``: the widest width that is measurably faster than ``width``, or
            ``width`` when none is.
        dtype: ``"float32"`` or ``"int8"``: which measurements to use.
        tolerance: Relative latency difference treated as noise.

    Returns:
        A width; beyond the table, ``width`` rounded up (or down) to the fitted tile.

    Example:

    >>> preferred_width(40)  # XNNPACK on AVX-512 computes 32 output channels at a time
    64
    >>> preferred_width(40, direction="down")
    32
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down'. Received: {direction=}")
    if width < 1:
        raise ValueError(f"width must be >= 1. Received: {width=}")
    table = latency_table() if table is None else table
    costs = width_costs(table, dtype)
    widths = sorted(costs)
    if width > widths[-1]:
        multiple = table.get("cout_multiple", {}).get(dtype, 8)
        up = math.ceil(width / multiple) * multiple
        return up if direction == "up" else max(multiple, up - multiple)
    at = min(w for w in widths if w >= width)  # the measured width covering `width`
    cost = costs[at] * (1 + tolerance)
    if direction == "up":
        best = at
        for w in widths[widths.index(at) + 1 :]:
            if costs[w] > cost:
                break
            best = w
        return best
    faster = [w for w in widths if w < width and costs[w] * (1 + tolerance) < costs[at]]
    return max(faster) if faster else width
