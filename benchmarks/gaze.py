"""The FastGaze headline (Theis et al. 2018): >= 10x fewer MACs than the teacher at the same AUC?

Usage: ``TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/gaze.py [--quick]``

Synthetic 64x64 scenes with known fixation densities (`gaze.make_dataset`: 560 train, 120
validation, 240 held-out test images, 40 fixations each). A VGG-11-like teacher is trained on
the fixations, a FastGaze-style student is distilled from it (0.1 fixations + 0.9 teacher), and
the student is Fisher-pruned one channel every 5 steps with the MACs cost term (beta="auto" and
beta=1e-3), fine-tuned on the distillation targets, at 10, 15, 20, 30 and 50x fewer MACs than
the teacher (`gaze.experiment.run_experiment`).

The headline model is the cheapest pruned student whose *validation* AUC-Judd is within 0.5
points of the teacher's; its *test* scores are reported: the MACs ratio, the AUC difference,
the explained information gain (IG over the centre bias / the gold standard's IG, exact here)
and the LiteRT latency (batch 1, 1 thread, XNNPACK; min over 3 interleaved rounds of the median
of 100 runs) of teacher and pruned student, float32 and int8. Writes
``benchmarks/results/gaze.{json,md}``; about 6 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import tempfile

from tfchannelprune import gaze
from tfchannelprune.deploy.latency import benchmark_tflite
from tfchannelprune.gaze.experiment import ExperimentConfig, cheapest_within, run_experiment

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TOLERANCE = 0.005  # 0.5 AUC points


def latencies(result, chosen_model, runs: int, rounds: int) -> dict:
    """Export teacher and chosen student, float32 and int8, and time them round-robin."""
    files, out = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("teacher", result.teacher), ("pruned", chosen_model)):
            for dtype, quantize in (("float32", None), ("int8", "int8")):
                done = gaze.export_gaze(
                    model, os.path.join(tmp, f"{name}_{dtype}.tflite"), quantize=quantize,
                    representative_data=result.train.images[:200] if quantize else None,
                    sample_inputs=result.test.images[:32],
                )  # fmt: skip
                files[(name, dtype)] = done.path
                out[f"{name}_{dtype}"] = {
                    "size_kb": done.report.size_bytes / 1024,
                    "max_abs_error_vs_keras": done.report.max_abs_error,
                    "max_abs_logsumexp": done.max_abs_logsumexp,
                    "parity_ok": done.report.parity_ok,
                    "median_ms": float("inf"),
                }
        for _ in range(rounds):  # interleaved: a busy machine slows all files alike
            for (name, dtype), path in files.items():
                ms = benchmark_tflite(path, num_threads=1, runs=runs, warmup=10).median_ms
                entry = out[f"{name}_{dtype}"]
                entry["median_ms"] = min(entry["median_ms"], ms)
    return out


def headline(rows, chosen, timing) -> dict:
    teacher = next(r for r in rows if r["model"] == "teacher")
    at_10x = {
        str(beta): min(
            (r for r in rows if r["model"] == "pruned" and r["beta"] == beta),
            key=lambda r: abs(r["teacher_ratio"] - 10),
        )  # fmt: skip
        for beta in dict.fromkeys(r["beta"] for r in rows if r["model"] == "pruned")
    }
    auc_diff = chosen["auc_judd"] - teacher["auc_judd"]
    return {
        "macs_ratio": chosen["teacher_ratio"],
        "beta": chosen["beta"],
        "teacher_auc_judd": teacher["auc_judd"],
        "pruned_auc_judd": chosen["auc_judd"],
        "auc_difference_points": 100 * auc_diff,
        "teacher_explained_ig": teacher["explained_information_gain"],
        "pruned_explained_ig": chosen["explained_information_gain"],
        "latency_speedup_float32": timing["teacher_float32"]["median_ms"]
        / timing["pruned_float32"]["median_ms"],
        "latency_speedup_int8": timing["teacher_int8"]["median_ms"]
        / timing["pruned_int8"]["median_ms"],
        "passed": bool(chosen["teacher_ratio"] >= 10 and auc_diff >= -TOLERANCE),
        "auc_difference_points_at_10x": {
            beta: 100 * (r["auc_judd"] - teacher["auc_judd"]) for beta, r in at_10x.items()
        },
    }


def markdown(rows, head, timing, meta) -> str:
    verdict = "PASSED" if head["passed"] else "NOT MET"
    lines = [
        "# Gaze: Fisher-pruned student vs teacher (Theis et al. 2018 headline)",
        "",
        f"{meta['date']}, {meta['machine']}; {meta['setting']}. Regenerate: "
        "`TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/gaze.py`.",
        "",
        f"**Headline ({verdict})**: the pruned student (beta={head['beta']}) needs "
        f"**{head['macs_ratio']:.1f}x fewer MACs** than the teacher; held-out AUC-Judd "
        f"{head['pruned_auc_judd']:.4f} vs {head['teacher_auc_judd']:.4f} "
        f"({head['auc_difference_points']:+.2f} points; criterion >= -0.5); explained "
        f"information gain {head['pruned_explained_ig']:.1%} vs "
        f"{head['teacher_explained_ig']:.1%}; LiteRT 1 thread "
        f"{timing['pruned_float32']['median_ms']:.3f} vs "
        f"{timing['teacher_float32']['median_ms']:.3f} ms float32 "
        f"({head['latency_speedup_float32']:.1f}x), {timing['pruned_int8']['median_ms']:.3f} vs "
        f"{timing['teacher_int8']['median_ms']:.3f} ms int8 "
        f"({head['latency_speedup_int8']:.1f}x). AUC difference of the ~10x students: "
        + ", ".join(f"beta={b}: {d:+.2f}" for b, d in head["auc_difference_points_at_10x"].items())
        + " points.",
        "",
        "| model | beta | MACs | teacher/MACs | AUC-Judd | val AUC | sAUC | IG (bits) | "
        "explained IG | NSS | CC | KL | SIM |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['beta'] if r['beta'] is not None else '-'} | {r['macs']:,} | "
            f"{r['teacher_ratio']:.1f}x | {r['auc_judd']:.4f} | {r['val_auc_judd']:.4f} | "
            f"{r['shuffled_auc']:.4f} | {r['information_gain']:.3f} | "
            f"{r['explained_information_gain']:.1%} | {r['nss']:.2f} | {r['cc']:.3f} | "
            f"{r['kl']:.3f} | {r['sim']:.3f} |"
        )
    lines += ["", "| LiteRT file | size (KiB) | median ms (1 thread) | max abs error vs Keras "
              "(nats) | max abs logsumexp |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, t in timing.items():
        lines.append(
            f"| {name} | {t['size_kb']:.1f} | {t['median_ms']:.3f} | "
            f"{t['max_abs_error_vs_keras']:.2e} | {t['max_abs_logsumexp']:.1e} |"
        )
    lines += ["", f"Gold-standard IG: {rows[0]['gold_information_gain']:.3f} bits/fixation. "
              f"Timings (s): {meta['timings_s']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--out", help=f"results folder (default {RESULTS}; a temp one if --quick)")
    args = parser.parse_args(argv)
    config = ExperimentConfig.quick() if args.quick else ExperimentConfig()
    result = run_experiment(config)
    rows = result.rows
    chosen = cheapest_within(rows, TOLERANCE)
    pruned_rows = [r for r in rows if r["model"] == "pruned"]
    model = [p for path in result.pruned.values() for p in path][pruned_rows.index(chosen)].model
    timing = latencies(result, model, runs=20 if args.quick else 100, rounds=1 if args.quick else 3)
    head = headline(rows, chosen, timing)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "setting": (
            f"{config.size[0]}x{config.size[1]} images, {config.n_train}/{config.n_val}/"
            f"{config.n_test} train/val/test, {config.fixations_per_image} fixations "
            f"each, teacher width {config.teacher_width}, student width "
            f"{config.student_width}, seed {config.seed}"
        ),  # fmt: skip
        "config": dataclasses.asdict(config),
        "timings_s": {k: round(v, 1) for k, v in result.timings.items()},
    }
    report = markdown(rows, head, timing, meta)
    print(report)
    out = args.out or (tempfile.mkdtemp(prefix="gaze_bench_") if args.quick else RESULTS)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gaze.json"), "w") as f:
        json.dump({"meta": meta, "headline": head, "rows": rows, "latency": timing}, f, indent=2)
    with open(os.path.join(out, "gaze.md"), "w") as f:
        f.write(report)
    print(f"wrote {out}/gaze.json and gaze.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
