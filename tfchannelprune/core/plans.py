"""Plans: {group name: kept channel indices}, checked against a graph, read from and written
to the gates of a wrapped model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tfchannelprune.core.checks import layer_names
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.gate import gate_layers
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.errors import UnsupportedLayerError


def as_graph(model) -> ChannelGraph:
    """``model``'s ChannelGraph (``model`` may already be one)."""
    return model if isinstance(model, ChannelGraph) else ChannelGraph(model)


def keep_masks(graph: ChannelGraph, plan: Mapping[str, Sequence[int]] | None):
    """Masks from the model's gates, overridden group by group by ``plan``."""
    masks = gate_masks(graph) if graph.gate_paths else {}
    if plan is not None:
        masks.update(validate_plan(graph, plan))
    return masks


def validate_plan(graph, plan: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Check a plan {group name: kept channel indices}; return {name: boolean keep mask}."""
    if not isinstance(plan, Mapping):
        raise TypeError(
            "A plan maps group names to the channel indices to keep. "
            f"Received: plan of type {type(plan).__name__}"
        )
    masks = {}
    for name, indices in plan.items():
        group = graph.group(name)
        idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError(
                f"Keeping no channel of group {name!r} would empty layers "
                f"{', '.join(group.producers or group.channelwise) or name}; keep at least one. "
                f"Received: indices=[]"
            )
        if idx.min() < 0 or idx.max() >= group.size:
            raise ValueError(
                f"Channel indices of group {name!r} must be in [0, {group.size}). "
                f"Received: indices with min={idx.min()}, max={idx.max()}"
            )
        if len(np.unique(idx)) != idx.size:
            raise ValueError(
                f"Channel indices of group {name!r} contain duplicates. "
                f"Received: indices={idx.tolist()}"
            )
        if not group.prunable and idx.size != group.size:
            raise UnsupportedLayerError(
                f"Group {name!r} cannot lose channels: {group.reason}. Received: "
                f"{group.size - idx.size} channels to remove"
            )
        mask = np.zeros(group.size, dtype=bool)
        mask[idx] = True
        masks[name] = mask
    return masks


def gate_masks(graph) -> dict[str, np.ndarray]:
    """{group name: boolean keep mask} read from the gates of a wrapped model.

    Raises:
        ValueError: when a gate holds a value other than 0 or 1, or when the gates of one
        channel disagree (no compact model would then equal the gated one).
    """
    gates = _gates(graph)
    low: dict[str, np.ndarray] = {}  # per channel, the lowest and highest gate value seen
    high: dict[str, np.ndarray] = {}
    for path in graph.gate_paths:
        values = np.asarray(gates[path].gate.numpy())
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(
                f"Gate {path!r} holds values other than 0 and 1; only 0/1 gates describe a "
                f"smaller model. Received: values={np.unique(values)[:6].tolist()}"
            )
        for name, pos, ch in graph.gate_segments(path):
            if name not in low:
                size = graph.group(name).size
                low[name], high[name] = np.full(size, 2, np.int8), np.full(size, -1, np.int8)
            v = values[pos].astype(np.int8)
            np.minimum.at(low[name], ch, v)
            np.maximum.at(high[name], ch, v)
    masks = {}
    for name in low:
        disagree = np.flatnonzero((high[name] >= 0) & (low[name] != high[name]))
        if disagree.size:
            raise ValueError(
                f"The gates of channel {int(disagree[0])} of group {name!r} disagree (one is "
                "0, another 1). Use set_kept_channels() to switch channels."
            )
        masks[name] = high[name] != 0
    return masks


def _gates(graph) -> dict:
    """{gate path: ChannelGate layer} of the graph's model, looked up once per graph."""
    if "gate_layers" not in graph.memo:
        graph.memo["gate_layers"] = gate_layers(graph.model)
    return graph.memo["gate_layers"]


def get_kept_channels(model) -> dict[str, list[int]]:
    """{group name: kept channel indices} for every prunable group of a wrapped model."""
    graph = as_graph(model)
    masks = gate_masks(graph)
    return {
        g.name: np.flatnonzero(masks.get(g.name, np.ones(g.size, bool))).tolist()
        for g in graph.prunable_groups
    }


@keyword_only("graph")
def set_kept_channels(model, plan: Mapping[str, Sequence[int]], *, graph=None) -> None:
    """Switch channels on (kept) and off in a wrapped model.

    Args:
        model: a model returned by ``wrap``.
        plan: {group name: indices of the channels to keep}; groups not named are unchanged.
        graph: the model's ``ChannelGraph``, if already built (saves the analysis).

    Raises:
        ValueError: unwrapped model, unknown group, out-of-range or duplicate indices, or a plan
        that would empty a group. Nothing is changed when it raises.
    """
    graph = graph if graph is not None else as_graph(model)
    if not graph.gate_paths:
        raise ValueError(
            f"Model {model.name!r} has no ChannelGate layers; call tfchannelprune.wrap(model) "
            "first and prune the model it returns."
        )
    masks = validate_plan(graph, plan)
    gates = _gates(graph)
    updates = []
    for path in graph.gate_paths:
        touched = [(pos, masks[name][ch]) for name, pos, ch in graph.gate_segments(path)
                   if name in masks]  # fmt: skip
        if not touched:
            continue
        old = np.asarray(gates[path].gate.numpy())
        values = np.array(old)
        for pos, keep in touched:
            values[pos] = keep
        if not np.array_equal(values, old):
            updates.append((gates[path], values))
    for layer, values in updates:
        layer.gate.assign(values)


def ignored_groups(graph, ignored_layers: str | Sequence[str]) -> set[str]:
    """Names of the prunable groups that ``ignored_layers`` keeps whole.

    The one meaning of ``ignored_layers`` in every feature (selection, ``ChannelPruning``,
    ``prune()``, ``DynamicChannelExecution``): a group is ignored when any of its producers,
    consumers or channel-wise members is named, by its bare layer name (``"conv2d"``) or its
    full path (``"block/conv2d"``).

    ``ignored_layers`` is one name (a str) or a sequence of names.

    Raises:
        TypeError: something other than a str or a sequence of str.
        ValueError: a name that matches no layer of the model (a typo would otherwise
            silently prune the layer).
    """
    names = set(layer_names(ignored_layers))
    if not names:
        return set()
    known = {fn.path for fn in graph.flat.nodes} | {
        fn.path.split("/")[-1] for fn in graph.flat.nodes
    }
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"ignored_layers names layers that are not in model {graph.model.name!r}. "
            f"Received: {unknown}"
        )
    out = set()
    for group in graph.prunable_groups:
        members = group.producers + group.consumers + group.channelwise
        if names & (set(members) | {p.split("/")[-1] for p in members}):
            out.add(group.name)
    return out
