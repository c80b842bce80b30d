"""The reading rule of the defaults benchmark (issue 18): ``defaults_report.verdict`` (level
within one standard deviation, the larger of the two; no seed more than 2 points below the
other two) and the three-seed subsets of ``benchmarks/defaults_subsets.py``, on made-up runs
whose answers are known."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import defaults_report  # noqa: E402
import defaults_subsets  # noqa: E402


def _stats(values):
    import numpy as np

    return float(np.mean(values)), float(np.std(values)), list(values)


def test_level_uses_the_larger_standard_deviation_and_collapse_the_other_seeds_mean():
    best = _stats([0.970, 0.975, 0.965])  # mean 0.970, std 0.0041
    just_level = _stats([0.966, 0.966, 0.966])  # 0.4 points under, std 0: the best's std decides
    below = _stats([0.960, 0.960, 0.960])  # 1.0 point under
    assert defaults_report.verdict({"a": best, "b": just_level}, "b") == (True, False)
    assert defaults_report.verdict({"a": best, "b": below}, "b") == (False, False)
    fallen = _stats([0.95, 0.95, 0.929])  # 2.1 points under the other two: a collapse
    assert defaults_report.verdict({"a": fallen}, "a") == (True, True)
    assert defaults_report.verdict({"a": _stats([0.95, 0.95, 0.931])}, "a") == (True, False)


def _runs(table):
    """Run records like benchmarks/defaults.py writes: {config: [test per seed]} in one cell;
    validation = test."""
    return [{"arch": "cnn", "target": 0.25, "config": c, "seed": s, "val": v, "test": v}
            for c, values in table.items() for s, v in enumerate(values)]  # fmt: skip


def test_subsets_pass_rates_follow_the_rule():
    # "good" beats "other" on every seed: it passes on every subset, "other" on none
    runs = _runs({"good": [0.95] * 5, "other": [0.90] * 5})
    values = defaults_subsets.per_seed(runs, {"good", "other"})
    assert defaults_subsets.common_seeds(values) == [0, 1, 2, 3, 4]
    result = defaults_subsets.analyse(values, [0, 1, 2, 3, 4], "test")
    assert result["subsets"] == 10
    assert result["pass_all_cells"] == {"good": 1.0, "other": 0.0}
    # one fallen seed of "good": the subsets holding it collapse (6 of 10 hold seed 4)
    runs = _runs({"good": [0.95, 0.95, 0.95, 0.95, 0.90], "other": [0.90] * 5})
    values = defaults_subsets.per_seed(runs, {"good", "other"})
    result = defaults_subsets.analyse(values, [0, 1, 2, 3, 4], "test")
    assert result["pass_all_cells"]["good"] == pytest.approx(0.4)
    assert result["cells"]["good"]["cnn@0.25"]["collapse"] == pytest.approx(0.6)


def test_random_left_out_as_a_rival_in_the_second_reading():
    runs = _runs({"taylor": [0.95] * 4, "random_mean": [0.97] * 4, "l1": [0.90] * 4})
    values = defaults_subsets.per_seed(runs, {"taylor", "random_mean", "l1"})
    result = defaults_subsets.analyse(values, [0, 1, 2, 3], "test")
    assert result["pass_all_cells"]["taylor"] == 0.0
    assert result["pass_without_random"]["taylor"] == 1.0
    assert "random_mean" not in result["pass_without_random"]
    gaps = defaults_subsets.paired_gaps(values, [0, 1, 2, 3], "taylor")
    mean, se = gaps["cnn@0.25"]["random_mean"]["test"]
    assert mean == pytest.approx(-2.0) and se == pytest.approx(0.0, abs=1e-9)
