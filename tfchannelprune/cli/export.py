"""``tfchannelprune export`` and ``tfchannelprune bench``."""

from __future__ import annotations

import argparse
import os

import numpy as np

from tfchannelprune.cli.files import load_model_file
from tfchannelprune.deploy.export import QUANTIZE_MODES, check_writable, export_tflite
from tfchannelprune.deploy.latency import benchmark_tflite, compare


def register(subparsers) -> None:
    """Add the ``export`` and ``bench`` sub-commands to the `tfchannelprune` CLI."""
    export = subparsers.add_parser("export", help="Convert a .keras model to .tflite.")
    export.add_argument("model", help="a .keras model (gated or compact)")
    export.add_argument("-o", "--output", help="the .tflite path (default: beside the model)")
    export.add_argument("--quantize", choices=[m for m in QUANTIZE_MODES if m], default=None)
    export.add_argument(
        "--data", help=".npy/.npz of model inputs (samples on axis 0): int8 calibration and parity"
    )
    export.set_defaults(func=_run_export)
    bench = subparsers.add_parser("bench", help="Measure LiteRT latency of .tflite files.")
    bench.add_argument("paths", nargs="+", help="one .tflite file, or two to compare")
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--runs", type=int, default=50)
    bench.add_argument("--warmup", type=int, default=5)
    bench.set_defaults(func=_run_bench)


def _run_export(args: argparse.Namespace) -> int:
    output = args.output or os.path.splitext(args.model)[0] + ".tflite"
    check_writable(output)
    model = load_model_file(args.model, compile=True)
    data = load_inputs(args.data) if args.data else None
    report = export_tflite(
        model,
        output,
        quantize=args.quantize,
        representative_data=data if args.quantize == "int8" else None,
        sample_inputs=None if data is None else [x[:32] for x in data],
    )
    print(report.summary())
    return 0 if report.parity_ok else 1


def _run_bench(args: argparse.Namespace) -> int:
    if len(args.paths) > 2:
        raise ValueError(f"bench takes one or two .tflite files. Received: paths={args.paths}")
    reports = [benchmark_tflite(p, num_threads=args.threads, runs=args.runs, warmup=args.warmup)
               for p in args.paths]
    for report in reports:
        print(report.summary())
    if len(reports) == 2:
        compare(*reports)
    return 0


def load_inputs(path: str) -> list[np.ndarray]:
    """Load model inputs from a .npy (one input) or .npz (one array per input, in order)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such data file. Received: data={path}")
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return [loaded]
    with loaded:
        return [loaded[name] for name in loaded.files]
