"""Does a model with 2x / 4x / 8x fewer MACs run that much faster in LiteRT? Measure it.

Usage: ``TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/speedup.py [--quick]``

Three models (a small CNN, a ResNet-style CNN, MobileNetV2 alpha=0.35 at 96x96) are each cut
to 1/2, 1/4 and 1/8 of their MACs, exported float32 and int8 with `export_tflite` (parity checked)
and timed with `benchmark_tflite` (1 thread, XNNPACK). With `tfchannelprune.compact` available
the cuts are made by `compact(model, plan)` on every prunable `ChannelGraph` group; otherwise by
rebuilding the architecture with every conv width scaled, which is the same model a compaction
produces. Each cut is made twice: widths rounded to multiples of 8, and to the runtime's
latency steps read from the shipped width table with `preferred_width` (per dtype). BatchNorm
statistics are set from random data first so that int8 parity is meaningful on untrained
models. Writes ``benchmarks/results/speedup.{json,md}``; about 5 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import tempfile
import time

import keras
import numpy as np

from tfchannelprune.deploy.export import export_tflite
from tfchannelprune.deploy.latency import (
    benchmark_tflite,
    latency_table,
    preferred_width,
    round_width,
)

TARGETS = (1.0, 1 / 2, 1 / 4, 1 / 8)
TABLE = latency_table()  # the shipped conv width table
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def small_cnn() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for filters, pool in ((32, False), (32, True), (64, False), (64, True), (128, False)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.MaxPooling2D()(x) if pool else x
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="small_cnn")


def resnet_style() -> keras.Model:
    """ResNet-18-like: stem, three stages of two basic blocks (64, 128, 256), 64x64 input."""
    inputs = keras.Input((64, 64, 3))
    x = _conv_bn(inputs, 64, 3, strides=2)
    for stage, filters in enumerate((64, 128, 256)):
        for block in range(2):
            strides = 2 if stage and not block else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = _conv_bn(x, filters, 1, strides, relu=False)
            y = _conv_bn(x, filters, 3, strides)
            y = _conv_bn(y, filters, 3, relu=False)
            x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="resnet_style")


def _conv_bn(x, filters, kernel, strides=1, relu=True):
    x = keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x) if relu else x


def mobilenet_v2() -> keras.Model:
    # Logits, not softmax: an untrained 1000-way softmax is ~0.001 everywhere, below one int8
    # step of the softmax output (1/256), so int8 parity would fail for a reason real models lack.
    return keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(96, 96, 3), weights=None, classifier_activation=None
    )


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of Conv2D, DepthwiseConv2D and Dense layers, batch 1."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += math.prod(layer.output.shape[1:]) * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1] // layer.groups
            total += math.prod(layer.output.shape[1:]) * kh * kw * cin
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(layer.output.shape[1:]) * layer.input.shape[-1]
    return total


def kept_width(size: int, multiplier: float, dtype: str | None) -> int:
    """``size * multiplier`` rounded to a multiple of 8 (dtype None) or to the runtime's steps.

    Runtime rounding uses the shipped width table: the nearer of the widest width costing the
    same (`preferred_width` up) and the widest measurably faster one (down).
    """
    width = max(1, round(size * multiplier))
    if dtype is None:
        return min(size, round_width(width, 8))
    up = preferred_width(width, TABLE, dtype=dtype)
    down = preferred_width(width, TABLE, direction="down", dtype=dtype)
    return min(size, up if down == width or up - width <= width - down else down)


def scale_widths(model: keras.Model, multiplier: float, dtype: str | None) -> keras.Model:
    """Rebuild ``model`` with every conv (and hidden Dense) width cut by ``multiplier``.

    Coupled layers (both sides of an Add) have equal widths before, so they stay equal.
    """
    config = model.get_config()
    last = config["output_layers"][0][0]
    for layer in config["layers"]:
        layer.pop("build_config", None)  # it records the old input widths
        cfg = layer["config"]
        if layer["class_name"] == "Conv2D":
            cfg["filters"] = kept_width(cfg["filters"], multiplier, dtype)
        elif layer["class_name"] == "Dense" and cfg["name"] != last:
            cfg["units"] = kept_width(cfg["units"], multiplier, dtype)
    return keras.Model.from_config(config)


def cutter(model: keras.Model, dtype: str | None):
    """(multiplier -> MACs, multiplier -> cut model): ``compact`` with a plan."""
    import tfchannelprune

    graph = tfchannelprune.ChannelGraph(model)

    def plan(m):
        return {
            g.name: list(range(kept_width(g.size, m, dtype))) for g in graph.groups if g.prunable
        }

    return (
        lambda m: tfchannelprune.count_macs(graph, plan=plan(m)),
        lambda m: tfchannelprune.compact(model, plan=plan(m)),
    )


def shrink(model, target: float, dtype: str | None) -> keras.Model:
    """The cut model whose MACs are closest to ``target`` of the full model's.

    Scans width multipliers, coarse then fine: rounded widths move MACs in steps and fixed
    parts (stem, classifier) do not shrink, so no formula or fixed-point iteration is reliable.
    """
    macs_of, cut = cutter(model, dtype)
    full = count_macs(model)

    def best(grid):
        misses = [abs(math.log(macs_of(m) / full / target)) for m in grid]
        return int(np.argmin(misses))

    coarse = np.geomspace(0.05, 1.0, 13)
    i = best(coarse)
    fine = np.geomspace(coarse[max(i - 1, 0)], coarse[min(i + 1, 12)], 9)
    return cut(fine[best(fine)])


def calibrate_batchnorm(model: keras.Model, data: np.ndarray) -> None:
    """Set BatchNorm statistics to those of ``data`` (one pass with momentum 0).

    Untrained deep nets with unit BN statistics shrink activations layer by layer (MobileNetV2
    ends near 1e-10), which int8 cannot represent; real trained models do not.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(data, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def export(model, dtype, path) -> bool:
    """Export float32 or int8 (BatchNorm calibrated first); return whether parity held."""
    data = np.random.default_rng(0).standard_normal((32, *model.inputs[0].shape[1:]), "float32")
    calibrate_batchnorm(model, data)
    quantize = "int8" if dtype == "int8" else None
    report = export_tflite(model, path, quantize=quantize,
                           representative_data=data if quantize else None)  # fmt: skip
    return report.parity_ok


def variants(model, dtypes):
    """(target, dtype, rounding, model) for the full model and every cut of it."""
    by_8 = {t: shrink(model, t, None) for t in TARGETS if t != 1}
    for target, dtype in itertools.product(TARGETS, dtypes):
        if target == 1:
            yield target, dtype, "-", model
        else:
            yield target, dtype, "8", by_8[target]
            yield target, dtype, "runtime", shrink(model, target, dtype)


def run(builders, dtypes, runs, repeats) -> list[dict]:
    """Rows for every model x MACs target x dtype x width rounding (8, or runtime steps).

    A model's files are timed round-robin, ``repeats`` rounds, keeping each file's fastest
    median: other processes on a shared machine slow all variants alike instead of one.
    """
    rows = []
    method = "compact(model, plan)"
    with tempfile.TemporaryDirectory() as directory:
        for build in builders:
            model, start = build(), len(rows)
            for target, dtype, rounding, cut in variants(model, dtypes):
                path = os.path.join(directory, f"{len(rows)}.tflite")
                rows.append(
                    dict(
                        model=model.name,
                        dtype=dtype,
                        target=target,
                        rounding=rounding,
                        macs=count_macs(cut),
                        params=cut.count_params(),
                        path=path,
                        parity_ok=export(cut, dtype, path),
                        latency_ms=math.inf,
                        method=method if target != 1 else "none",
                    )
                )
            for _, row in itertools.product(range(repeats), rows[start:]):
                ms = benchmark_tflite(row["path"], num_threads=1, runs=runs, warmup=5).median_ms
                row["latency_ms"] = min(row["latency_ms"], ms)
            for row in rows[start:]:
                print(
                    f"{row['model']:20s} {row['dtype']:7s} 1/{1 / row['target']:.0f} "
                    f"{row['rounding']:7s}: {row['macs'] / 1e6:7.1f} M MACs, "
                    f"{row['latency_ms']:7.3f} ms"
                )
    for row in rows:
        del row["path"]
        base = next(
            r
            for r in rows
            if r["model"] == row["model"] and r["dtype"] == row["dtype"] and r["target"] == 1
        )
        row["macs_speedup"] = base["macs"] / row["macs"]
        row["latency_speedup"] = base["latency_ms"] / row["latency_ms"]
        row["efficiency"] = row["latency_speedup"] / row["macs_speedup"]
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# LiteRT speed-up vs MACs speed-up",
        "",
        f"{meta['date']}, {meta['cpu']}, 1 thread, XNNPACK, batch 1, min over {meta['repeats']} "
        f"medians of {meta['runs']} runs; cuts made by {meta['method']}. Widths rounded to "
        "multiples of 8, or to the runtime's latency steps (`preferred_width`). "
        f"Regenerate: `{meta['command']}`.",
        "",
        "| model | dtype | target | widths | MACs (M) | MACs speed-up | latency (ms) "
        "| latency speed-up | practical/theoretical | parity |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = "full" if r["target"] == 1 else f"1/{1 / r['target']:.0f}"
        widths = {"8": "x8"}.get(r["rounding"], r["rounding"])
        lines.append(
            f"| {r['model']} | {r['dtype']} | {target} | {widths} | {r['macs'] / 1e6:.1f} "
            f"| {r['macs_speedup']:.2f}x | {r['latency_ms']:.3f} | {r['latency_speedup']:.2f}x "
            f"| {r['efficiency']:.2f} | {'ok' if r['parity_ok'] else 'FAILED'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, one repeat")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(0)
    runs, repeats = (20, 1) if args.quick else (50, 3)
    rows = run((small_cnn, resnet_style, mobilenet_v2), ("float32", "int8"), runs, repeats)
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    meta = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        cpu=cpu,
        cores=os.cpu_count(),
        runs=runs,
        repeats=repeats,
        method=next(r["method"] for r in rows if r["method"] != "none"),
        command="TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/speedup.py",
        seconds=round(time.time() - start),
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speedup.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    with open(os.path.join(args.out, "speedup.md"), "w") as f:
        f.write(markdown(rows, meta))
    print(markdown(rows, meta))
    print(f"{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
