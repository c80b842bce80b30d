"""How good is each saliency signal? The taxonomy experiment of Persand et al. on real MNIST.

Usage: ``TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/signals.py [--quick] [-o DIR]``

1. Trains a small CNN (3 x conv-BN-ReLU-pool, Dense) for a few epochs on the 4,000 real MNIST
   digits of ``load_mnist_subset``.
2. (a) The oracle (Molchanov 2017): the true loss change from switching each channel off alone,
   on 1,000 training images. Every enumerated signal is collected in one pass over the same
   images, and ranked by its Spearman rank correlation with |loss change| (oracle-abs), across
   all layers and averaged per layer (Molchanov's Table 1 method). FPGM (He et al. 2019),
   a criterion outside the taxonomy, is collected beside them through the importance protocol.
3. (b) Accuracy on the 1,000 test images after removing 10% to 70% of the MACs, without
   retraining: greedy global ranking of per-group L2-normalised scores, for every preset and
   the best composed signals.
4. The time of one collection step over the time of one training step on the same batch.

Writes ``signals.md``, ``signals.json`` and ``signals.png`` to ``benchmarks/results``. About
1-2 minutes on 2 cores (``--quick``: fewer epochs and a sample of the signals).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
import warnings

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr

import tfchannelprune as tcp
from tfchannelprune.datasets.digits import load_mnist_subset
from tfchannelprune.saliency import signals
from tfchannelprune.saliency.collect import (
    SaliencyAccumulator,
    collect_saliency,
    oracle_loss_change,
)

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
CALIBRATION = 1000
TOP_COMPOSED = 6
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
OUTSIDE = ["fpgm"]  # criteria outside the taxonomy, through the importance protocol
PRESET_OF = {**{sid: name for name, sid in signals.PRESETS.items()}, **{k: k for k in OUTSIDE}}


def build_model() -> keras.Model:
    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for filters in (16, 32, 32):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="mnist_cnn")


def train(epochs: int, seed: int):
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = load_mnist_subset(seed=0)
    model = build_model()
    model.compile(keras.optimizers.Adam(2e-3), LOSS, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    return model, (x_train, y_train, x_test, y_test)


def accuracy_fn(model, x, y):
    predict = tf.function(lambda t: tf.argmax(model(t, training=False), axis=-1))
    batches = [(x[i : i + 500], y[i : i + 500]) for i in range(0, len(y), 500)]

    def accuracy() -> float:
        hits = sum(int(np.sum(predict(bx).numpy() == by)) for bx, by in batches)
        return hits / len(y)

    return accuracy


# ---------------------------------------------------------------------- (a) oracle ranking
def spearman(a, b) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def rank_against_oracle(scores: dict, oracle: dict) -> dict:
    target = {g: np.abs(v) for g, v in oracle.items()}
    flat_target = np.concatenate([target[g] for g in target])
    out = {}
    for key, by_group in scores.items():
        if set(by_group) != set(target):  # bn_scale: groups without BatchNorm
            continue
        flat = np.concatenate([by_group[g] for g in target])
        per_layer = [spearman(by_group[g], target[g]) for g in target]
        out[key] = {
            "global": spearman(flat, flat_target),
            "per_layer": float(np.nanmean(per_layer))
            if not np.all(np.isnan(per_layer))
            else float("nan"),
        }
    return out


# ---------------------------------------------------------------------- (b) pruning curves
def prune_curve(gated, graph, scores: dict, accuracy) -> list[float]:
    """Accuracy after removing each fraction of MACs by greedy global ranking of
    per-group L2-normalised scores (no retraining)."""
    order = []
    for group, s in scores.items():
        norm = np.linalg.norm(s)
        normed = s / norm if norm > 0 else s
        order += [(float(v), group, ch) for ch, v in enumerate(normed)]
    order.sort(key=lambda t: t[0])
    kept = {g.name: list(range(g.size)) for g in graph.prunable_groups}
    full = tcp.count_macs(graph, plan=kept)
    macs, pos, curve = full, 0, []
    for fraction in FRACTIONS:
        while macs > (1 - fraction) * full and pos < len(order):
            _, group, ch = order[pos]
            pos += 1
            if len(kept[group]) > 1:
                kept[group] = [c for c in kept[group] if c != ch]
                macs = tcp.count_macs(graph, plan=kept)
        tcp.set_kept_channels(gated, kept, graph=graph)
        curve.append(accuracy())
    tcp.set_kept_channels(
        gated, {g.name: list(range(g.size)) for g in graph.prunable_groups}, graph=graph
    )
    return curve


# ---------------------------------------------------------------------- timing
def interleaved_medians(fns: dict, reps: int = 40) -> dict:
    """Median seconds of each function, timed in turn within every repetition so that load
    from other processes on a shared machine hits them alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list] = {k: [] for k in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


def step_ratios(model, x, y) -> dict:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    gated = tcp.wrap(copy)
    optimizer = keras.optimizers.Adam(1e-5)

    @tf.function
    def train_step(bx, by):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(LOSS.call(by, gated(bx, training=True)))
        grads = tape.gradient(loss, gated.trainable_variables)
        optimizer.apply(grads, gated.trainable_variables)
        return loss

    fns = {"train": lambda: float(train_step(x, y))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, sigs in [("taylor", "taylor"), ("all presets", list(signals.PRESETS)),
                          ("all enumerated", signals.enumerate())]:  # fmt: skip
            acc = SaliencyAccumulator(gated, loss=LOSS, signals=[sigs] if isinstance(sigs, str)
                                      else list(sigs))  # fmt: skip
            fns[key] = lambda acc=acc: acc.update(x, y)
        medians = interleaved_medians(fns)
    out = {"batch": int(len(y)), "train_step_s": medians.pop("train")}
    for key, seconds in medians.items():
        out[key] = {"collect_step_s": seconds, "ratio": seconds / out["train_step_s"]}
    return out


# ---------------------------------------------------------------------- report
def label(key: str) -> str:
    return PRESET_OF.get(key, key)


def write_report(result: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "signals.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    with open(os.path.join(out_dir, "signals.md"), "w") as f:
        f.write(markdown(result))
    plot(result, os.path.join(out_dir, "signals.png"))


def markdown(r: dict) -> str:
    ranking = r["ranking"]
    lines = [
        "# Saliency signals against the oracle (MNIST, no retraining)",
        "",
        f"`{r['command']}` on {r['date']} ({r['machine']}): {r['seconds']:.0f} s.",
        "",
        f"Model: {r['model']}; {r['channels']} prunable channels in {r['groups']} groups, "
        f"trained {r['epochs']} epochs on 4,000 real MNIST digits with {r['seeds']} seeds "
        f"(test accuracy {', '.join(f'{a:.4f}' for a in r['accuracy'])}). "
        f"{len(ranking)} signals ranked: {r['enumerated']} from `signals.enumerate()` plus the "
        "presets outside it, and FPGM (He et al. 2019, arXiv:1811.00250; outside the "
        "taxonomy, through the importance protocol). Numbers are means over the seeds.",
        "",
        "Quality = Spearman rank correlation with the oracle |loss change| of switching each "
        "channel off alone, measured on the 1,000 training images the signals are collected "
        "on (Molchanov 2017, Table 1 method): *global* over all channels (scores must be "
        "comparable across layers) and *per layer* (averaged). LOWER score = prune first, so a "
        "good signal correlates positively.",
        "",
    ]
    lines += top_table(ranking, "global", 15) + top_table(ranking, "per_layer", 10)
    lines += presets_table(ranking) + conclusions(r) + component_summary(ranking)
    lines += ["## Accuracy after removing MACs without retraining", "",
              "Greedy global ranking of per-group L2-normalised scores (so per-group scalings "
              "do not matter here), computed once on the full model; test accuracy, mean over "
              "seeds. Composed signals: the best 3 by global and by per-layer Spearman "
              "whose pruning order is not nearly (Spearman > 0.99) a preset's or another's.", "",
              "| signal | " + " | ".join(f"-{int(f * 100)}%" for f in FRACTIONS) + " | mean |",
              "|---|" + "---:|" * (len(FRACTIONS) + 1)]  # fmt: skip
    curves = r["curves"]
    for k in sorted(curves, key=lambda k: -np.mean(curves[k])):
        cells = " | ".join(f"{a:.3f}" for a in curves[k])
        lines.append(f"| `{label(k)}` | {cells} | {np.mean(curves[k]):.3f} |")
    t = r["timing"]
    lines += ["", "## Cost of collection", "",
              f"Batch of {t['batch']}; one training step (forward, backward, Adam, "
              f"`tf.function`) takes {t['train_step_s'] * 1e3:.1f} ms; a collection step is "
              "`SaliencyAccumulator.update` (medians of 40, timed in turn).", "",
              "| signals collected | step (ms) | collection / training |", "|---|---:|---:|"]  # fmt: skip
    for key in ("taylor", "all presets", "all enumerated"):
        lines.append(f"| {key} | {t[key]['collect_step_s'] * 1e3:.1f} | {t[key]['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def _ordered(ranking: dict, part: str) -> list[str]:
    return sorted(ranking, key=lambda k: -np.nan_to_num(ranking[k][part], nan=-2))


def top_table(ranking: dict, part: str, count: int) -> list[str]:
    """The best signals by ``part``; signals ranking the channels identically are merged."""
    title = "global" if part == "global" else "per-layer"
    lines = [f"## Best signals by {title} Spearman", "",
             "| rank | signal | global | per layer | same correlations as |", "|---:|---|---:|---:|---|"]  # fmt: skip
    groups: dict[tuple, list[str]] = {}
    for key in _ordered(ranking, part):
        groups.setdefault(_fingerprint(ranking[key]), []).append(key)
    position = {k: i + 1 for i, k in enumerate(_ordered(ranking, part))}
    for members in list(groups.values())[:count]:
        first, rest = members[0], members[1:]
        same = f"{len(rest)} more, e.g. `{label(rest[0])}`" if rest else ""
        e = ranking[first]
        lines.append(f"| {position[first]} | `{label(first)}` | {e['global']:.3f} | "
                     f"{e['per_layer']:.3f} | {same} |")  # fmt: skip
    return lines + [""]


def presets_table(ranking: dict) -> list[str]:
    lines = ["## The classic signals (presets, and FPGM)", "",
             "| rank (global) | preset | id | global | per layer | rank (per layer) |",
             "|---:|---|---|---:|---:|---:|"]  # fmt: skip
    by_global = {k: i + 1 for i, k in enumerate(_ordered(ranking, "global"))}
    by_layer = {k: i + 1 for i, k in enumerate(_ordered(ranking, "per_layer"))}
    for k in [k for k in _ordered(ranking, "global") if k in PRESET_OF]:
        e = ranking[k]
        lines.append(f"| {by_global[k]} | `{PRESET_OF[k]}` | `{k}` | {e['global']:.3f} | "
                     f"{e['per_layer']:.3f} | {by_layer[k]} |")  # fmt: skip
    return lines + [""]


def conclusions(r: dict) -> list[str]:
    ranking, curves = r["ranking"], r["curves"]
    lines = ["## Which composed signals beat the classic ones", ""]
    for part in ("global", "per_layer"):
        best = max((k for k in PRESET_OF if k in ranking),
                   key=lambda k: np.nan_to_num(ranking[k][part], nan=-2))  # fmt: skip
        beat = [k for k in _ordered(ranking, part)
                if k not in PRESET_OF and ranking[k][part] > ranking[best][part]]  # fmt: skip
        lines.append(f"* {part.replace('_', '-')} Spearman: **{len(beat)}** composed signals beat "
                     f"the best preset `{PRESET_OF[best]}` ({ranking[best][part]:.3f})"
                     + (": " + ", ".join(f"`{k}`" for k in beat[:3]) if beat else "") + ".")  # fmt: skip
    presets = [k for k in curves if k in PRESET_OF]
    best = max(presets, key=lambda k: np.mean(curves[k]))
    beat = [k for k in curves if k not in PRESET_OF and np.mean(curves[k]) > np.mean(curves[best])]
    lines.append(f"* Pruning without retraining (mean accuracy over 10-70% MACs removed): best "
                 f"preset `{PRESET_OF[best]}` ({np.mean(curves[best]):.3f}); composed signals "
                 f"that do better: " + (", ".join(f"`{k}`" for k in beat) if beat else "none")
                 + ".")  # fmt: skip
    return lines + [""]


def component_summary(ranking: dict) -> list[str]:
    """Median global Spearman per base and per scaling: what each component does."""
    lines = ["## What each component does (median global Spearman over all its signals)", ""]
    for part, index in (("base", 0), ("scaling", 2)):
        values: dict[str, list] = {}
        for k, v in ranking.items():
            if "|" in k and not np.isnan(v["global"]):
                values.setdefault(k.split("|")[index], []).append(v["global"])
        cells = sorted(values.items(), key=lambda kv: -np.median(kv[1]))
        lines.append(f"| {part} | " + " | ".join(k for k, _ in cells) + " |")
        lines.append("|---|" + "---:|" * len(cells))
        lines.append("| median | " + " | ".join(f"{np.median(v):.3f}" for _, v in cells) + " |")
        lines.append("")
    return lines


def plot(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranking = r["ranking"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    values = sorted(v["global"] for v in ranking.values() if not np.isnan(v["global"]))
    left.plot(values, color="0.6", label="all ranked signals (sorted)")
    for k, name in PRESET_OF.items():
        if k in ranking and not np.isnan(ranking[k]["global"]):
            y = ranking[k]["global"]
            left.scatter([np.searchsorted(values, y)], [y], zorder=3)
            left.annotate(name, (np.searchsorted(values, y), y), fontsize=7)
    left.set(xlabel="signals, sorted", ylabel="Spearman with oracle |dL|", title="(a) quality")
    left.legend(loc="upper left")
    xs = [int(f * 100) for f in FRACTIONS]
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(r["curves"]), 1)))
    for (k, curve), color in zip(r["curves"].items(), colors, strict=False):
        style = "-" if k in PRESET_OF else "--"
        right.plot(xs, curve, style, marker="o", ms=3, color=color, label=label(k)[:40])
    right.set(
        xlabel="% of MACs removed", ylabel="test accuracy (no retraining)", title="(b) pruning"
    )
    right.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_seed(seed: int, epochs: int, ids: list[str]) -> dict:
    """Train one model; its oracle, every signal's scores and their Spearman correlations."""
    model, (x_train, y_train, x_test, y_test) = train(epochs, seed)
    gated = tcp.wrap(model)
    calib = (x_train[:CALIBRATION], y_train[:CALIBRATION])
    accuracy = accuracy_fn(gated, x_test, y_test)
    oracle = oracle_loss_change(gated, calib, loss=LOSS, batch_size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bn_scale: no value for groups without BatchNorm
        scores = collect_saliency(gated, calib, loss=LOSS, signals=ids, batch_size=100)
    run = {"model": model, "gated": gated, "graph": tcp.ChannelGraph(gated), "scores": scores,
           "accuracy": accuracy, "base_accuracy": accuracy(), "oracle": oracle,
           "ranking": rank_against_oracle(scores, oracle), "data": (x_train, y_train)}  # fmt: skip
    print(f"seed {seed}: test accuracy {run['base_accuracy']:.4f}", flush=True)
    return run


def mean_ranking(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]["ranking"]:
        values = [r["ranking"][key] for r in runs]
        out[key] = {
            part: float(np.mean([v[part] for v in values])) for part in ("global", "per_layer")
        }
        out[key]["global_by_seed"] = [v["global"] for v in values]
    return out


def distinct_best(ranking: dict, part: str, count: int, scores: dict, skip=()) -> list[str]:
    """The best composed signals by ``part`` whose pruning order (per-group L2-normalised
    scores, first seed) is not nearly that of a preset or of one already chosen: many signals
    rank the channels (almost) identically, and per-group scalings cancel when pruning."""
    seen = [normalised(scores[k]) for k in list(PRESET_OF) + list(skip) if k in scores]
    out = []
    for key in sorted(ranking, key=lambda k: -np.nan_to_num(ranking[k][part], nan=-2)):
        mine = normalised(scores[key])
        if key in PRESET_OF or any(np.nan_to_num(spearman(mine, o), nan=1) > 0.99 for o in seen):
            continue
        seen.append(mine)
        out.append(key)
        if len(out) == count:
            break
    return out


def normalised(by_group: dict) -> np.ndarray:
    return np.concatenate([s / (np.linalg.norm(s) or 1.0) for s in by_group.values()])


def _fingerprint(entry: dict) -> tuple:
    return (round(entry["global"], 4), round(entry["per_layer"], 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, 1/10 of signals")
    parser.add_argument("--seeds", type=int, default=3, help="models trained (default 3)")
    parser.add_argument("-o", "--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    start = time.time()
    epochs, seeds = (2, 1) if args.quick else (5, args.seeds)
    enumerated = signals.enumerate()
    ids = [s.id for s in (enumerated[::10] if args.quick else enumerated)]
    ids += [s for s in signals.PRESETS.values() if s not in ids] + OUTSIDE
    runs = [run_seed(seed, epochs, ids) for seed in range(seeds)]
    ranking = mean_ranking(runs)
    first = runs[0]["scores"]
    composed = distinct_best(ranking, "global", TOP_COMPOSED // 2, first)
    composed += distinct_best(ranking, "per_layer", TOP_COMPOSED // 2, first, skip=composed)
    curves = {}
    for key in list(signals.PRESETS.values()) + OUTSIDE + composed:
        if key in runs[0]["scores"]:
            per_seed = [prune_curve(r["gated"], r["graph"], r["scores"][key], r["accuracy"])
                        for r in runs]  # fmt: skip
            curves[key] = np.mean(per_seed, axis=0).tolist()
    x_train, y_train = runs[0]["data"]
    timing = step_ratios(runs[0]["model"], x_train[:64], y_train[:64])
    print(f"collection / training step: {timing['taylor']['ratio']:.2f} (taylor)", flush=True)
    graph = runs[0]["graph"]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": "3 x (Conv3x3-BN-ReLU-MaxPool) 16/32/32, Flatten, Dense(10)",
        "epochs": epochs,
        "seeds": seeds,
        "accuracy": [r["base_accuracy"] for r in runs],
        "groups": len(graph.prunable_groups),
        "channels": sum(g.size for g in graph.prunable_groups),
        "enumerated": len(enumerated),
        "oracle": [{g: v.tolist() for g, v in r["oracle"].items()} for r in runs],
        "ranking": ranking,
        "curves": curves,
        "timing": timing,
        "command": "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/signals.py"
        + (" --quick" if args.quick else ""),
        "seconds": time.time() - start,
    }
    write_report(result, args.out)
    print(markdown(result))


if __name__ == "__main__":
    main()
