"""Issue 18: how often the issue's three-seed accuracy test passes, over every three-seed
subset of the nine seeds measured (plan, addendum 10: a description for the owner's
decision, not a reading that can say the item met; nothing is chosen from it).

For each of the C(n, 3) subsets of the seeds every (cell, configuration) was measured on (the
same seeds for every configuration: they share the dense models) and for each configuration
taken in turn as "the default", the issue's test exactly as ``defaults_report.checks``
applies it (``defaults_report.verdict``: level with the best of the others within one
standard deviation, the larger of the two; no seed more than 2 points below the mean of the
other two), in every cell. Reported: the fraction of subsets on which each configuration
passes in all cells (with and without ``random_mean`` as a rival), and for the library's
default which cells fail and how; on the test split and on the validation split. Then the
default's paired gap to each rival (seed by seed, mean and standard error) on both splits.

Usage: python benchmarks/defaults_subsets.py [--runs defaults_runs_cosine
defaults_runs_cosine_b defaults_runs_cosine_c] [--out defaults_subsets]
(folders under benchmarks/results/; the default: the cosine protocol's seeds 0-8).
Writes benchmarks/results/<out>.json and .md. Reads the runs only (seconds).
"""

from __future__ import annotations

import argparse
import itertools
import os

import defaults_report as report
import numpy as np
from _results import write_results

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDERS = ("defaults_runs_cosine", "defaults_runs_cosine_b", "defaults_runs_cosine_c")
BASELINE = "random_mean"  # the rival the other open reading leaves out


def per_seed(runs, keep) -> dict:
    """{cell: {config: {seed: {"val", "test"}}}} of the configurations in ``keep``."""
    out: dict = {}
    for run in runs:
        if run["config"] in keep:
            cell = f"{run['arch']}@{run['target']}"
            entry = out.setdefault(cell, {}).setdefault(run["config"], {})
            entry[run["seed"]] = {"val": float(run["val"]), "test": float(run["test"])}
    return out


def common_seeds(values) -> list[int]:
    """The seeds measured for every (cell, configuration)."""
    sets = [set(seeds) for configs in values.values() for seeds in configs.values()]
    return sorted(set.intersection(*sets))


def verdicts(values, subset, default, split, rivals) -> dict:
    """{cell: (level, collapse)} of ``default`` against ``rivals`` on one subset."""
    out = {}
    for cell, configs in values.items():
        stats = {c: report.stat([configs[c][s][split] for s in subset])
                 for c in (default, *rivals)}  # fmt: skip
        out[cell] = report.verdict(stats, default)
    return out


def _passes(cell_verdicts: dict) -> bool:
    """Level and no collapse in every cell."""
    return all(level and not collapse for level, collapse in cell_verdicts.values())


def analyse(values, seeds, split) -> dict:
    """Pass rates over every three-seed subset of ``seeds`` on ``split``."""
    configs = sorted(next(iter(values.values())))
    subsets = list(itertools.combinations(seeds, 3))
    rates, no_baseline, cells = {}, {}, {}
    for default in configs:
        rivals = [c for c in configs if c != default]
        each = [verdicts(values, s, default, split, rivals) for s in subsets]
        rates[default] = float(np.mean([_passes(v) for v in each]))
        cells[default] = {cell: {"below": float(np.mean([not v[cell][0] for v in each])),
                                 "collapse": float(np.mean([v[cell][1] for v in each]))}
                          for cell in sorted(values)}  # fmt: skip
        if default != BASELINE:
            informed = [c for c in rivals if c != BASELINE]
            no_baseline[default] = float(np.mean([
                _passes(verdicts(values, s, default, split, informed)) for s in subsets]))  # fmt: skip
    return {"subsets": len(subsets), "pass_all_cells": rates,
            "pass_without_random": no_baseline, "cells": cells}


def paired_gaps(values, seeds, default) -> dict:
    """{cell: {rival: {split: (mean, standard error)}}} of the default's accuracy minus each
    rival's, seed by seed (the same dense model), in points."""
    out: dict = {}
    for cell, configs in sorted(values.items()):
        for rival in sorted(c for c in configs if c != default):
            for split in ("val", "test"):
                d = 100 * np.array([configs[default][s][split] - configs[rival][s][split]
                                    for s in seeds])  # fmt: skip
                se = float(np.std(d, ddof=1) / np.sqrt(len(d)))
                out.setdefault(cell, {}).setdefault(rival, {})[split] = (float(d.mean()), se)
    return out


