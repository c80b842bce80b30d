"""Dynamic channel execution (Spasov & Lio 2019, CUCB) on real MNIST digits (4,000 / 1,000).

For the small CNN and the ResNet-style CNN of ``tfchannelprune.models``:

* dense: the model trained normally for ``--epochs`` epochs;
* dynamic: the same initial weights trained ``--dynamic-epochs`` epochs with
  ``DynamicChannelExecution(active_fraction)`` (half of every prunable group executed per
  step, gathered kernels), then the channels with the highest mean reward are kept
  (``final_fraction``), the model is compacted and fine-tuned for the remaining epochs, so
  both runs take the same number of steps;
* step time: dense and dynamic ``train_on_batch`` interleaved on the same batch (the CPU is
  shared, so pairs are compared and the median ratio is reported);
* executed MACs: forward MACs per example of a dynamic step (``count_macs`` at the active
  widths; full widths for layers on the masked fallback), against the dense model.

Usage: python benchmarks/dynamic.py [--epochs 10] [--dynamic-epochs 8] [--seed 0] [--coefs 1.2247,0.25]
Writes benchmarks/results/dynamic.json and dynamic.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF 2.21 oneDNN gradient bug

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier, resnet_cnn, small_cnn  # noqa: E402
from tfchannelprune.dynamic.callback import DynamicChannelExecution  # noqa: E402

MODELS = {"small_cnn": small_cnn, "resnet_cnn": resnet_cnn}
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--dynamic-epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--active-fraction", type=float, default=0.5)
    p.add_argument("--final-fractions", default="0.5,0.45,0.4")
    p.add_argument("--coefs", default=f"{math.sqrt(1.5):.4f}", help="e.g. 1.2247,0.25")
    p.add_argument("--timing-pairs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="small_cnn,resnet_cnn")
    p.add_argument("--name", default="dynamic", help="results file name (without extension)")
    return p.parse_args()


def accuracy(model, x, y) -> float:
    return float(model.evaluate(x, y, batch_size=100, verbose=0)[1])


class TrainTime(keras.callbacks.Callback):
    """Seconds spent in training epochs, validation excluded."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.seconds += time.perf_counter() - self._start


def fit_and_score(model, data, args, epochs, last, callbacks=()):
    """Train; return (final test accuracy, mean test accuracy after the ``last`` epochs).

    The mean smooths the epoch-to-epoch swing of a constant learning rate (about +-2 points
    on this small test set), and is what the accuracy loss is computed from."""
    x, y, xt, yt = data
    history = model.fit(
        x, y, batch_size=args.batch_size, epochs=epochs, validation_data=(xt, yt),
        callbacks=list(callbacks), verbose=0,
    )  # fmt: skip
    scores = history.history["val_accuracy"]
    return float(scores[-1]), float(np.mean(scores[-last:]))


def step_times(build, args, x, y) -> dict:
    """Median seconds per step, dense and dynamic, from interleaved train_on_batch calls."""
    xb, yb = tf.constant(x[: args.batch_size]), tf.constant(y[: args.batch_size])
    keras.utils.set_random_seed(args.seed)
    dense = compile_classifier(build())
    dynamic = compile_classifier(build())
    dyn = DynamicChannelExecution(active_fraction=args.active_fraction, seed=args.seed)
    dyn.set_model(dynamic)
    dyn.on_train_begin()  # installs the dynamic train step, as fit() does
    for _ in range(3):  # tracing
        dense.train_on_batch(xb, yb)
        dynamic.train_on_batch(xb, yb)
    td, ts = [], []
    for _ in range(args.timing_pairs):
        for model, out in ((dense, td), (dynamic, ts)):
            start = time.perf_counter()
            model.train_on_batch(xb, yb)
            out.append(time.perf_counter() - start)
    dyn.on_train_end()
    td, ts = np.array(td), np.array(ts)
    return {
        "dense_step_s": float(np.median(td)),
        "dynamic_step_s": float(np.median(ts)),
        "step_time_ratio": float(np.median(ts / td)),
    }


def run_dynamic(build, args, data, coef, dense_stats) -> list[dict]:
    x, y, xt, yt = data
    keras.utils.set_random_seed(args.seed)
    model = compile_classifier(build())
    dyn = DynamicChannelExecution(active_fraction=args.active_fraction, exploration_coef=coef,
                                  seed=args.seed)  # fmt: skip
    start = time.perf_counter()
    model.fit(
        x, y, batch_size=args.batch_size, epochs=args.dynamic_epochs, callbacks=[dyn], verbose=0
    )
    train_s = time.perf_counter() - start
    counts = dyn.bandit.play_counts()
    steps = int(dyn.bandit.t.numpy())
    ft_epochs = args.epochs - args.dynamic_epochs
    last = min(2, ft_epochs)
    rows = []
    for fraction in [float(f) for f in args.final_fractions.split(",")]:
        plan = dyn.plan(fraction)
        # share of the steps in which a kept channel ran (1.0: the bandit settled on it)
        kept_share = np.mean([counts[g][plan[g]].mean() / steps for g in plan])
        small = compile_classifier(dyn.compact(fraction))
        before = accuracy(small, xt, yt)
        acc, acc_mean = fit_and_score(small, data, args, ft_epochs, last)
        rows.append(
            {
                "exploration_coef": coef,
                "final_fraction": fraction,
                "steps": steps,
                "dynamic_train_s": train_s,
                "executed_macs": dyn.executed_macs,
                "executed_macs_ratio": dyn.executed_macs / dense_stats["macs"],
                "params": tcp.count_params(small),
                "params_reduction": dense_stats["params"] / tcp.count_params(small),
                "macs": tcp.count_macs(small),
                "accuracy_before_fine_tune": before,
                "accuracy": acc,
                "accuracy_mean_last": acc_mean,
                "accuracy_loss_points": 100 * (dense_stats["accuracy_mean_last"] - acc_mean),
                "kept_channels_play_share": float(kept_share),
            }
        )
        print(
            f"  c={coef:.3f} keep={fraction}: acc {before:.3f} -> {acc:.3f}, mean {acc_mean:.3f} "
            f"(dense {dense_stats['accuracy_mean_last']:.3f}), "
            f"params /{rows[-1]['params_reduction']:.2f}",
            flush=True,
        )
    return rows


