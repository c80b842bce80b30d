"""Issue 18: how noisy is one seed of benchmarks/defaults.py on the plain CNN?

Two measurements of the protocol's own noise, against which the issue's "collapse" (a seed
more than 2 points below the mean of the other two) is read:

* ``dense``: the dense plain CNN of each seed (the protocol's: Adam 1e-3, batch 64, 15 epochs
  on the 3,200 training digits), retrained with validation and test accuracy recorded after
  every epoch: how much one epoch's end moves the accuracy when nothing is pruned.
* ``rerun``: runs of benchmarks/defaults.py repeated with the same configuration, seed and
  target (``--runs defaults_runs_rerun``), against the first runs (``defaults_runs``): how far
  the same procedure lands from itself (TensorFlow's CPU kernels are not bitwise
  deterministic, so a rerun takes another path through training).

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/defaults_noise.py [--parts dense rerun]
(run ``python benchmarks/defaults.py --archs cnn --configs taylor_local bn_scale_mean --runs
defaults_runs_rerun --no-report`` first for the rerun part). Writes
benchmarks/results/defaults_noise.{json,md}.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402
import defaults  # noqa: E402

LAST = 5  # the last epochs of the dense run whose spread is reported


def dense_epochs(seed, splits, epochs=15) -> dict:
    """Validation and test accuracy after each epoch of the protocol's dense training."""
    keras.utils.set_random_seed(seed)
    model = defaults._compile(defaults.ARCHS["cnn"]())
    out = {"val": [], "test": []}

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            out["val"].append(defaults._accuracy(model, splits["val"]))
            out["test"].append(defaults._accuracy(model, splits["test"]))

    model.fit(*splits["train"], batch_size=64, epochs=epochs, verbose=0, callbacks=[Record()])
    return out


def reruns(first="defaults_runs", again="defaults_runs_rerun") -> list[dict]:
    pairs = []
    for path in sorted(glob.glob(os.path.join(_results.RESULTS_DIR, again, "*.json"))):
        twin = os.path.join(_results.RESULTS_DIR, first, os.path.basename(path))
        if not os.path.exists(twin):
            continue
        with open(path) as f, open(twin) as g:
            b, a = json.load(f), json.load(g)
        pairs.append({"run": os.path.basename(path)[:-5], "first": a["test"], "again": b["test"],
                      "first_val": a["val"], "again_val": b["val"],
                      "same_widths": a["widths"] == b["widths"]})  # fmt: skip
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["dense", "rerun"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    path = os.path.join(_results.RESULTS_DIR, "defaults_noise.json")
    payload = json.load(open(path)) if os.path.exists(path) else {}
    if "dense" in args.parts:
        splits = defaults.load_splits()
        payload["dense"] = {str(s): dense_epochs(s, splits) for s in args.seeds}
    if "rerun" in args.parts:
        payload["rerun"] = reruns()
    lines = ["Plain CNN (small_cnn(width=16)) of benchmarks/defaults.py; accuracy in %. "
             "Command: `python benchmarks/defaults_noise.py`.", ""]
    if "dense" in payload:
        lines += [f"**Dense training, the last {LAST} epoch ends** (Adam 1e-3, batch 64, "
                  "nothing pruned; the protocol keeps epoch 15):", "",
                  "| seed | test after epochs 11-15 | test range | validation after epochs "
                  "11-15 |", "|---|---|---|---|"]  # fmt: skip
        for seed, run in payload["dense"].items():
            test, val = run["test"][-LAST:], run["val"][-LAST:]
            lines.append(f"| {seed} | {', '.join(f'{100 * v:.1f}' for v in test)} | "
                         f"{100 * (max(test) - min(test)):.1f} | "
                         f"{', '.join(f'{100 * v:.1f}' for v in val)} |")  # fmt: skip
    if payload.get("rerun"):
        diffs = [abs(p["again"] - p["first"]) for p in payload["rerun"]]
        lines += ["", "**The same run twice** (configuration, seed, target; test; the widths "
                  "left are the same when the column says so):", "",
                  "| run | first | again | difference | same widths |", "|---|---|---|---|---|"]
        for p in payload["rerun"]:
            lines.append(f"| {p['run']} | {100 * p['first']:.1f} | {100 * p['again']:.1f} | "
                         f"{100 * (p['again'] - p['first']):+.1f} | {p['same_widths']} |")
        lines += ["", f"Median absolute difference {100 * np.median(diffs):.1f} points, "
                  f"largest {100 * max(diffs):.1f} ({len(diffs)} pairs)."]
    text = "\n".join(lines)
    _results.write_results("defaults_noise", text, payload)
    print(text)


if __name__ == "__main__":
    main()
