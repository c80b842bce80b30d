"""Issue 13: an analogue of Theis et al.'s Table 1 (LeNet-5 on MNIST): Fisher with beta = 0,
beta > 0 and beta* ("auto"), at the error and cost they reach.

LeNet-5 (conv 6@5x5 same, pool, conv 16@5x5, pool, dense 120, 84, 10) on the bundled MNIST
subset (4,000 train / 1,000 test real digits, so errors are higher than on the 60,000-image
MNIST of the paper). Per seed a base model is trained; each variant then prunes a copy with
``ChannelPruning(signal="fisher", normalize="none", beta=..., frequency="step")``: Fisher
accumulated in the training steps, ``--per-event`` channels every ``--prune-every`` steps,
fine-tuning all along, down to 10% of the MACs. Test error is measured when the cost first
falls under 30%, 20%, 15% and 10% of the dense MACs, and after ``--tune-epochs`` more at 10%.
beta is a fixed price in nats per FLOP (FLOPs = 2 x MACs, per example).

Paper (Theis et al. 2018, arXiv:1801.05787, Table 1, full MNIST): unpruned 0.80% error at 100%;
Fisher beta=0 0.84% at 26%; beta>0 0.79% at 10%; beta* 0.86% at 17%.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/theis_lenet.py [--seeds 0 1]
Writes benchmarks/results/theis_lenet.json and theis_lenet.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _results import write_results  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier  # noqa: E402

L = keras.layers
THRESHOLDS = (0.30, 0.20, 0.15, 0.10)
VARIANTS = {"beta = 0": 0.0, "beta = 1e-7": 1e-7, "beta = 1e-6": 1e-6, "beta* (auto)": "auto"}


def lenet5() -> keras.Model:
    inp = keras.Input((28, 28, 1))
    x = L.MaxPooling2D()(L.Conv2D(6, 5, padding="same", activation="relu")(inp))
    x = L.MaxPooling2D()(L.Conv2D(16, 5, activation="relu")(x))
    x = L.Dense(120, activation="relu")(L.Flatten()(x))
    x = L.Dense(84, activation="relu")(x)
    return keras.Model(inp, L.Dense(10)(x), name="lenet5")


def error(model, x, y) -> float:
    logits = np.concatenate([np.asarray(model(x[i : i + 500], training=False))
                             for i in range(0, len(x), 500)])  # fmt: skip
    return float(np.mean(np.argmax(logits, 1) != y))


class AtThresholds(keras.callbacks.Callback):
    """Test error when the pruned cost first falls under each threshold."""

    def __init__(self, pruning, x, y):
        super().__init__()
        self.pruning, self.x, self.y, self.errors = pruning, x, y, {}

    def on_train_batch_end(self, batch, logs=None):
        if not self.pruning.history:
            return
        fraction = self.pruning.history[-1]["macs_fraction"]
        for t in THRESHOLDS:
            if fraction <= t and t not in self.errors:
                self.errors[t] = (error(self.model, self.x, self.y), fraction)


def run(base, beta, data, args, seed):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    gated = compile_classifier(tcp.wrap(base), learning_rate=args.lr)
    pruning = tcp.ChannelPruning(signal="fisher", normalize="none", beta=beta,
                                 target_macs=THRESHOLDS[-1], frequency="step",
                                 prune_every=args.prune_every, channels_per_step=args.per_event,
                                 verbose=0)  # fmt: skip
    probe = AtThresholds(pruning, x_test, y_test)
    gated.fit(x_train, y_train, epochs=args.prune_epochs, batch_size=64, verbose=0,
              callbacks=[pruning, probe])  # fmt: skip
    small = compile_classifier(tcp.compact(gated), learning_rate=args.lr)
    small.fit(x_train, y_train, epochs=args.tune_epochs, batch_size=64, verbose=0)
    return {
        "at": {str(t): probe.errors.get(t) for t in THRESHOLDS},
        "final_error": error(small, x_test, y_test),
        "final_macs_fraction": tcp.count_macs(small) / tcp.count_macs(base),
        "reached": bool(pruning.done),
        "events": len(pruning.history),
        "widths": [len(v) for v in tcp.get_kept_channels(gated).values()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=8, help="base training epochs")
    parser.add_argument("--prune-epochs", type=int, default=16)
    parser.add_argument("--tune-epochs", type=int, default=2)
    parser.add_argument("--prune-every", type=int, default=10, help="Theis: N = 10 steps")
    parser.add_argument("--per-event", type=int, default=1, help="Theis: one feature map")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--out", default="theis_lenet")
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    start = time.time()
    if args.render:
        saved = json.load(open(os.path.join(os.path.dirname(__file__), "results",
                                            f"{args.out}.json")))  # fmt: skip
        args = argparse.Namespace(**{**saved["args"], "render": True})
        return render(args, saved["results"], saved["dense_error"], start - saved["seconds"])
    results = {v: [] for v in VARIANTS}
    dense = []
    for seed in args.seeds:
        x_train, y_train, x_test, y_test = load_mnist_subset(seed=seed)
        data = ((x_train, y_train), (x_test, y_test))
        keras.utils.set_random_seed(seed)
        base = compile_classifier(lenet5())
        base.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
        dense.append(error(base, x_test, y_test))
        print(f"seed {seed}: dense error {dense[-1]:.4f}", flush=True)
        for name, beta in VARIANTS.items():
            r = run(base, beta, data, args, seed)
            results[name].append(r)
            print(f"  {name:<13} {r['at']} final {r['final_error']:.4f} at "
                  f"{r['final_macs_fraction']:.3f} widths {r['widths']}", flush=True)  # fmt: skip

    render(args, results, dense, start)


def render(args, results, dense, start) -> None:
    def cell(rs, t):
        got = [r["at"][str(t)] for r in rs if r["at"][str(t)] is not None]
        if len(got) < len(rs):
            return f"not reached ({len(got)}/{len(rs)} seeds)" if got else "not reached"
        return f"{100 * np.mean([e for e, _ in got]):.2f}%"

    lines = [
        f"LeNet-5, MNIST subset (4,000/1,000), seeds {args.seeds}; dense {args.epochs} epochs: "
        f"test error {100 * np.mean(dense):.2f}% +- {100 * np.std(dense):.2f}. Fisher "
        f"accumulated in the training steps, {args.per_event} channel(s) every "
        f"{args.prune_every} steps towards 10% of the MACs for {args.prune_epochs} epochs, then "
        f"{args.tune_epochs} fine-tuning epochs of the compact model. Error (mean over seeds) "
        "when the cost first falls under each fraction of the dense MACs, and at the end "
        "with the cost reached. Shared 2-core CPU.",
        "",
        "| Fisher variant | " + " | ".join(f"error @ {int(100 * t)}% cost" for t in THRESHOLDS)
        + " | final error | final cost | final widths (conv1, conv2, fc1, fc2) |",
        "|---|" + "---|" * (len(THRESHOLDS) + 3),
    ]
    for name, rs in results.items():
        final = np.mean([r["final_error"] for r in rs])
        cost = np.mean([r["final_macs_fraction"] for r in rs])
        widths = np.mean([r["widths"] for r in rs], axis=0)
        lines.append(f"| {name} | " + " | ".join(cell(rs, t) for t in THRESHOLDS)
                     + f" | {100 * final:.2f}% | {100 * cost:.0f}% | "
                     + ", ".join(f"{w:.1f}" for w in widths) + " |")  # fmt: skip
    lines += ["", "Paper (full MNIST, 60,000 digits): unpruned 0.80% at 100%; beta=0 0.84% at "
              "26%; beta>0 0.79% at 10%; beta* 0.86% at 17%."]  # fmt: skip
    text = "\n".join(lines)
    print("\n" + text + f"\n\n({time.time() - start:.0f} s)")
    write_results(args.out, text, {"dense_error": dense, "results": results, "args": vars(args),
                                   "seconds": time.time() - start})  # fmt: skip


if __name__ == "__main__":
    main()
