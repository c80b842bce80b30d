"""Issue 18: the overhead of ``prune()`` rounds (everything but the fine-tuning fits).

ResNet-8 as in the issue: a 16-channel 3x3 stem conv with BatchNorm, three residual stages of
16/32/64 channels (two 3x3 convs with BatchNorm each; a 1x1 projection with BatchNorm where the
shape changes), global average pooling and a Dense classifier; MNIST digits 28x28 (the bundled
subset), untrained weights (the overhead does not depend on them). ``prune(model, (x[:640],
y[:640]), loss=loss, target_macs=0.25, rounds=10, signal=..., optimizer=Adam(1e-3),
fine_tune_data=(x[:128], y[:128]), fine_tune_epochs=1)``: the overhead is the wall clock minus
the fine-tuning fits (wrapping, scoring, selection, compaction, the optimizer's slots carried
through it). The procedures: "gated" (the default: one wrapped model for every round,
compacted at the end) and "compact" (``compact_every_round=True``: the former procedure, a
compaction, a new graph, scoring step and training step each round); for Taylor also "steps"
(``scoring="fine_tuning"``: round 1 scores the calibration digits, rounds 2.. read Taylor from
the previous round's fine-tuning steps; its rows also charge its fits' extra seconds over the
gated procedure's, the probe's cost in the training step). Each (signal, procedure)
is timed ``--reps`` times, alternating; the phases are timed by wrapping the functions
``prune.loop`` calls. The fits' seconds are reported too (their tracing included): the gated
procedure traces its training step once but fine-tunes at full width.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/prune_overhead.py [--reps 2]
(``--save-digits out/digits640.npz`` writes the calibration digits for the peer's side,
benchmarks/peer_overhead.py: Torch-Pruning on the same work, in its own environment.)
Writes benchmarks/results/prune_overhead.json and prune_overhead.md (shared 2-core CPU:
the load average is printed with the numbers). With ``PYTHONPATH`` pointing at another
checkout it times that one (``--out`` names the results; a checkout without
``compact_every_round`` runs its own procedure under ``--procedures gated``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _results import write_results  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.prune import loop  # noqa: E402

L = keras.layers
PHASES = {"wrap": "wrap", "ChannelGraph": "graph", "score_all": "score",
          "scoring_context": "score", "set_kept_channels": "gates", "gate_masks": "gates",
          "compact": "compact", "count_macs": "count", "count_params": "count",
          "macs_for": "count", "params_for": "count", "removed_entries": "zero", "_fit": "fit"}
# name -> prune() keyword arguments; "steps" (mask signals only) reads rounds 2.. from the
# fine-tuning steps, so its scoring cost moves into the fits: its table row also charges the
# fits' extra seconds over the gated procedure's
PROCEDURES = {"gated": {"scoring": "calibration"}, "compact": {"compact_every_round": True},
              "steps": {"scoring": "fine_tuning"}}  # fmt: skip
MASK_SIGNALS = ("taylor", "fisher")
TIMES: dict[str, float] = collections.defaultdict(float)
CALLS: dict[str, list] = collections.defaultdict(list)  # function -> each call's seconds


def resnet8(input_shape=(28, 28, 1), classes=10) -> keras.Model:
    inp = keras.Input(input_shape)
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        y = L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        y = L.ReLU()(L.BatchNormalization()(y))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if strides != 1 or x.shape[-1] != filters:
            x = L.BatchNormalization()(L.Conv2D(filters, 1, strides=strides, use_bias=False)(x))
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(classes)(x), name="resnet8")


def _timed(phase, fn, totals=TIMES):
    """``fn`` that adds its wall time to ``totals[phase]``."""

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[phase] += time.perf_counter() - start
            CALLS[fn.__name__].append(time.perf_counter() - start)

    return timed


def instrument() -> None:
    for name, phase in PHASES.items():
        if hasattr(loop, name):
            setattr(loop, name, _timed(phase, getattr(loop, name)))
    loop.select.select_channels = _timed("select", loop.select.select_channels)
    state = loop.optimizer_state
    state.sliced_slots = _timed("slots", state.sliced_slots)
    state.zero_entries = _timed("zero", state.zero_entries)
    loop._Run.compile = _timed("compile", loop._Run.compile)


def one_run(signal, procedure, x, y) -> dict:
    keras.utils.set_random_seed(0)
    model = resnet8()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return measured(lambda: tcp.prune(
        model, (x[:640], y[:640]), loss=loss, target_macs=0.25, rounds=10, signal=signal,
        optimizer=keras.optimizers.Adam(1e-3), fine_tune_data=(x[:128], y[:128]),
        fine_tune_epochs=1, fit_kwargs={"batch_size": 64}, verbose=0,
        **PROCEDURES[procedure]))  # fmt: skip


def measured(run_prune) -> dict:
    """Run ``run_prune()`` (a ``prune()`` call, after ``instrument()``): its overhead (wall
    clock minus the fine-tuning fits), the fits' seconds, the overhead by phase, each
    scoring call's seconds and the MACs left."""
    TIMES.clear()
    CALLS.clear()
    start = time.perf_counter()
    result = run_prune()
    total = time.perf_counter() - start
    phases = dict(TIMES)
    fit = phases.pop("fit", 0.0)
    phases["other"] = total - fit - sum(phases.values())
    score_calls = [float(c) for c in CALLS.get("score_all", [])]  # one per round
    return {"seconds": total - fit, "fit_seconds": fit, "phases": phases,
            "score_calls": score_calls,
            "macs_fraction": result.history[-1]["macs_fraction"]}  # fmt: skip


