"""Issue 18, item 3 on a large model: where ``prune()``'s per-round overhead goes on ResNet50.

``benchmarks/prune_overhead.py`` times ResNet-8 (78k weights); a per-round cost that grows with
the number of weights hides there. This runs ``prune()`` on Keras' ResNet50 (weights=None,
64x64x3 inputs, 10 classes, 23.5M weights): 32 random calibration images, ``rounds=3`` to 50%
of the MACs, one fine-tuning epoch of 16 images per round (SGD), the default gated procedure,
and reports the overhead (wall clock minus the fits) by phase, with the same instrumentation
as prune_overhead.py. With ``PYTHONPATH`` pointing at another checkout it times that one
(``--out`` names the results), so a change is measured before and after on one machine.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/prune_overhead_large.py [--signals l1_weight
taylor] [--out prune_overhead_resnet50]
Writes benchmarks/results/<out>.{json,md}.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import prune_overhead as po  # noqa: E402
from _results import write_results  # noqa: E402

import tfchannelprune as tcp  # noqa: E402


def one_run(signal: str) -> dict:
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 64, 64, 3)).astype("float32")
    y = np.arange(32) % 10
    return po.measured(lambda: tcp.prune(
        model, (x, y), loss=keras.losses.SparseCategoricalCrossentropy(), target_macs=0.5,
        rounds=3, signal=signal, optimizer=keras.optimizers.SGD(1e-3),
        fine_tune_data=(x[:16], y[:16]), fine_tune_epochs=1, fit_kwargs={"batch_size": 16},
        verbose=0))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", nargs="+", default=["l1_weight", "taylor"])
    parser.add_argument("--out", default="prune_overhead_resnet50")
    args = parser.parse_args()
    po.instrument()
    load = [os.getloadavg()[0]]
    runs = {}
    for signal in args.signals:
        runs[signal] = one_run(signal)
        print(f"{signal}: {runs[signal]['seconds']:.1f} s overhead, "
              f"{runs[signal]['fit_seconds']:.1f} s fits", flush=True)  # fmt: skip
    load.append(os.getloadavg()[0])
    package = os.path.relpath(os.path.dirname(tcp.__file__))
    lines = [f"ResNet50 (weights=None, 64x64x3, 10 classes), 32 random images, prune(rounds=3, "
             f"target_macs=0.5), gated procedure; overhead = wall clock minus the fits; one run "
             f"each; package timed: {package}; load average {load[0]:.1f} at the start, "
             f"{load[1]:.1f} at the end.", "",
             "| signal | overhead s | fits s | MACs left | overhead s by phase |",
             "|---|---|---|---|---|"]  # fmt: skip
    for signal, run in runs.items():
        by_phase = ", ".join(f"{k} {v:.2f}" for k, v in sorted(run["phases"].items(),
                                                                key=lambda kv: -kv[1]))  # fmt: skip
        lines.append(f"| {signal} | **{run['seconds']:.1f}** | {run['fit_seconds']:.1f} | "
                     f"{run['macs_fraction']:.3f} | {by_phase} |")  # fmt: skip
    text = "\n".join(lines)
    print("\n" + text)
    write_results(args.out, text, {"runs": runs, "load_average": load, "package": package})


if __name__ == "__main__":
    main()