def run_model(name, args, data) -> dict:
    build = MODELS[name]
    x, y, xt, yt = data
    keras.utils.set_random_seed(args.seed)
    dense = compile_classifier(build())
    clock = TrainTime()
    last = min(2, args.epochs - args.dynamic_epochs)
    acc, acc_mean = fit_and_score(dense, data, args, args.epochs, last, [clock])
    dense_stats = {
        "accuracy": acc,
        "accuracy_mean_last": acc_mean,
        "params": tcp.count_params(dense),
        "macs": tcp.count_macs(dense),
        "train_s": clock.seconds,
    }
    print(f"{name}: dense acc {acc:.3f}, mean of the last epochs {acc_mean:.3f}", flush=True)
    timing = step_times(build, args, x, y)
    print(
        f"  step {timing['dense_step_s'] * 1e3:.1f} ms dense, "
        f"{timing['dynamic_step_s'] * 1e3:.1f} ms dynamic, ratio {timing['step_time_ratio']:.2f}",
        flush=True,
    )
    rows = []
    for coef in [float(c) for c in args.coefs.split(",")]:
        rows += run_dynamic(build, args, data, coef, dense_stats)
    return {"dense": dense_stats, "timing": timing, "dynamic": rows}


def markdown(results, args) -> str:
    lines = [
        "# Dynamic channel execution (CUCB, Spasov & Lio 2019), MNIST subset 4,000 / 1,000",
        "",
        f"`python benchmarks/dynamic.py` (seed {args.seed}, batch {args.batch_size}, "
        f"active_fraction {args.active_fraction}): dense {args.epochs} epochs vs "
        f"{args.dynamic_epochs} dynamic epochs + {args.epochs - args.dynamic_epochs} epoch(s) "
        "of fine-tuning the compacted model (same number of steps). Step times: median of "
        f"{args.timing_pairs} interleaved dense/dynamic `train_on_batch` pairs on "
        f"{results['machine']} (shared CPU, load average {results['load_average']}). "
        "Targets: step time <= 0.6x, executed MACs <= 0.3x, params >= 4x fewer, "
        "accuracy loss <= 1.5 points.",
        "",
        "| model | dense acc (final / mean) | dense step ms | dynamic step ms | step ratio | "
        "fit s/epoch dense / dynamic | executed MACs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        t, d = r["timing"], r["dense"]
        lines.append(
            f"| {name} | {d['accuracy']:.3f} / {d['accuracy_mean_last']:.3f} | "
            f"{t['dense_step_s'] * 1e3:.1f} | "
            f"{t['dynamic_step_s'] * 1e3:.1f} | {t['step_time_ratio']:.2f}x | "
            f"{d['train_s'] / args.epochs:.1f} / "
            f"{r['dynamic'][0]['dynamic_train_s'] / args.dynamic_epochs:.1f} | "
            f"{r['dynamic'][0]['executed_macs_ratio']:.3f}x ({r['dynamic'][0]['executed_macs']:,} "
            f"of {d['macs']:,}) |"
        )
    lines += [
        "",
        "| model | c | kept | acc before FT | acc (final / mean) | loss (points, means) | "
        "params | params fewer | MACs | kept channels ran in |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        for row in r["dynamic"]:
            lines.append(
                f"| {name} | {row['exploration_coef']:.3f} | {row['final_fraction']} | "
                f"{row['accuracy_before_fine_tune']:.3f} | {row['accuracy']:.3f} / "
                f"{row['accuracy_mean_last']:.3f} | "
                f"{row['accuracy_loss_points']:+.1f} | {row['params']:,} | "
                f"{row['params_reduction']:.2f}x | {row['macs'] / r['dense']['macs']:.3f}x | "
                f"{100 * row['kept_channels_play_share']:.0f}% of steps |"
            )
    lines += [
        "",
        "Accuracy: test accuracy after the last epoch / mean over the last "
        f"{min(2, args.epochs - args.dynamic_epochs)} epochs (the loss compares the means: with a "
        "constant learning rate the last epoch alone swings by about 2 points). "
        "c = 1.225 is CUCB's sqrt(3/2) (the default); 'kept channels ran in': mean share of the "
        "dynamic steps in which the finally kept channels were executed (100%: the bandit had "
        "settled on them).",
        "",
    ]
    return "\n".join(lines)


def main():
    args = parse_args()
    if not 0 < args.dynamic_epochs < args.epochs:
        raise SystemExit(
            "--dynamic-epochs must be in [1, --epochs - 1] (the rest fine-tunes the compact "
            f"model). Received: --dynamic-epochs={args.dynamic_epochs} --epochs={args.epochs}"
        )
    data = load_mnist_subset(args.seed)
    start = time.perf_counter()
    results = {
        "args": vars(args),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": round(os.getloadavg()[0], 1),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "models": {name: run_model(name, args, data) for name in args.models.split(",")},
    }
    results["wall_s"] = time.perf_counter() - start
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    text = markdown(results, args)
    with open(os.path.join(RESULTS, f"{args.name}.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
