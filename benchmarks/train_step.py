"""Issue 18: what in-step Taylor pruning costs whole epochs of ``fit``, against a plain fit.

ResNet50 (weights=None, ``--size`` px, 10 classes), wrapped, SGD(1e-3), batch ``--batch``,
random data (a repeated ``tf.data.Dataset`` with ``steps_per_epoch``: with NumPy input Keras
re-creates its data iterator at every epoch start, which stalled for up to 7 s under load in
plain fits as much as in pruned ones), ``--steps`` steps per epoch, two epochs per ``fit``. The SECOND epoch of each fit
is timed, wall clock, from ``on_epoch_begin`` (a timer callback before the pruning callback)
to ``on_epoch_end`` (a timer callback after it); every batch is timed the same way (its loss
read, so the step has finished). Three configurations, each on a fresh model, run one after
the other in each of ``--reps`` repetitions, in an order rotated at each repetition
(interleaved: neighbouring runs see the same load):

* ``plain``: the wrapped model, no callback;
* ``accumulation``: ``ChannelPruning(signal="taylor", target_macs=0.5, frequency="step",
  prune_every=10**9)``, in-step Taylor accumulated, no event in the run;
* ``events``: ``ChannelPruning(signal="taylor", target_macs=0.5, frequency="step",
  prune_every=--every)`` without calibration data: an event every ``--every`` steps.

Whole epochs run one after the other drift with the machine's load (the median step of a run
moved by up to 40% between neighbouring runs at load 8-10), so the accumulation overhead is
also measured pair by pair: two copies of the model, one with in-step Taylor installed,
``train_on_batch`` in turn on the same batch for ``--pairs`` pairs after two warm-up pairs,
the median ratio reported (the method of the earlier benchmark).

Printed: the epoch ratios against the plain epoch of the same repetition (goals: events
<= 1.3x, accumulation <= 1.05x), the paired-step accumulation ratio, the epoch-boundary cost (epoch wall minus the time inside the
batches, minus the same for plain, in plain steps; goal <= 0.1) and the cost of each event (its
batch minus the median batch of the same epoch, in plain steps).

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/train_step.py [--size 96 --steps 20 --reps 6]
(the issue's 96 px by default: 18 fits of two epochs and 40 pairs take about 12 minutes on the
quiet 2-core CPU; use --size 64 --reps 3 on a loaded one.)
Writes benchmarks/results/train_step.json and train_step.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _results import write_results  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.saliency.importance import scoring_context  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CONFIGS = ("plain", "accumulation", "events")


class Clock:
    """Two callbacks around the others: ``begin`` first in the list, ``end`` last."""

    def __init__(self):
        self.epochs: list[dict] = []
        clock = self

        class Begin(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock.epochs.append({"start": time.perf_counter(), "batches": []})

            def on_train_batch_begin(self, batch, logs=None):
                clock._batch = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                clock._end = time.perf_counter()

        class End(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                epoch = clock.epochs[-1]
                epoch["callbacks_at_begin"] = time.perf_counter() - epoch["start"]

            def on_train_batch_end(self, batch, logs=None):
                float(logs["loss"])  # the step has finished
                clock.epochs[-1]["batches"].append(time.perf_counter() - clock._batch)

            def on_epoch_end(self, epoch, logs=None):
                epoch, now = clock.epochs[-1], time.perf_counter()
                epoch["wall"] = now - epoch["start"]
                epoch["callbacks_at_end"] = now - clock._end

        self.begin, self.end = Begin(), End()


def make(args):
    keras.utils.set_random_seed(0)
    base = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3),
                                       classes=10, classifier_activation=None)  # fmt: skip
    gated = tcp.wrap(base)
    gated.compile(optimizer=keras.optimizers.SGD(1e-3), loss=LOSS)
    return gated


def run(config, args, data) -> dict:
    model = make(args)
    clock = Clock()
    middle = []
    if config != "plain":
        every = args.every if config == "events" else 10**9
        pruning = tcp.ChannelPruning(signal="taylor", target_macs=0.5, frequency="step",
                                     prune_every=every, verbose=0)  # fmt: skip
        middle = [pruning]
    model.fit(data, epochs=2, steps_per_epoch=args.steps, shuffle=False, verbose=0,
              callbacks=[clock.begin, *middle, clock.end])  # fmt: skip
    epoch = clock.epochs[1]
    batches = np.array(epoch["batches"])
    out = {"wall": epoch["wall"], "batches": batches.tolist(),
           "outside_batches": epoch["wall"] - float(batches.sum()),
           "callbacks_at_boundary": epoch["callbacks_at_begin"] + epoch["callbacks_at_end"]}  # fmt: skip
    if config == "events":
        at = [i for i in range(len(batches)) if (args.steps + i + 1) % args.every == 0]
        rest = np.delete(batches, at)
        out["event_batches"] = at
        out["event_s"] = (batches[at] - np.median(rest)).tolist()
        out["events_in_run"] = len(pruning.history)
        out["channels_removed"] = [r["channels_removed_now"] for r in pruning.history]
    del model
    gc.collect()
    return out


def paired(args, x, y) -> list[float]:
    """Median-ready ratios of in-step Taylor steps over plain steps, pair by pair."""
    plain, accumulating = make(args), make(args)
    importance = tcp.TrainStepSaliency(signal="taylor")
    importance.build(scoring_context(accumulating, None, LOSS, caller="benchmark"))
    ratios = []
    for pair in range(args.pairs + 2):
        i = pair % args.steps
        xb, yb = x[i * args.batch : (i + 1) * args.batch], y[i * args.batch : (i + 1) * args.batch]
        times = []
        for model in (plain, accumulating) if pair % 2 else (accumulating, plain):
            start = time.perf_counter()
            float(model.train_on_batch(xb, yb))
            times.append(time.perf_counter() - start)
        if pair >= 2:  # the first two pairs trace and warm up
            ratios.append(times[1] / times[0] if pair % 2 else times[0] / times[1])
    assert importance.num_examples > 0
    importance.release()
    return ratios


def summarise(reps, args) -> dict:
    ratios = {c: [r[c]["wall"] / r["plain"]["wall"] for r in reps] for c in CONFIGS[1:]}
    steps = [float(np.median(r["plain"]["batches"])) for r in reps]
    boundary = {
        c: [(r[c]["outside_batches"] - r["plain"]["outside_batches"]) / s
            for r, s in zip(reps, steps)]
        for c in CONFIGS[1:]
    }  # fmt: skip
    own = {c: [r[c]["callbacks_at_boundary"] / s for r, s in zip(reps, steps)] for c in CONFIGS}
    events = [e / s for r, s in zip(reps, steps) for e in r["events"]["event_s"]]
    return {
        "ratio": ratios,
        "ratio_median": {c: float(np.median(v)) for c, v in ratios.items()},
        "plain_step_s": steps,
        "boundary_steps": boundary,
        "boundary_steps_median": {c: float(np.median(v)) for c, v in boundary.items()},
        "callbacks_at_boundary_steps": own,
        "event_steps": events,
        "event_steps_median": float(np.median(events)),
    }


def report(summary, reps, args, load) -> str:
    ratio, med = summary["ratio"], summary["ratio_median"]
    bound = summary["boundary_steps"]

    def row(values, fmt="{:.2f}"):
        return ", ".join(fmt.format(v) for v in values)

    lines = [
        f"ResNet50 weights=None {args.size}x{args.size}, batch {args.batch}, wrapped, SGD, "
        f"random data (repeated dataset), {args.steps} steps per epoch; the second epoch of "
        f"each fit timed wall "
        f"clock; {args.reps} interleaved repetitions; shared 2-core CPU, load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end.",
        "",
        "| | per repetition | median | goal |",
        "|---|---|---|---|",
        f"| plain epoch, s | {row([r['plain']['wall'] for r in reps], '{:.1f}')} | | |",
        f"| plain step (median), s | {row(summary['plain_step_s'], '{:.3f}')} | | |",
        f"| **events every {args.every} steps / plain epoch** | {row(ratio['events'])} | "
        f"**{med['events']:.2f}** | <= 1.3 |",
        f"| **accumulation only / plain epoch** | {row(ratio['accumulation'])} | "
        f"**{med['accumulation']:.2f}** | <= 1.05 |",
        f"| **accumulation, paired steps** ({len(summary['pair_ratios'])} pairs; quartiles "
        f"{np.percentile(summary['pair_ratios'], 25):.2f}, "
        f"{np.percentile(summary['pair_ratios'], 75):.2f}) | | "
        f"**{np.median(summary['pair_ratios']):.3f}** | <= 1.05 |",
        f"| **epoch boundary, steps** (events run) | {row(bound['events'])} | "
        f"**{summary['boundary_steps_median']['events']:.2f}** | <= 0.1 |",
        f"| epoch boundary, steps (accumulation run) | {row(bound['accumulation'])} | "
        f"{summary['boundary_steps_median']['accumulation']:.2f} | |",
        f"| **pruning callback's own epoch begin + end, steps** | "
        f"{row(summary['callbacks_at_boundary_steps']['events'], '{:.4f}')} | "
        f"**{np.median(summary['callbacks_at_boundary_steps']['events']):.4f}** | <= 0.1 |",
        f"| **one event, steps** | {row(summary['event_steps'])} | "
        f"**{summary['event_steps_median']:.2f}** | about 1 |",
        f"| channels removed per event | {reps[0]['events']['channels_removed']} | | |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--every", type=int, default=10, help="steps between events")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=40, help="paired steps (0: none)")
    parser.add_argument("--out", default="train_step")
    args = parser.parse_args()
    start, load = time.time(), [os.getloadavg()[0]]
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.normal(size=(n, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, n)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).repeat()
    reps = []
    for rep in range(args.reps):
        order = CONFIGS[rep % 3 :] + CONFIGS[: rep % 3]
        reps.append({c: run(c, args, data) for c in order})
        walls = ", ".join(f"{c} {reps[-1][c]['wall']:.1f} s" for c in CONFIGS)
        print(f"repetition {rep + 1}: {walls} (load {os.getloadavg()[0]:.1f})", flush=True)
    pair_ratios = paired(args, x, y) if args.pairs else [float("nan")]
    print(f"paired steps: median ratio {np.median(pair_ratios):.3f}", flush=True)
    load.append(os.getloadavg()[0])
    summary = {**summarise(reps, args), "pair_ratios": pair_ratios}
    text = report(summary, reps, args, load)
    print("\n" + text + f"\n\n({time.time() - start:.0f} s)")
    payload = {**summary, "repetitions": reps, "load_average": load, "args": vars(args),
               "seconds": time.time() - start}  # fmt: skip
    write_results(args.out, text, payload)


if __name__ == "__main__":
    main()
