"""Issue 4's criteria: signals compared under the same budget, over several seeds.

Small CNN on the bundled MNIST subset (4,000 train / 1,000 test real digits). For each seed the
same base model is trained, then pruned with each signal by the ChannelPruning callback to
50% and on to 25% of its MACs with fine-tuning in between (same epochs for every signal), and
the compacted model is evaluated.

Usage: python benchmarks/pruning.py [--seeds 0 1 2] [--signals taylor fisher random l1_weight]
Writes benchmarks/results/pruning.json and pruning.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier, small_cnn  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def prune_run(base, signal, data, args, seed):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    gated = compile_classifier(tcp.wrap(base), learning_rate=args.fine_tune_lr)
    rng = np.random.default_rng(seed)
    calibration = rng.choice(len(x_train), args.calibration, replace=False)
    out = {}
    for target in (0.5, 0.25):
        pruning = tcp.ChannelPruning(
            (x_train[calibration], y_train[calibration]), loss=LOSS, signal=signal,
            target_macs=target,
            schedule="polynomial", num_events=args.events, verbose=0,
        )  # fmt: skip
        gated.fit(x_train, y_train, epochs=args.fine_tune_epochs, batch_size=64, verbose=0,
                  callbacks=[pruning])  # fmt: skip
        small = compile_classifier(tcp.compact(gated))
        out[target] = {
            "accuracy": float(small.evaluate(x_test, y_test, verbose=0)[1]),
            "macs_fraction": tcp.count_macs(small) / tcp.count_macs(base),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--signals", nargs="+", default=["taylor", "fisher", "random", "l1_weight"])
    parser.add_argument("--epochs", type=int, default=10, help="base training epochs")
    parser.add_argument("--fine-tune-epochs", type=int, default=6, help="per target")
    parser.add_argument("--events", type=int, default=3, help="pruning events per target")
    parser.add_argument("--fine-tune-lr", type=float, default=2e-4)
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--out", default="pruning", help="results name; '' to write nothing")
    args = parser.parse_args()
    start = time.time()
    results = {s: {0.5: [], 0.25: []} for s in args.signals}
    base_acc = []
    for seed in args.seeds:
        x_train, y_train, x_test, y_test = load_mnist_subset(seed=seed)
        data = ((x_train, y_train), (x_test, y_test))
        keras.utils.set_random_seed(seed)
        base = compile_classifier(small_cnn())
        base.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
        # the dense reference gets the same extra epochs as the pruned models (fair baseline)
        dense = compile_classifier(keras.models.clone_model(base), learning_rate=args.fine_tune_lr)
        dense.set_weights(base.get_weights())
        dense.fit(x_train, y_train, epochs=2 * args.fine_tune_epochs, batch_size=64, verbose=0)
        base_acc.append(float(dense.evaluate(x_test, y_test, verbose=0)[1]))
        print(f"seed {seed}: dense accuracy {base_acc[-1]:.4f}")
        for signal in args.signals:
            run = prune_run(base, signal, data, args, seed)
            for target, r in run.items():
                results[signal][target].append(r["accuracy"])
            print(f"  {signal:<10} 50%: {run[0.5]['accuracy']:.4f}  25%: {run[0.25]['accuracy']:.4f}")
    rows = []
    for signal in args.signals:
        a50, a25 = np.array(results[signal][0.5]), np.array(results[signal][0.25])
        rows.append({
            "signal": signal,
            "acc_50_mean": a50.mean(), "acc_50_std": a50.std(),
            "acc_25_mean": a25.mean(), "acc_25_std": a25.std(),
            "drop_50_points": 100 * (np.mean(base_acc) - a50.mean()),
        })  # fmt: skip
    rows.sort(key=lambda r: -r["acc_25_mean"])
    lines = [
        f"Small CNN, MNIST subset (4,000/1,000 real digits), seeds {args.seeds}. Dense model "
        f"trained {args.epochs} + {2 * args.fine_tune_epochs} epochs: accuracy "
        f"{np.mean(base_acc):.4f} +- {np.std(base_acc):.4f}. Each signal prunes the "
        f"{args.epochs}-epoch model with {args.fine_tune_epochs} fine-tuning epochs per target "
        f"({args.events} pruning events each): the same total epochs.",
        "",
        "| signal | acc @ 50% MACs | drop vs dense (points) | acc @ 25% MACs |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['signal']} | {r['acc_50_mean']:.4f} +- {r['acc_50_std']:.4f} | "
            f"{r['drop_50_points']:+.2f} | {r['acc_25_mean']:.4f} +- {r['acc_25_std']:.4f} |"
        )
    text = "\n".join(lines)
    print("\n" + text + f"\n\n({time.time() - start:.0f} s)")
    if not args.out:
        return
    out_dir = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{args.out}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, f"{args.out}.json"), "w") as f:
        json.dump({"base_accuracy": base_acc, "rows": rows, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
