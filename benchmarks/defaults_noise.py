"""Issue 18: how noisy is one seed of benchmarks/defaults.py on the plain CNN?

Two measurements of the protocol's own noise, against which the issue's "collapse" (a seed
more than 2 points below the mean of the other two) is read:

* ``dense``: the dense plain CNN of each seed (the protocol's: Adam 1e-3, batch 64, 15 epochs
  on the 3,200 training digits), retrained with validation and test accuracy recorded after
  every epoch: how much one epoch's end moves the accuracy when nothing is pruned.
* ``rerun``: runs of benchmarks/defaults.py repeated with the same configuration, seed and
  target (``--runs defaults_runs_rerun``), against the first runs (``defaults_runs``): how far
  the same procedure lands from itself after a change of float rounding. The first runs
  compacted the model every round, the reruns use the gated rounds (the same model after each
  round to float tolerance). With the same code a run is bitwise repeatable: the
  ``--trajectory`` runs of defaults_runs_traj give the reruns' accuracies exactly.
* ``shuffles``: ONE pruned network per (architecture, criterion, seed, target) (``--archs``,
  ``--configs``; default the plain CNN and the default criterion, ``taylor_local``, pruned as
  in benchmarks/defaults.py), then the protocol's 5 extra epochs run ``--orders`` times, each
  with its own shuffling of the training digits (``keras.utils.set_random_seed(3000 + k)``
  before the fit; everything else the same): how much the last five epochs' order alone moves
  the number the collapse test reads. One JSON per network in results/defaults_shuffles/
  (several processes can share the list).

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/defaults_noise.py [--parts dense rerun shuffles]
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
from defaults_report import low_seeds  # noqa: E402

LAST = 5  # the last epochs of the dense run whose spread is reported


def dense_epochs(seed, splits, epochs=15) -> dict:
    """Validation and test accuracy after each epoch of the protocol's dense training."""
    keras.utils.set_random_seed(seed)
    model = defaults._compile(defaults.ARCHS["cnn"]())
    out = {"val": [], "test": []}
    model.fit(*splits["train"], batch_size=64, epochs=epochs, verbose=0,
              callbacks=[defaults.each_epoch(model, splits, out)])
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
                      # by position: layer names carry a per-process suffix
                      "same_widths": list(a["widths"].values()) == list(b["widths"].values())})
    return pairs


def shuffles(seed, target, splits, orders, config="taylor_local", arch="cnn",
             carried=False, schedule="constant") -> dict:  # fmt: skip
    """One pruned network, its 5 extra epochs under ``orders`` shuffle orders (with a fresh
    Adam each time, its rate under ``schedule``, or ``carried``: the optimizer ``prune()``
    returned, its state put back before each order)."""
    dense, _ = defaults.dense_model(arch, seed, splits, 15)
    model = defaults.prune_copy(dense, arch, seed, target, config, splits, fresh=not carried)[0]
    start = model.get_weights()
    optimizer = [v.numpy() for v in model.optimizer.variables] if carried else None
    out = {"widths": list(defaults.widths(model).values()), "orders": [],
           "after_pruning": {split: defaults._accuracy(model, splits[split])
                             for split in ("val", "test")}}  # fmt: skip
    for k in range(orders):
        model.set_weights(start)
        if carried:
            for variable, value in zip(model.optimizer.variables, optimizer, strict=True):
                variable.assign(value)
        else:
            # a fresh Adam, as the protocol's extra epochs
            model = defaults._compile(model, schedule, defaults.extra_steps(splits, 5))
        keras.utils.set_random_seed(3000 + k)
        model.fit(*splits["train"], batch_size=64, epochs=5, verbose=0)
        out["orders"].append({"val": defaults._accuracy(model, splits["val"]),
                              "test": defaults._accuracy(model, splits["test"])})
    return out


SHUFFLES = os.path.join(_results.RESULTS_DIR, "defaults_shuffles")  # one JSON per network