def floor_pass(x, y, rounds=10, batch_size=32) -> dict:
    """The floor of a calibration pass: a plain Keras forward + backward (the gradients of
    the weights, no gates, no statistics) over the same 640 digits at the same batch size,
    ``rounds`` times, in one ``tf.function``; its first call (tracing) timed apart."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = resnet8()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss(yb, model(xb, training=False)))
        return tape.gradient(value, model.trainable_variables)

    def one_pass():
        start = time.perf_counter()
        for i in range(0, 640, batch_size):
            grads = step(x[i : i + batch_size], y[i : i + batch_size])
        float(grads[0][0, 0, 0, 0])
        return time.perf_counter() - start

    first = one_pass()
    later = [one_pass() for _ in range(rounds - 1)]
    return {"first_s": first, "later_s": later, "total_s": first + sum(later)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--signals", nargs="+", default=["taylor", "l1_weight"])
    parser.add_argument("--procedures", nargs="+", default=list(PROCEDURES),
                        choices=list(PROCEDURES))  # fmt: skip
    parser.add_argument("--out", default="prune_overhead")
    parser.add_argument("--save-digits", metavar="NPZ",
                        help="only write the 640 calibration digits (x, y) for "
                             "benchmarks/peer_overhead.py and exit")
    args = parser.parse_args()
    x, y, _, _ = load_mnist_subset(seed=0)
    if args.save_digits:
        os.makedirs(os.path.dirname(os.path.abspath(args.save_digits)), exist_ok=True)
        np.savez(args.save_digits, x=x[:640], y=y[:640])
        return
    instrument()
    load = [os.getloadavg()[0]]
    runs: dict[str, list] = {f"{s} {p}": [] for s in args.signals for p in args.procedures
                             if p != "steps" or s in MASK_SIGNALS}  # fmt: skip
    floors = []
    for rep in range(args.reps):
        for key in runs:
            runs[key].append(one_run(*key.split(), x, y))
            print(f"{key} repetition {rep + 1}: {runs[key][-1]['seconds']:.2f} s overhead, "
                  f"{runs[key][-1]['fit_seconds']:.2f} s fits "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        floors.append(floor_pass(x[:640], y[:640]))
        print(f"floor repetition {rep + 1}: {floors[-1]['total_s']:.2f} s", flush=True)
    load.append(os.getloadavg()[0])
    text, summary = _table(runs, args.reps, load)
    text += "\n\n" + _floor_text(runs, floors)
    print("\n" + text)
    write_results(args.out, text, {"summary": summary, "runs": runs, "floor": floors,
                                   "load_average": load,
                                   "package": os.path.relpath(os.path.dirname(tcp.__file__))})  # fmt: skip


def _floor_text(runs, floors) -> str:
    """Each procedure's scoring calls (the first one traces) against the floor pass."""
    med = lambda values: float(np.median(values)) if values else float("nan")  # noqa: E731
    lines = [
        "Where the scoring seconds go, against the floor (a plain Keras forward + backward of "
        "the weights over the same 640 digits at batch 32, no gates, no statistics, 10 times; "
        "medians over the repetitions):",
        "",
        "| pass | first call s (tracing included) | each later call s | 10 calls s |",
        "|---|---|---|---|",
        f"| floor (plain gradient pass) | {med([f['first_s'] for f in floors]):.2f} | "
        f"{med([v for f in floors for v in f['later_s']]):.3f} | "
        f"{med([f['total_s'] for f in floors]):.2f} |",
    ]
    for key, runs_of in runs.items():
        calls = [r.get("score_calls", []) for r in runs_of]
        if not any(calls):
            continue
        lines.append(f"| {key}: score_all | {med([c[0] for c in calls if c]):.2f} | "
                     f"{med([v for c in calls for v in c[1:]]):.3f} ({len(calls[0]) - 1} calls) | "
                     f"{med([sum(c) for c in calls]):.2f} |")  # fmt: skip
    return "\n".join(lines)


