"""Issue 13: prune(compact_every_round=True) fine-tunes a physically smaller model each round,
with the optimizer's state carried through compaction: epoch time per round against MACs (the
default procedure fine-tunes the gated model at full width: benchmarks/prune_procedures.py).

ResNet-style CNN (``resnet_cnn``, width 32) on the bundled MNIST subset (4,000 training
digits), Adam; ``prune(rounds=4, target_macs=0.25, signal="l1_weight",
compact_every_round=True)`` with one fine-tuning
epoch per round. The first epoch of each round includes tracing the new model's train function.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/prune_rounds.py
Writes benchmarks/results/prune_rounds.json and prune_rounds.md (shared 2-core CPU: noisy).
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier, resnet_cnn  # noqa: E402


def main() -> None:
    start = time.time()
    x, y, x_test, y_test = load_mnist_subset(seed=0)
    keras.utils.set_random_seed(0)
    model = compile_classifier(resnet_cnn())
    t0 = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    dense_epoch = time.perf_counter() - t0
    result = tcp.prune(model, (x[:256], y[:256]), loss=model.loss, target_macs=0.25, rounds=4,
                       signal="l1_weight", optimizer=model.optimizer, fine_tune_data=(x, y),
                       fine_tune_epochs=1, fit_kwargs={"batch_size": 64}, verbose=0,
                       metrics=["accuracy"], compact_every_round=True)  # fmt: skip
    rows = [{"round": 0, "macs_fraction": 1.0, "epoch_seconds": dense_epoch}] + [
        {k: r[k] for k in ("round", "macs_fraction", "epoch_seconds", "accuracy")}
        for r in result.history
    ]
    lines = ["resnet_cnn (width 32), MNIST subset 4,000 digits, Adam carried through "
             "compaction, 1 epoch per round (includes tracing); shared 2-core CPU.", "",
             "| round | MACs | epoch s | train accuracy |", "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if "accuracy" in r else "(dense, first epoch)"
        lines.append(f"| {r['round']} | {r['macs_fraction']:.3f} | {r['epoch_seconds']:.1f} | "
                     f"{acc} |")  # fmt: skip
    text = "\n".join(lines)
    print(text + f"\n\n({time.time() - start:.0f} s)")
    out = os.path.join(os.path.dirname(__file__), "results", "prune_rounds")
    with open(out + ".md", "w") as f:
        f.write(text + "\n")
    with open(out + ".json", "w") as f:
        json.dump({"rows": rows, "seconds": time.time() - start}, f, indent=2)


if __name__ == "__main__":
    main()