def run_shuffles(args) -> None:
    """Every (config, seed, target) network of ``args`` not yet in SHUFFLES (several
    processes may share the list: each network is claimed by one)."""
    splits = defaults.load_splits()
    os.makedirs(SHUFFLES, exist_ok=True)
    todo = [(a, c, s, t) for a in args.archs for c in args.configs for s in args.seeds
            for t in args.targets]  # fmt: skip
    for arch, config, seed, target in todo:
        name = f"{config}+carried" if args.carried else config
        name += "" if args.schedule == "constant" else f"+{args.schedule}"
        path = os.path.join(SHUFFLES, f"{arch}_{name}_s{seed}_t{target}.json")
        if os.path.exists(path) or not defaults._claim(path):
            continue
        run = shuffles(seed, target, splits, args.orders, config, arch, args.carried,
                       args.schedule)
        with open(path, "w") as f:
            json.dump(run, f, indent=1)
        os.remove(path + ".lock")
        print(os.path.basename(path), [f"{100 * o['test']:.1f}" for o in run["orders"]],
              flush=True)


def read_shuffles() -> dict:
    """{"<arch> <config>": {"s<seed>_t<target>": run}} from SHUFFLES."""
    out: dict = {}
    for path in sorted(glob.glob(os.path.join(SHUFFLES, "*.json"))):
        arch, rest = os.path.basename(path)[:-5].split("_", 1)
        config, seed, target = rest.rsplit("_", 2)
        with open(path) as f:
            out.setdefault(f"{arch} {config}", {})[f"{seed}_{target}"] = json.load(f)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["dense", "rerun"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--orders", type=int, default=4, help="shuffle orders (shuffles part)")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.25, 0.5])
    parser.add_argument("--carried", action="store_true",
                        help="shuffles part: the extra epochs go on with the optimizer prune() "
                             "returned (files named <config>+carried) instead of a fresh Adam")
    parser.add_argument("--schedule", default="constant", choices=defaults.SCHEDULES,
                        help="learning rate of the extra epochs (files named <config>+cosine)")
    parser.add_argument("--archs", nargs="+", default=["cnn"], choices=list(defaults.ARCHS),
                        help="architectures (shuffles part)")
    parser.add_argument("--configs", nargs="+", default=["taylor_local"],
                        choices=list(defaults.CONFIGS), help="criteria (shuffles part)")
    args = parser.parse_args()
    if args.carried and args.schedule != "constant":
        parser.error("--carried goes on with the optimizer prune() returned (its constant rate); "
                     f"it takes no --schedule. Received: --schedule {args.schedule}")
    path = os.path.join(_results.RESULTS_DIR, "defaults_noise.json")
    payload = json.load(open(path)) if os.path.exists(path) else {}
    if "dense" in args.parts:
        splits = defaults.load_splits()
        payload["dense"] = {str(s): dense_epochs(s, splits) for s in args.seeds}
    if "rerun" in args.parts:
        payload["rerun"] = reruns()
    if "shuffles" in args.parts:
        run_shuffles(args)
        payload["shuffles"] = read_shuffles()
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
    if payload.get("shuffles"):
        lines += _shuffle_lines(payload["shuffles"])
    if "trajectory" in args.parts:
        payload["trajectory"] = trajectories()
    if payload.get("trajectory"):
        lines += _trajectory_lines(payload["trajectory"])
    text = "\n".join(lines)
    _results.write_results("defaults_noise", text, payload)
    print(text)


def trajectories(folder="defaults_runs_traj") -> dict:
    """{config: {target: {seed: test after each extra epoch}}} from ``--trajectory`` runs."""
    out: dict = {}
    for path in sorted(glob.glob(os.path.join(_results.RESULTS_DIR, folder, "*.json"))):
        with open(path) as f:
            run = json.load(f)
        if "trajectory" in run:
            cell = out.setdefault(run["config"], {}).setdefault(str(run["target"]), {})
            cell[str(run["seed"])] = run["trajectory"]["test"]
    return out


def _trajectory_lines(runs) -> list[str]:
    lines = ["", "**The 5 extra epochs, epoch by epoch** (`python benchmarks/defaults.py --archs "
             "cnn --seeds 0 1 2 3 4 --configs taylor_local bn_scale_mean fisher_mean "
             "taylor_mean --runs defaults_runs_traj --trajectory`; rules in "
             "results/defaults_trajectory_plan.md; test). \"epoch 5\" is the number the "
             "issue's test reads; \"3-5\" the mean of epochs 3, 4 and 5:", "",
             "| configuration | target | seed: test after extra epochs 1-5 | low seeds, epoch 5 "
             "| low seeds, 3-5 mean |", "|---|---|---|---|---|"]  # fmt: skip
    for config, cells in sorted(runs.items()):
        for target, seeds in sorted(cells.items()):
            last = {s: t[-1] for s, t in seeds.items()}
            late = {s: float(np.mean(t[-3:])) for s, t in seeds.items()}
            shown = "; ".join(f"{s}: " + ", ".join(f"{100 * v:.1f}" for v in t)
                              for s, t in sorted(seeds.items()))  # fmt: skip
            lines.append(f"| {config} | {target} | {shown} | "
                         f"{', '.join(low_seeds(last)) or 'none'} | "
                         f"{', '.join(low_seeds(late)) or 'none'} |")  # fmt: skip
    return lines


def _shuffle_lines(by_config) -> list[str]:
    lines = ["", "**One pruned network, its last five epochs in different orders** (each "
             "criterion prunes once per seed and target; then the protocol's 5 extra epochs "
             "with a fresh Adam, each order its own shuffling of the training digits; test; "
             "`--parts shuffles --configs ...`):", "",
             "| architecture, criterion | seed | target | test after pruning (before the extra epochs) | test "
             "after the 5 extra epochs, per order | mean | range |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    ranges, means, by_group = [], {}, {}
    for config, runs in sorted(by_config.items()):
        for key, run in sorted(runs.items(), key=lambda kv: (kv[0].split("_")[1], kv[0])):
            seed, target = key[1:].split("_t")
            tests = [o["test"] for o in run["orders"]]
            ranges.append(max(tests) - min(tests))
            by_group.setdefault(config, []).append(ranges[-1])
            means.setdefault((config, target), {})[seed] = float(np.mean(tests))
            lines.append(f"| {config} | {seed} | {target} | "
                         f"{100 * run['after_pruning']['test']:.1f} | "
                         f"{', '.join(f'{100 * t:.1f}' for t in tests)} | "
                         f"{100 * np.mean(tests):.2f} | {100 * ranges[-1]:.1f} |")  # fmt: skip
    lines += ["", f"Range over the orders: median {100 * np.median(ranges):.1f}, largest "
              f"{100 * max(ranges):.1f} points ({len(ranges)} networks). By row (`+cosine`: "
              "the extra epochs' rate decays from 1e-3 to 0, `--schedule cosine`; `+carried`: "
              "the optimizer prune() returned): " + "; ".join(
                  f"{config} median {100 * np.median(r):.1f}, largest {100 * max(r):.1f} "
                  f"({len(r)})" for config, r in sorted(by_group.items())) + ".", "",
              "The collapse test read on the mean over the orders (a diagnosis, not the issue's "
              "test; results/defaults_trajectory_plan.md):", "",
              "| architecture, criterion | target | mean over seeds of the order means | seeds more than 2 "
              "points below the others |", "|---|---|---|---|"]  # fmt: skip
    for (config, target), seeds in sorted(means.items()):
        lines.append(f"| {config} | {target} | {100 * np.mean(list(seeds.values())):.2f} "
                     f"({len(seeds)} seeds) | {', '.join(low_seeds(seeds)) or 'none'} |")
    return lines


if __name__ == "__main__":
    main()

