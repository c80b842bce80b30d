"""Scores of each signal from a ``SaliencyAccumulator``'s accumulated state (NumPy).

Data signals are rebuilt gate by gate from their per-example statistics and summed over the
gates and positions of a group; ``mask_delta`` signals read the group's own sums (one shared
mask per channel); weight, BatchNorm and random signals read the weights.
"""

from __future__ import annotations

import numpy as np

from tfchannelprune.saliency import mask_delta
from tfchannelprune.saliency import signals as signals_lib
from tfchannelprune.saliency.reductions import split_plan
from tfchannelprune.saliency.taxonomy import STATS_FOR, from_stats


def signal_scores(acc, signal, values, n: int) -> dict[str, np.ndarray]:
    """{group: scores} of one signal from ``values`` ({state key: array}) over ``n`` examples."""
    groups = acc.graph.prunable_groups
    if signal.kind == "random":
        return signals_lib.random_scores(signal, groups)
    if signal.kind == "mask":
        return {
            g.name: mask_delta.scores(signal, values[("mask", g.name)], n)
            if ("mask", g.name) in values else np.zeros(g.size, np.float64)
            for g in groups
        }
    scores = {g.name: np.zeros(g.size, np.float64) for g in groups}
    if signal.kind == "data":
        contributions = _data_contributions(acc, signal, values, n)
    elif signal.kind == "scalar":
        contributions = list(signals_lib.bn_contributions(signal, acc._bns))
        seen = {c[0] for c in contributions}
        signals_lib.warn_missing(signal, [g for g in scores if g not in seen])
        scores = {g: s for g, s in scores.items() if g in seen}
    else:
        grads = {key[1]: values[key] / max(n, 1) for key in values if key[0] == "grad"}
        contributions = signals_lib.weight_contributions(signal, acc._sources, grads)
    for group, channels, v in contributions:
        np.add.at(scores[group], channels, v)
    factor = signal.parsed.factor
    return {g: s * factor for g, s in scores.items()}


def _data_contributions(acc, signal, values, n: int):
    plan = signal.parsed
    family, prefix = split_plan(plan)
    stage_index = 1 if family == "n" else 0
    op = plan.stages[stage_index].op
    for gate, info in acc._gates.items():
        stats = {}
        for stat in STATS_FOR[op]:
            kind = "max" if stat == "max" else "sum"
            rows = acc._rows[(gate, family, kind)]
            stats[stat] = values[(gate, family, kind)][rows.index((signal.base, prefix, stat))]
        count = values[(gate, "elements", "sum")] if family == "nhw" else n
        x = from_stats(op, stats, count)
        axes = {"hw": (0,)} if family == "n_hw" else {}
        x = signals_lib.apply_plan_np(x, plan, axes, start=stage_index + 1)
        for group, (index, channels) in info["positions"].items():
            yield group, channels, x[index]
