"""Measure LiteRT latency of single convs over channel widths; write the shipped width table.

Usage: ``TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/widths.py [--quick] [-o PATH]``

For each dtype (float32, int8), kernel (3x3, 1x1) and spatial size (32x32, 16x16) it sweeps the
output width with 64 input channels and the input width with 64 output channels, from 8 to 128
in steps of 4 (input widths in steps of 8; both doubled with ``--quick``), one conv per model, batch 1, 1 thread, XNNPACK. Writes
``tfchannelprune/_data/conv_widths.json`` with machine info, the date and ``cout_multiple``: the
output-channel tile that best explains the latency steps. About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time

import keras
import numpy as np

from tfchannelprune.deploy.export import convert, write_atomic
from tfchannelprune.deploy.latency import width_costs

KERNELS = (3, 1)
SPATIAL = (32, 16)
DTYPES = ("float32", "int8")
FIXED_WIDTH = 64
TILE_CANDIDATES = (4, 8, 16, 32, 64)
DEFAULT_OUTPUT = os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "tfchannelprune", "_data", "conv_widths.json")
)


def conv_model(cin: int, cout: int, kernel: int, spatial: int) -> keras.Model:
    inputs = keras.Input((spatial, spatial, cin))
    return keras.Model(inputs, keras.layers.Conv2D(cout, kernel, padding="same")(inputs))


def median_latency_ms(flatbuffer: bytes, min_seconds: float = 0.03) -> float:
    """Median invoke time; enough runs to fill ``min_seconds`` (15 to 400 runs)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(0)
    if detail["dtype"] == np.int8:
        x = rng.integers(-128, 127, detail["shape"], dtype=np.int8)
    else:
        x = rng.standard_normal(detail["shape"]).astype(np.float32)
    interpreter.set_tensor(detail["index"], x)
    for _ in range(3):
        interpreter.invoke()
    start = time.perf_counter()
    interpreter.invoke()
    runs = int(np.clip(min_seconds / max(time.perf_counter() - start, 1e-6), 15, 400))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def measure(dtype: str, kernel: int, spatial: int, sweep: str, width: int) -> dict:
    cin, cout = (FIXED_WIDTH, width) if sweep == "cout" else (width, FIXED_WIDTH)
    model = conv_model(cin, cout, kernel, spatial)
    quantize = "int8" if dtype == "int8" else None
    data = None
    if quantize:
        data = [np.random.default_rng(0).standard_normal((8, spatial, spatial, cin), "float32")]
    ms = median_latency_ms(convert(model, quantize, data))
    return dict(
        dtype=dtype,
        kernel=kernel,
        spatial=spatial,
        sweep=sweep,
        cin=cin,
        cout=cout,
        macs=kernel * kernel * spatial * spatial * cin * cout,
        median_ms=round(ms, 5),
    )


def fit_tile(costs: dict[int, float]) -> int:
    """The tile m for which latency ~ a + b * ceil(width / m) fits the measured steps best."""
    widths = np.array(sorted(costs), dtype=float)
    y = np.array([costs[int(w)] for w in widths])
    errors = {}
    for m in TILE_CANDIDATES:
        design = np.stack([np.ones_like(widths), np.ceil(widths / m)], axis=1)
        _, residual, *_ = np.linalg.lstsq(design, y, rcond=None)
        errors[m] = float(residual[0]) if len(residual) else 0.0
    return min(errors, key=errors.get)


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    flags = []
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            info = f.read()
        names = [
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
        flag_line = next((line for line in info.splitlines() if line.startswith("flags")), "")
        wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
        flags = [f for f in wanted if f in flag_line.split()]
    return dict(
        cpu=cpu,
        cpu_flags=flags,
        cores=os.cpu_count(),
        platform=platform.platform(),
        python=sys.version.split()[0],
        litert=importlib.metadata.version("ai-edge-litert"),
        tensorflow=importlib.metadata.version("tensorflow-cpu")
        if _installed("tensorflow-cpu")
        else importlib.metadata.version("tensorflow"),
        keras=keras.__version__,
    )


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help="widths in steps of 8")
    args = parser.parse_args(argv)
    step = 8 if args.quick else 4
    # Latency grows linearly with input width (see the table), so that sweep can be coarser.
    widths = dict(cout=range(8, 129, step), cin=range(8, 129, 2 * step))
    start = time.time()
    entries = []
    for dtype in DTYPES:
        for kernel in KERNELS:
            for spatial in SPATIAL:
                for sweep in ("cout", "cin"):
                    entries += [measure(dtype, kernel, spatial, sweep, w) for w in widths[sweep]]
                print(f"{dtype} {kernel}x{kernel} {spatial}x{spatial}: {time.time() - start:.0f} s")
    table = dict(
        description="LiteRT latency of one Conv2D (padding same, batch 1, 1 thread, XNNPACK); "
        f"'cout' sweeps keep cin={FIXED_WIDTH}, 'cin' sweeps keep cout={FIXED_WIDTH}.",
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=machine_info(),
        settings=dict(
            kernels=KERNELS,
            spatial=SPATIAL,
            dtypes=DTYPES,
            widths={k: list(v) for k, v in widths.items()},
            num_threads=1,
            fixed_width=FIXED_WIDTH,
        ),
        entries=entries,
    )
    table["cout_multiple"] = {d: fit_tile(width_costs(table, d)) for d in DTYPES}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_atomic(args.output, json.dumps(table, indent=1).encode())
    print(
        f"wrote {args.output} in {time.time() - start:.0f} s; cout tile: {table['cout_multiple']}"
    )
    for dtype in DTYPES:
        costs = width_costs(table, dtype)
        print(dtype, " ".join(f"{w}:{c:.2f}" for w, c in costs.items() if w % 8 == 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