def _table(runs, reps, load):
    lines = [
        f"ResNet-8 (16/32/64), MNIST 28x28, 640 calibration digits, 10 rounds to 25% of the "
        f"MACs, Adam carried; overhead = wall clock minus the fine-tuning fits (fits: 10 x one "
        f"epoch of 128 digits, tracing included); {reps} alternating repetitions; shared "
        f"2-core CPU, load average {load[0]:.1f} at the start, {load[1]:.1f} at the end. "
        f"gated = the default procedure, compact = compact_every_round=True (the former one).",
        "",
        "| signal | procedure | overhead s per repetition | median | goal | fits s (median) "
        "| median overhead s by phase |",
        "|---|---|---|---|---|---|---|",
    ]
    steps_rows = []
    summary = {}
    for key, runs_of in runs.items():
        seconds = [r["seconds"] for r in runs_of]
        fits = float(np.median([r["fit_seconds"] for r in runs_of]))
        names = sorted({k for r in runs_of for k in r["phases"]})
        phases = {k: float(np.median([r["phases"].get(k, 0.0) for r in runs_of])) for k in names}
        summary[key] = {"median_s": float(np.median(seconds)), "fit_median_s": fits,
                        "phases_median_s": phases}  # fmt: skip
        by_phase = ", ".join(f"{k} {v:.2f}" for k, v in sorted(phases.items(), key=lambda kv:
                                                                -kv[1]))  # fmt: skip
        signal, procedure = key.split()
        lines.append(f"| {signal} | {procedure} | {', '.join(f'{s:.2f}' for s in seconds)} | "
                     f"**{np.median(seconds):.2f}** | <= 3 | {fits:.2f} | {by_phase} |")  # fmt: skip
        gated = runs.get(f"{signal} gated")
        if procedure == "steps" and gated:  # the scoring moved into the fits: charge it
            extra = [r["fit_seconds"] - g["fit_seconds"] for r, g in zip(runs_of, gated)]
            charged = [s + e for s, e in zip(seconds, extra)]
            summary[key]["charged_median_s"] = float(np.median(charged))
            steps_rows.append(
                f"| {signal} | steps, fits' extra seconds over gated's charged | "
                f"{', '.join(f'{s:.2f}' for s in charged)} | **{np.median(charged):.2f}** | "
                f"<= 3 | fits' extra (median) {np.median(extra):+.2f} | |")  # fmt: skip
    lines += steps_rows
    return "\n".join(lines), summary


if __name__ == "__main__":
    main()
