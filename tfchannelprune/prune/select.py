"""Greedy choice of the channels to remove: ranking, normalisation, cost terms, floors.

Scores follow the signals' convention: lower = less important = removed first.

Cost terms, in the papers' units. Both need the FLOPs a channel saves (2 x its marginal MACs,
per example), which change after every removal because a channel's cost depends on its
neighbours' current widths, so they are recomputed after each one:

* Molchanov et al. 2017 (arXiv:1611.06440): ``normalised score - lam * flops_norm`` with
  ``flops_norm`` the channel's FLOPs divided by the largest per-channel FLOPs of the unpruned
  model (the paper's "normalised per-layer FLOPs", in [0, 1], a fixed scale); the paper uses
  ``lam`` of about 1e-3 with layer-wise L2-normalised Taylor scores.
* Theis et al. 2018 (arXiv:1801.05787): the Lagrangian ``L + beta * C`` gives
  ``score + beta * delta_C`` with ``delta_C = -FLOPs saved``: ``beta`` is a FIXED price in loss
  units (nats, as the Fisher signal) per FLOP per example, whatever the model's size now. The
  paper sweeps about 3e-4 .. 3e-1 without pinning the FLOP unit down; on the small CNNs here
  useful values are near 1e-7 .. 1e-5 per FLOP. ``beta="auto"`` is their hyperparameter-free
  ``beta*``: rank by ``score / FLOPs saved`` (loss per FLOP).

With ``cost="latency"`` both are priced per millisecond of predicted LiteRT latency instead of
per FLOP (a ``LatencyModel``, ``prune.latency_costs``): ``lam`` x ms saved over the largest
per-channel ms, ``beta`` in loss units per ms, ``beta="auto"`` ranks by score per ms saved
(HALP's latency-saliency ratio). ``target_latency`` stops at a predicted latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from tfchannelprune.core.cost import MarginalCosts, macs_for, marginal_for, params_for
from tfchannelprune.core.plans import ignored_groups
from tfchannelprune.prune.latency_costs import LatencyCosts

NORMALISATIONS = ("none", "l2", "max", "mean", "sum")
COSTS = ("macs", "latency")


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """How channels are chosen.

    Attributes:
        mode: "global" ranks channels of all groups together (scores normalised per group);
            "local" removes the same fraction from every group.
        normalize: per-group normalisation of scores before global ranking: "mean" (the
            default; the same values whatever the group's width), "l2" (Molchanov's
            layer-wise L2: about 1/sqrt(n) per channel in a group of n, so wide groups go
            first), "max", "sum" or "none".
        lam: Molchanov's FLOPs regularisation weight: normalised scores minus ``lam`` x the
            channel's FLOPs over the largest per-channel FLOPs of the unpruned model.
        beta: Theis's price of one FLOP (per example) in loss units, a float, or "auto"
            (score per FLOP saved, Theis's beta*).
        min_channels: floor of channels kept in every group.
        round_to: keep widths at multiples of this (a group loses ``round_to`` channels at a
            time once aligned); 1 disables it; "auto": widths chosen from the latency table,
            skipping those where a narrower width is not faster (needs a ``LatencyModel``).
        ignored_layers: layer names (bare or full paths) whose groups are never pruned: a
            group touching one as producer, consumer or channel-wise layer is kept whole.
        cost: what ``lam`` and ``beta`` price: "macs" (FLOPs saved) or "latency" (predicted
            ms saved, from a ``LatencyModel``).
    """

    mode: str = "global"
    normalize: str = "mean"
    lam: float = 0.0
    beta: float | str = 0.0
    min_channels: int = 1
    round_to: int | str = 1
    ignored_layers: tuple[str, ...] = ()
    cost: str = "macs"

    def __post_init__(self):
        if self.mode not in ("global", "local"):
            raise ValueError(f"mode must be 'global' or 'local'. Received: mode={self.mode!r}")
        if self.normalize not in NORMALISATIONS:
            raise ValueError(
                f"normalize must be one of {NORMALISATIONS}. Received: {self.normalize!r}"
            )
        if not (self.beta == "auto" or isinstance(self.beta, (int, float))):
            raise ValueError(f"beta must be a number or 'auto'. Received: beta={self.beta!r}")
        if self.mode == "local" and (self.lam or self.beta):
            raise ValueError(
                "mode='local' removes the same fraction from every group and has no cost "
                "term to price; use mode='global' with lam or beta. "
                f"Received: mode='local', lam={self.lam!r}, beta={self.beta!r}"
            )
        if self.cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}. Received: cost={self.cost!r}")
        if self.round_to != "auto" and not isinstance(self.round_to, int):
            raise ValueError(f"round_to must be an int or 'auto'. Received: {self.round_to!r}")
        if self.min_channels < 1 or (self.round_to != "auto" and self.round_to < 1):
            raise ValueError(
                "min_channels and round_to must be >= 1. "
                f"Received: min_channels={self.min_channels}, round_to={self.round_to}"
            )


def candidate_groups(graph, config: SelectionConfig) -> list:
    """Prunable groups not touched by an ignored layer (``core.plans.ignored_groups``)."""
    ignored = ignored_groups(graph, config.ignored_layers)
    return [g for g in graph.prunable_groups if g.name not in ignored]


def _normalise(scores: np.ndarray, how: str) -> np.ndarray:
    if how == "none" or scores.size == 0:
        return scores
    denom = {
        "l2": lambda s: np.sqrt(np.sum(s**2)),
        "max": lambda s: np.max(np.abs(s)),
        "mean": lambda s: np.mean(np.abs(s)),
        "sum": lambda s: np.sum(np.abs(s)),
    }[how](scores)
    return scores / denom if denom > 0 else scores


def floor_plan(graph, config: SelectionConfig) -> dict[str, list[int]]:
    """The smallest model the constraints allow: every candidate group at its floor."""
    return {
        g.name: list(range(_floor(g.size, config))) for g in candidate_groups(graph, config)
    }


def _step(config: SelectionConfig) -> int:
    """The fixed width multiple (``round_to="auto"`` has none: the table chooses)."""
    return 1 if config.round_to == "auto" else config.round_to


def _floor(size: int, config: SelectionConfig) -> int:
    floor = min(size, config.min_channels)
    if _step(config) > 1 and size >= config.round_to:
        floor = max(config.round_to, int(np.ceil(floor / config.round_to)) * config.round_to)
    return min(size, floor)


def _unit(kept: int, size: int, config: SelectionConfig, name=None, latency=None) -> int:
    """How many channels a group loses in one greedy step (keeps widths aligned)."""
    if config.round_to == "auto" and latency is not None:
        below = latency.next_width(name, kept)
        return kept - below if below is not None else kept
    if _step(config) > 1 and size >= config.round_to:
        return kept % config.round_to or config.round_to
    return 1


def select_channels(
    graph,
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    config: SelectionConfig,
    *,
    target_macs: float | None = None,
    target_params: float | None = None,
    max_channels: int | None = None,
    target_latency: float | None = None,
    latency=None,
) -> dict[str, np.ndarray]:
    """Greedily switch channels off until a target is met; return the new keep masks.

    Args:
        graph: ``ChannelGraph`` of the wrapped model.
        scores: {group: per-channel score, lower = remove first}.
        masks: current {group: boolean keep mask}; switched-off channels stay off.
        config: the ``SelectionConfig``.
        target_macs / target_params: absolute MACs / params to get down to.
        max_channels: remove at most this many channels in this call.
        target_latency: predicted LiteRT latency (ms) to get down to (needs ``latency``).
        latency: a ``LatencyModel`` of the model (or of the one it was compacted from), for
            ``target_latency``, ``cost="latency"`` and ``round_to="auto"``.

    Returns:
        {group: boolean keep mask} for every candidate group. A group missing from
        ``scores`` (a criterion with no value for it: ``bn_scale`` without a BatchNorm,
        FPGM without a kernel) is kept as it is, not ranked as if scored zero.
    """
    candidates = {g.name: g for g in candidate_groups(graph, config)}
    fixed = {n: np.asarray(m, dtype=bool) for n, m in masks.items() if n not in candidates}
    every = {
        n: np.array(masks.get(n, np.ones(g.size, bool)), dtype=bool)
        for n, g in candidates.items()
    }
    groups = {n: g for n, g in candidates.items() if n in scores}
    fixed.update({n: m for n, m in every.items() if n not in groups})
    masks = {n: every[n] for n in groups}
    needs_table = target_latency is not None or config.cost == "latency"
    if latency is None and (needs_table or config.round_to == "auto"):
        raise ValueError(
            "target_latency, cost='latency' and round_to='auto' need a LatencyModel of the "
            "model (tfchannelprune.LatencyModel(model)). Received: latency=None"
        )
    targets = (target_macs, target_params, target_latency)
    if config.mode == "local":
        chosen = _select_local(graph, groups, scores, masks, fixed, config, targets, latency,
                               max_channels)
        return {**every, **chosen}
    # normalised once per call over the channels kept at its start (Molchanov normalises
    # the scores of each evaluation), so an event's order does not drift as it removes
    normalised = {}
    for name, group in groups.items():
        raw = np.asarray(scores[name], dtype=np.float64)
        kept = masks[name]
        values = np.zeros(group.size)
        values[kept] = _normalise(raw[kept], config.normalize)
        normalised[name] = values
    # kept channels of each group, lowest normalised score first; removals take the front
    queue = {n: np.flatnonzero(masks[n])[np.argsort(normalised[n][masks[n]], kind="stable")]
             for n in groups}  # fmt: skip
    taken = dict.fromkeys(groups, 0)
    removed = 0
    costs = MarginalCosts(graph, {**fixed, **masks})  # updated layer by layer as we go
    ms = LatencyCosts(latency, graph, {**fixed, **masks}) if latency is not None else None
    reference = 1.0
    if config.lam:
        reference = (ms.largest_channel_ms(groups) if config.cost == "latency"
                     else _largest_channel_flops(graph, groups))  # fmt: skip
    def next_unit(name):
        return _next_unit(groups[name], normalised[name], queue[name], taken[name], config, ms)

    units = {n: next_unit(n) for n in groups}  # what each group would lose next
    while True:
        if _reached(graph, masks, fixed, costs.macs, targets, ms):
            break
        if max_channels is not None and removed >= max_channels:
            break
        saved = _saved_fn(config, costs, ms)
        choice = _best_unit(units, saved, reference, config)
        if choice is None:
            break  # every group at its floor
        name, channels = choice
        masks[name][channels] = False
        taken[name] += len(channels)
        costs.update(name, masks)
        if ms is not None:
            ms.update(name, masks)
        # a table's allowed widths may move with the neighbours: recompute every unit then
        for n in (groups if config.round_to == "auto" else [name]):
            units[n] = next_unit(n)
        removed += len(channels)
    return {**every, **masks}


def _saved_fn(config, costs, ms):
    """(group, channels removed) -> cost saved, in FLOPs or ms; None when ranking ignores it."""
    if not _cost_aware(config):
        return None
    if config.cost == "latency":
        return ms.saved
    marginal = costs.marginal
    return lambda name, unit: 2.0 * marginal.get(name, 0.0) * unit  # FLOPs, per example


def _reached(graph, masks, fixed, macs, targets, ms=None) -> bool:
    target_macs, target_params, target_latency = targets
    if target_macs is not None and macs > target_macs:
        return False
    if target_params is not None and params_for(graph, {**fixed, **masks}) > target_params:
        return False
    if target_latency is not None and ms.total > target_latency:
        return False
    return any(t is not None for t in targets)


def _cost_aware(config) -> bool:
    return config.lam != 0 or config.beta != 0


def _largest_channel_flops(graph, groups) -> float:
    """The largest FLOPs one channel saves in the unpruned model (Molchanov's normaliser)."""
    full = marginal_for(graph, {})
    return max((2.0 * full.get(name, 0.0) for name in groups), default=1.0) or 1.0


def _next_unit(group, scores, queue, taken, config, ms=None):
    """(channels, summed normalised score) a group would lose next, or None at its floor."""
    kept = len(queue) - taken
    unit = _unit(kept, group.size, config, group.name, ms)
    if unit < 1 or kept - unit < _floor(group.size, config):
        return None
    channels = queue[taken : taken + unit]
    return channels, float(np.sum(scores[channels]))


def _best_unit(units, saved_fn, reference, config):
    best, best_value = None, np.inf
    for name, candidate in units.items():
        if candidate is None:
            continue
        channels, value = candidate
        saved = saved_fn(name, len(channels)) if saved_fn is not None else 0.0  # FLOPs or ms
        if config.round_to == "auto":  # steps of different sizes: compare per channel
            value, saved = value / len(channels), saved / len(channels)
        if config.lam:
            value -= config.lam * saved / reference
        if config.beta == "auto":
            value = value / max(saved, 1e-12) if saved_fn is not None else value
        elif config.beta:
            value -= config.beta * saved
        if value < best_value:
            best, best_value = (name, channels), value
    return best


def _select_local(graph, groups, scores, masks, fixed, config, targets, latency, cap=None):
    """Same fraction from every group, bisected to meet the target; with ``cap``, stops
    once about ``cap`` channels are off and gives back the best-scored extras of rounding."""
    start = {n: int(m.sum()) for n, m in masks.items()}
    ms = LatencyCosts(latency, graph, masks) if latency is not None else None

    def masks_at(fraction):
        out = {}
        for name, group in groups.items():
            kept = np.flatnonzero(masks[name])
            width = max(_floor(group.size, config), int(round(start[name] * fraction)))
            if _step(config) > 1 and group.size >= config.round_to:
                width = max(_floor(group.size, config),
                            int(np.ceil(width / config.round_to)) * config.round_to)  # fmt: skip
            if config.round_to == "auto":
                width = ms.snap_up(name, width)
            width = min(width, len(kept))
            raw = np.asarray(scores[name], dtype=np.float64)
            keep = kept[np.argsort(-raw[kept], kind="stable")[:width]]
            mask = np.zeros(group.size, bool)
            mask[keep] = True
            out[name] = mask
        return out

    def enough(trial):
        if cap is not None and sum(start.values()) - remaining_channels(trial, groups) >= cap:
            return True
        trial = {**fixed, **trial}
        trial_ms = LatencyCosts(latency, graph, trial) if latency is not None else None
        return _reached(graph, trial, {}, macs_for(graph, trial), targets, trial_ms)

    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if enough(masks_at(mid)) else (lo, mid)
    chosen = masks_at(lo)
    if cap is not None and _step(config) == 1:
        _give_back(chosen, masks, groups, scores, config, sum(start.values()) - cap)
    return chosen


def _give_back(chosen, masks, groups, scores, config, keep_at_least):
    """Switch back on the best-scored (group-normalised) channels that ``chosen`` removed
    until at least ``keep_at_least`` stay: a cap is a cap, whatever the widths' rounding."""
    extra = keep_at_least - remaining_channels(chosen, groups)
    if extra <= 0:
        return
    removed = []
    for name in groups:
        raw = np.asarray(scores[name], dtype=np.float64)
        normalised = np.zeros_like(raw)
        normalised[masks[name]] = _normalise(raw[masks[name]], config.normalize)
        removed += [(normalised[i], name, i) for i in np.flatnonzero(masks[name] & ~chosen[name])]
    for _, name, i in sorted(removed, key=lambda t: -t[0])[:extra]:
        chosen[name][i] = True


def remaining_channels(masks: Mapping[str, np.ndarray], names: Sequence[str]) -> int:
    return int(sum(int(masks[n].sum()) for n in names if n in masks))


def check_reachable(graph, config, candidates, targets: Mapping, original: Mapping) -> None:
    """Raise when the floors (min_channels, round_to, ignored_layers) make a target
    unreachable, saying the best reachable value.

    Args:
        targets: {"target_macs", "target_params" (fractions), "target_channels"}, None ok.
        original: {"macs", "params"} of the unpruned model.
    """
    floor = {n: np.zeros(graph.group(n).size, bool) for n in candidates}
    for name, kept in floor_plan(graph, config).items():
        floor[name][kept] = True
    best = {
        "target_macs": macs_for(graph, floor) / max(original["macs"], 1),
        "target_params": params_for(graph, floor) / max(original["params"], 1),
    }
    constraints = (
        f"min_channels={config.min_channels}, round_to={config.round_to}, "
        f"ignored_layers={list(config.ignored_layers)}"
    )
    for name in ("target_macs", "target_params"):
        target = targets.get(name)
        if target is not None and target < best[name] - 1e-9:
            raise ValueError(
                f"{name}={target} cannot be reached under {constraints}: the best reachable "
                f"is {best[name]:.4f} of the original. Lower min_channels, ignore fewer layers "
                f"or raise the target. Received: {name}={target}"
            )
    fewest = sum(int(m.sum()) for m in floor.values())
    if targets.get("target_channels") is not None and targets["target_channels"] < fewest:
        raise ValueError(
            f"target_channels={targets['target_channels']} cannot be reached under "
            f"{constraints}: the fewest channels reachable is {fewest}."
        )
