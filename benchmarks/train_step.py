"""Issue 13: cost of accumulating Taylor/Fisher inside fit's training step, and of an event.

ResNet50 (weights=None, 96x96x3, 10 classes), wrapped, SGD, batch 16, random data. Two copies
of the same wrapped model are trained side by side, one ``train_on_batch`` step each in turn
(same batch): one plain, one with ``TrainStepSaliency("fisher")`` installed (its train
function is built once). The ratio is taken pair by pair (neighbouring steps see the same
machine load) and its median reported; the first two pairs (tracing) are left out. Then a ``ChannelPruning(signal="fisher", frequency="step", ...)`` run on
the accumulating copy times each pruning event (scoring the sums, greedy selection with
MACs recomputed after each removal, writing the gates) against the median training step.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/train_step.py [--chunks 4 --steps 6]
(``--chunks 0`` times the events only and keeps the step ratios already in the JSON.)
Writes benchmarks/results/train_step.json and train_step.md. The machine is a shared 2-core
CPU: timings are noisy, so the ratio is taken step by step between neighbours.
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
    parser.add_argument("--steps", type=int, default=6, help="batches of data; steps per event")
    parser.add_argument("--chunks", type=int, default=30, help="timed pairs of steps")
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--event-signal", default="fisher", help="criterion of the events")
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
    for pair in range(args.chunks + 2 if args.chunks else 0):  # steps alternate, pair by pair
        i = pair % args.steps
        xb, yb = x[i * args.batch : (i + 1) * args.batch], y[i * args.batch : (i + 1) * args.batch]
        for name, model in (("plain", plain), ("accumulating", accumulating)):
            t0 = time.perf_counter()
            float(model.train_on_batch(xb, yb))
            if pair >= 2:  # the first two pairs trace and warm up
                per_chunk[name].append(time.perf_counter() - t0)
        if pair >= 2 and (pair - 1) % 6 == 0:
            r = np.array(per_chunk["accumulating"]) / np.array(per_chunk["plain"])
            print(f"pair {pair - 1}: plain {per_chunk['plain'][-1]:.3f} s, accumulating "
                  f"{per_chunk['accumulating'][-1]:.3f} s, median ratio so far "
                  f"{np.median(r):.3f}", flush=True)  # fmt: skip
    assert not args.chunks or importance.num_examples > 0
    ratios = np.array(per_chunk["accumulating"]) / np.array(per_chunk["plain"])
    importance.release()
    out_dir = os.path.join(os.path.dirname(__file__), "results")
    json_path = os.path.join(out_dir, f"{args.out}.json")
    previous = json.load(open(json_path)) if os.path.exists(json_path) else {}
    if args.chunks:  # written now, so that a later part failing does not lose it
        previous.update({"plain_step_s": per_chunk["plain"],
                         "accumulating_step_s": per_chunk["accumulating"],
                         "overhead_ratio_per_chunk": ratios.tolist(),
                         "overhead_ratio_median": float(np.median(ratios))})  # fmt: skip
        with open(json_path, "w") as f:
            json.dump(previous, f, indent=2)
    per_chunk = {k: previous.get(f"{k}_step_s", []) for k in ("plain", "accumulating")}
    ratios = np.array(previous.get("overhead_ratio_per_chunk", []))

    # pruning events on the accumulating copy: one every `steps` steps, 1% of channels each
    pruning = tcp.ChannelPruning(signal=args.event_signal, target_macs=0.5, frequency="step",
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
        "overhead_ratio_median": float(np.median(ratios)) if len(ratios) else None,
        "event_signal": args.event_signal,
        "event_s": events[: len(pruning.history)],
        "events": len(pruning.history),
        "channels_removed_per_event": [r["channels_removed_now"] for r in pruning.history],
        "step_s_during_pruning_run": step_time,
        "event_over_step": float(np.median(events[: len(pruning.history)]) / step_time),
        "seconds": time.time() - start,
    }
    lines = [
        f"{result['model']}, SGD, random data; shared 2-core CPU (noisy): {len(ratios)} pairs "
        f"of alternating steps (same batch) after two warm-up pairs.",
        "",
        "| | value |",
        "|---|---|",
        f"| plain wrapped step, median s | {np.median(per_chunk['plain']):.3f} |",
        f"| with in-step Fisher accumulation, median s | "
        f"{np.median(per_chunk['accumulating']):.3f} |",
        f"| pair ratio quartiles (25%, 75%) | {np.percentile(ratios, 25):.3f}, "
        f"{np.percentile(ratios, 75):.3f} |",
        f"| ratio of the median step times | "
        f"{np.median(per_chunk['accumulating']) / np.median(per_chunk['plain']):.3f} |",
        f"| **median pair ratio** (goal <= 1.15) | **{np.median(ratios):.3f}** |",
        f"| pruning event ({args.event_signal}: score + select + gates), s | "
        f"{', '.join(f'{t:.3f}' for t in result['event_s'])} |",
        f"| channels removed per event | {result['channels_removed_per_event']} |",
        f"| **event / training step** (goal about 1) | **{result['event_over_step']:.2f}** |",
    ]
    text = "\n".join(lines)
    print("\n" + text + f"\n\n({result['seconds']:.0f} s)")
    with open(os.path.join(out_dir, f"{args.out}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, f"{args.out}.json"), "w") as f:
        json.dump({**result, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