def _gap_lines(gaps, default) -> list[str]:
    lines = [f"The default ({default}) minus each rival, seed by seed, mean +- standard error "
             "in points, validation / test; **bold** where the two splits disagree in sign "
             "by more than one standard error each (the splits are fixed for every seed: the "
             "same 800 and 1,000 digits):", "",
             "| cell | " + " | ".join(sorted(next(iter(gaps.values())))) + " |",
             "|---" * (1 + len(next(iter(gaps.values())))) + "|"]  # fmt: skip
    for cell, rivals in gaps.items():
        row = []
        for rival in sorted(rivals):
            (v, v_se), (t, t_se) = rivals[rival]["val"], rivals[rival]["test"]
            text = f"{v:+.2f} +- {v_se:.2f} / {t:+.2f} +- {t_se:.2f}"
            flip = v * t < 0 and abs(v) > v_se and abs(t) > t_se
            row.append(f"**{text}**" if flip else text)
        lines.append(f"| {cell} | " + " | ".join(row) + " |")
    return lines


def _lines(result, split, default) -> list[str]:
    rates, informed = result["pass_all_cells"], result["pass_without_random"]
    lines = [f"**{split} split**: fraction of the {result['subsets']} three-seed subsets on "
             "which the configuration, taken as the default, passes the issue's test in all "
             "six cells (against all the others / with random not counted as a rival):", "",
             "| configuration | passes, every rival | passes, random not a rival |",
             "|---|---|---|"]  # fmt: skip
    for c in sorted(rates, key=lambda c: -rates[c]):
        mark = f"**{c}** (the default)" if c == default else c
        other = f"{100 * informed[c]:.0f}%" if c in informed else "-"
        lines.append(f"| {mark} | {100 * rates[c]:.0f}% | {other} |")
    lines += ["", f"The default ({default}), per cell: fraction of subsets where it is NOT "
              "level with the best / where a seed of it is more than 2 points below the other "
              "two:", "", "| cell | not level | collapse |", "|---|---|---|"]  # fmt: skip
    for cell, f in result["cells"][default].items():
        lines.append(f"| {cell} | {100 * f['below']:.0f}% | {100 * f['collapse']:.0f}% |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(FOLDERS))
    parser.add_argument("--out", default="defaults_subsets")
    args = parser.parse_args()
    folders = [os.path.join(HERE, "results", f) for f in args.runs]
    missing = [f for f, path in zip(args.runs, folders) if not os.path.isdir(path)]
    if missing:
        parser.error(f"--runs names folders under benchmarks/results/; not found: {missing}")
    runs = report._load(folders)
    if not runs:
        parser.error(f"no run JSONs in {args.runs}")
    default, other_code, cells = report.main_cells(runs)
    keep = set.intersection(*(set(configs) for configs in cells.values()))
    values = per_seed(runs, keep)
    seeds = common_seeds(values)
    if len(seeds) < 3 or default not in keep:
        parser.error(f"need three seeds common to every run and the default's runs; "
                     f"got seeds {seeds}, default {default}")
    results = {split: analyse(values, seeds, split) for split in ("test", "val")}
    gaps = paired_gaps(values, seeds, default)
    text = "\n".join([
        f"The issue's accuracy test (per cell: level with the best within one std, the larger "
        f"of the two; no seed more than 2 points below the other two) over every three-seed "
        f"subset of seeds {', '.join(map(str, seeds))} ({', '.join(args.runs)}; "
        f"{len(values)} cells, configurations {', '.join(sorted(keep))}; "
        f"other-code rows left out: {', '.join(other_code) or 'none'}). The subsets overlap: "
        "the fractions describe these seeds, not independent draws. A description for the "
        "owner's decision (plan, addendum 10); nothing is chosen from it. Command: "
        f"`python benchmarks/defaults_subsets.py --runs {' '.join(args.runs)}`.", "",
        *_lines(results["test"], "test", default), "",
        *_lines(results["val"], "validation", default), "",
        *_gap_lines(gaps, default),
    ])  # fmt: skip
    write_results(args.out, text, {"seeds": seeds, "default": default, **results,
                                   "paired_gaps": gaps})  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
