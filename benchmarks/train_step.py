"""Issue 13: cost of accumulating Taylor/Fisher inside fit's training step, and of an event.

ResNet50 (weights=None, 96x96x3, 10 classes), wrapped, SGD, batch 16, random data. Two copies
of the same wrapped model are trained side by side in alternating chunks of steps: one plain,
one with ``TrainStepSaliency("fisher")`` installed (its train function is built once). Each
step is timed from ``on_train_batch_begin`` to ``on_train_batch_end``; the first chunk of each
(tracing) is left out. Then a ``ChannelPruning(signal="fisher", frequency="step", ...)`` run on
the accumulating copy times each pruning event (scoring the sums, greedy selection with
MACs recomputed after each removal, writing the gates) against the median training step.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/train_step.py [--chunks 4 --steps 6]
Writes benchmarks/results/train_step.json and train_step.md. The machine is a shared 2-core
CPU: timings are noisy, so the ratio is taken chunk by chunk between neighbours.
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
from tfchannelprune.saliency.importance import scoring_context  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # wait for the step
        self.times.append(time.perf_counter() - self._start)


def make(args):
    keras.utils.set_random_seed(0)
    base = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3),
                                       classes=10, classifier_activation=None)  # fmt: skip
    gated = tcp.wrap(base)
    gated.compile(optimizer=keras.optimizers.SGD(1e-3), loss=LOSS)
    return gated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="steps per chunk")
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks per model")
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--out", default="train_step")
    args = parser.parse_args()
    start = time.time()
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.normal(size=(n, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, n)
    plain, accumulating = make(args), make(args)
    importance = tcp.TrainStepSaliency("fisher")
    importance.build(scoring_context(accumulating, None, LOSS, caller="benchmark"))
    per_chunk = {"plain": [], "accumulating": []}
    for chunk in range(args.chunks + 1):
        for name, model in (("plain", plain), ("accumulating", accumulating)):
            timer = StepTimer()
            model.fit(x, y, batch_size=args.batch, epochs=1, shuffle=False, verbose=0,
                      callbacks=[timer])  # fmt: skip
            if chunk > 0:  # chunk 0 traces
                per_chunk[name].append(float(np.median(timer.times)))
        if chunk > 0:
            print(f"chunk {chunk}: plain {per_chunk['plain'][-1]:.3f} s/step, accumulating "
                  f"{per_chunk['accumulating'][-1]:.3f} s/step", flush=True)  # fmt: skip
    ratios = np.array(per_chunk["accumulating"]) / np.array(per_chunk["plain"])
    assert importance.num_examples > 0
    importance.release()

    # pruning events on the accumulating copy: one every `steps` steps, 1% of channels each
    pruning = tcp.ChannelPruning(signal="fisher", target_macs=0.5, frequency="step",
                                 prune_every=args.steps, verbose=0)  # fmt: skip
    event_times: list[float] = []
    original_event = pruning._event

    def timed_event(*a, **k):
        t0 = time.perf_counter()
        original_event(*a, **k)
        event_times.append(time.perf_counter() - t0)

    pruning._event = timed_event
    timer = StepTimer()
    accumulating.fit(x, y, batch_size=args.batch, epochs=args.events + 1, shuffle=False,
                     verbose=0, callbacks=[timer, pruning])  # fmt: skip
    events = [t for t in event_times if t > 0]
    step_time = float(np.median(timer.times[args.steps :]))
    result = {
        "model": f"ResNet50 weights=None {args.size}x{args.size}, batch {args.batch}, wrapped",
        "plain_step_s": per_chunk["plain"],
        "accumulating_step_s": per_chunk["accumulating"],
        "overhead_ratio_per_chunk": ratios.tolist(),
        "overhead_ratio_median": float(np.median(ratios)),
        "event_s": events[: len(pruning.history)],
        "events": len(pruning.history),
        "channels_removed_per_event": [r["channels_removed_now"] for r in pruning.history],
        "step_s_during_pruning_run": step_time,
        "event_over_step": float(np.median(events[: len(pruning.history)]) / step_time),
        "seconds": time.time() - start,
    }
    lines = [
        f"{result['model']}, SGD, random data; shared 2-core CPU (noisy), {args.chunks} "
        f"alternating chunks of {args.steps} steps per model after one tracing chunk.",
        "",
        "| | value |",
        "|---|---|",
        f"| plain wrapped fit, median s/step per chunk | "
        f"{', '.join(f'{t:.3f}' for t in per_chunk['plain'])} |",
        f"| with in-step Fisher accumulation | "
        f"{', '.join(f'{t:.3f}' for t in per_chunk['accumulating'])} |",
        f"| step ratio per chunk (goal <= 1.15) | {', '.join(f'{r:.3f}' for r in ratios)} |",
        f"| **median step ratio** | **{result['overhead_ratio_median']:.3f}** |",
        f"| pruning event (score + select + gates), s | "
        f"{', '.join(f'{t:.3f}' for t in result['event_s'])} |",
        f"| channels removed per event | {result['channels_removed_per_event']} |",
        f"| **event / training step** (goal about 1) | **{result['event_over_step']:.2f}** |",
    ]
    text = "\n".join(lines)
    print("\n" + text + f"\n\n({result['seconds']:.0f} s)")
    out_dir = os.path.join(os.path.dirname(__file__), "results")
    with open(os.path.join(out_dir, f"{args.out}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, f"{args.out}.json"), "w") as f:
        json.dump({**result, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
