"""Issue 13: the default procedure on a residual network at 25% of its MACs, several seeds.

ResNet-style CNN (``datasets.models.resnet_cnn``: stem + 3 residual blocks, base width 16, so
widths 16/32) on the bundled MNIST subset (2,000 of its 4,000 training digits, 1,000 test),
sized to run in about 10-15 minutes on the shared 2-core CPU. Per seed a base model is
trained, then each criterion prunes a copy with ``ChannelPruning``'s DEFAULT procedure (no
calibration data: Taylor/Fisher accumulated in the training steps; ``channels_per_step="auto"``,
an event every ``--prune-every`` steps) to 25% of the MACs during ``--prune-epochs`` epochs,
then fine-tunes ``--tune-epochs`` more; the compact model is evaluated and its widths per
group (stage) recorded. ``l1_weight (l2)`` is the former default normalisation, for contrast.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/pruning_resnet.py [--seeds 0 1 2]
Writes benchmarks/results/pruning_resnet.json and pruning_resnet.md.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _results import write_results  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier, resnet_cnn  # noqa: E402

# name -> ChannelPruning keyword arguments (everything else at the library's defaults)
CRITERIA = {
    "taylor": {"signal": "taylor"},
    "fisher": {"signal": "fisher"},
    "l1_weight": {"signal": "l1_weight"},
    "l1_weight (l2)": {"signal": "l1_weight", "normalize": "l2"},
    "random": {"signal": "random"},
}


def stage_names(model) -> list[str]:
    """Readable names of the prunable groups, in graph order."""
    groups = tcp.ChannelGraph(tcp.wrap(model)).prunable_groups
    labels = ["stem+block1 (residual)", "block1 inner", "block2 inner", "block2-3 (residual)",
              "block3 inner"]  # fmt: skip
    return labels if len(groups) == len(labels) else [g.name for g in groups]


def widths(gated) -> list[int]:
    return [len(v) for v in tcp.get_kept_channels(gated).values()]


def run(base, kwargs, data, args, seed):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    gated = compile_classifier(tcp.wrap(base), learning_rate=args.lr)
    pruning = tcp.ChannelPruning(target_macs=0.25, frequency="step",
                                 prune_every=args.prune_every, verbose=0, **kwargs)  # fmt: skip
    gated.fit(x_train, y_train, epochs=args.prune_epochs, batch_size=64, verbose=0,
              callbacks=[pruning])  # fmt: skip
    small = compile_classifier(tcp.compact(gated), learning_rate=args.lr)
    if args.tune_epochs:
        small.fit(x_train, y_train, epochs=args.tune_epochs, batch_size=64, verbose=0)
    return {
        "accuracy": float(small.evaluate(x_test, y_test, verbose=0)[1]),
        "macs_fraction": tcp.count_macs(small) / tcp.count_macs(base),
        "events": len(pruning.history),
        "reached": bool(pruning.done),
        "widths": widths(gated),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    parser.add_argument("--epochs", type=int, default=4, help="base training epochs")
    parser.add_argument("--prune-epochs", type=int, default=3)
    parser.add_argument("--tune-epochs", type=int, default=1)
    parser.add_argument("--prune-every", type=int, default=6, help="steps between events")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--width", type=int, default=16, help="resnet_cnn base width")
    parser.add_argument("--train", type=int, default=2000, help="training examples used")
    parser.add_argument("--out", default="pruning_resnet")
    args = parser.parse_args()
    start = time.time()
    results = {c: [] for c in args.criteria}
    dense_acc, names = [], None
    for seed in args.seeds:
        x_train, y_train, x_test, y_test = load_mnist_subset(seed=seed)
        x_train, y_train = x_train[: args.train], y_train[: args.train]
        data = ((x_train, y_train), (x_test, y_test))
        keras.utils.set_random_seed(seed)
        base = compile_classifier(resnet_cnn(width=args.width))
        base.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
        names = names or stage_names(base)
        dense = compile_classifier(keras.models.clone_model(base), learning_rate=args.lr)
        dense.set_weights(base.get_weights())
        dense.fit(x_train, y_train, epochs=args.prune_epochs + args.tune_epochs, batch_size=64,
                  verbose=0)  # fmt: skip
        dense_acc.append(float(dense.evaluate(x_test, y_test, verbose=0)[1]))
        print(f"seed {seed}: dense {dense_acc[-1]:.4f} ({time.time() - start:.0f} s)", flush=True)
        for name in args.criteria:
            r = run(base, CRITERIA[name], data, args, seed)
            results[name].append(r)
            print(f"  {name:<15} acc {r['accuracy']:.4f} MACs {r['macs_fraction']:.3f} "
                  f"events {r['events']} widths {r['widths']}", flush=True)  # fmt: skip
        write(args, results, dense_acc, names, start)  # after every seed


def write(args, results, dense_acc, names, start) -> None:
    full = widths(tcp.wrap(resnet_cnn(width=args.width)))
    lines = [
        f"ResNet-style CNN (resnet_cnn, widths {full}), MNIST subset ({args.train} training "
        f"/ 1,000 test real digits), seeds "
        f"{args.seeds[: len(dense_acc)]}. Base: {args.epochs} epochs; each criterion then prunes with "
        f"ChannelPruning's defaults (no calibration data, channels_per_step='auto' = 5% of "
        f"the {sum(full)} channels per event, an event every {args.prune_every} steps) to 25% "
        f"MACs during {args.prune_epochs} epochs, then {args.tune_epochs} fine-tuning epoch(s). "
        f"Dense model with the same extra epochs: {np.mean(dense_acc):.4f} +- "
        f"{np.std(dense_acc):.4f}. Shared 2-core CPU.",
        "",
        "| criterion (normalisation) | accuracy | MACs | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    rows = []
    for name in args.criteria:
        rs = results[name]
        acc = np.array([r["accuracy"] for r in rs])
        w = np.array([r["widths"] for r in rs], dtype=float)
        norm = tcp.ChannelPruning(target_macs=0.25, **CRITERIA[name]).config.normalize
        rows.append({"criterion": name, "normalize": norm, "acc_mean": acc.mean(),
                     "acc_std": acc.std(), "runs": rs})  # fmt: skip
        lines.append(
            f"| {name} ({norm}) | {acc.mean():.4f} +- {acc.std():.4f} | "
            f"{np.mean([r['macs_fraction'] for r in rs]):.3f} | "
            + " | ".join(f"{m:.1f}" for m in w.mean(0)) + " |"
        )
    lines.append("| full width | | 1.000 | " + " | ".join(str(v) for v in full) + " |")
    text = "\n".join(lines)
    print("\n" + text + f"\n\n({time.time() - start:.0f} s)")
    write_results(args.out, text, {"dense_accuracy": dense_acc, "groups": names, "rows": rows,
                                   "args": vars(args), "seconds": time.time() - start})  # fmt: skip


if __name__ == "__main__":
    main()
