"""MACs and parameters, per layer and in total, at the model's current widths.

MACs count the multiply-accumulates of convolutions (all kinds) and Dense layers: one
multiply-add = 1 MAC, FLOPs = 2 x MACs. BatchNorm, activations and pooling are not counted
(BN folds into the conv at export; the rest is memory-bound). On a wrapped model, switched-off
channels do not count: the numbers are those of the model ``compact`` would return.
"""

from __future__ import annotations

import warnings

import numpy as np

from tfchannelprune.core import rules
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import keep_masks
from tfchannelprune.core.surgery import node_cut, node_keeps
from tfchannelprune.errors import UnsupportedModelError


def _graph_and_masks(model, plan=None):
    graph = model if isinstance(model, ChannelGraph) else ChannelGraph(model)
    return graph, keep_masks(graph, plan)


def _widths(graph, fn, masks) -> tuple[int, int]:
    in_keep, out_keep = node_keeps(graph, fn, masks)
    return len(in_keep), len(out_keep)


@keyword_only("per_layer", "plan")
def count_macs(model, *, per_layer: bool = False, plan=None):
    """Total MACs of ``model`` (or ``{layer path: MACs}`` with ``per_layer=True``).

    Args:
        model: a Keras model (wrapped or not) or its ``ChannelGraph``.
        per_layer: return a dict per leaf layer instead of the total.
        plan: optional {group: kept indices} to cost a hypothetical pruning.
    """
    graph, masks = _graph_and_masks(model, plan)
    return macs_for(graph, masks, per_layer)


def macs_for(graph, masks, per_layer: bool = False):
    """``count_macs`` with explicit {group: keep mask} (no gate reading)."""
    result: dict[str, int] = {}
    for fn in graph.flat.nodes:
        # the layer type's own rule, also where the call is a barrier (a grouped conv ...)
        rule = rules.get(fn.op)
        in_w, out_w = _widths(graph, fn, masks)
        result[fn.path] = result.get(fn.path, 0) + int(_macs(rule, fn, in_w, out_w))
    _warn_uncounted(graph)
    return result if per_layer else int(sum(result.values()))


_WARNED: set[tuple[str, str]] = set()  # (class, path) already warned about, once per process


def _warn_uncounted(graph) -> None:
    """Warn once per layer whose cost no rule knows: an unknown layer type or ``keras.ops``
    operation kept whole (not traced, not shown element-wise) counts 0 MACs."""
    new = []
    for fn in graph.flat.nodes:
        if rules.get(fn.op).known or graph.flat.leaf_traces.get(fn.path, ...) is None:
            continue  # a rule counts it, or its TensorFlow graph was read as element-wise
        if fn.path in graph.flat.leaf_traces and not rules.traced_elementwise(
            graph.flat.leaf_traces[fn.path]
        ).check(fn):
            continue  # traced, element-wise: no multiply-accumulates
        key = (type(fn.op).__name__, fn.path)
        if key not in _WARNED:
            _WARNED.add(key)
            new.append(f"{key[0]} {key[1]!r}")
    if new:
        warnings.warn(
            f"count_macs counts 0 MACs for {', '.join(new)}: no rule knows the cost of this "
            "layer type (register_rule with a macs() method teaches it). The total leaves it "
            "out.",
            stacklevel=3,
        )


def _macs(rule, fn, in_w, out_w) -> int:
    try:
        return rule.macs(fn, in_w, out_w)
    except TypeError:
        shapes = list(fn.input_shapes) + list(fn.output_shapes)
        if not any(None in tuple(s)[1:] for s in shapes):
            raise
        raise UnsupportedModelError(
            f"count_macs needs the spatial size of {fn.path!r}, which the model leaves "
            "unknown. Build the model (or the outer model calling it) on a fixed input size, "
            f"e.g. keras.Input((224, 224, 3)). Received: shapes={shapes}"
        ) from None


@keyword_only("per_layer", "plan")
def count_params(model, *, per_layer: bool = False, plan=None):
    """Total parameters (trainable and not, gates excluded), or ``{layer path: params}``."""
    graph, masks = _graph_and_masks(model, plan)
    return params_for(graph, masks, per_layer)


def params_for(graph, masks, per_layer: bool = False):
    """``count_params`` with explicit {group: keep mask}."""
    result: dict[str, int] = {}
    seen: set[int] = set()
    for fn, rule in zip(graph.flat.nodes, graph.rules):
        layer = fn.op
        if id(layer) in seen or isinstance(layer, ChannelGate) or not hasattr(layer, "weights"):
            continue
        seen.add(id(layer))
        cut = node_cut(graph, fn, rule, masks)[2]
        if cut is not None and cut[1] is not None:
            result[fn.path] = int(sum(np.size(w) for w in cut[1].values()))
        else:
            result[fn.path] = int(layer.count_params()) if layer.built else 0
    return result if per_layer else int(sum(result.values()))


@keyword_only("plan")
def marginal_macs(model, *, plan=None) -> dict[str, float]:
    """MACs saved by removing one more channel of each prunable group, at current widths.

    Cost-aware selection (Molchanov's lambda x cost, Theis's beta x delta-cost) needs it after
    every removal, because a channel's cost depends on the current widths of its neighbours.

    Returns:
        {group name: MACs removed with one channel of that group}.
    """
    graph, masks = _graph_and_masks(model, plan)
    return marginal_for(graph, masks)


def marginal_for(graph, masks) -> dict[str, float]:
    """``marginal_macs`` with explicit {group: keep mask}."""
    names = {g.name for g in graph.prunable_groups}
    kept_count = {
        g.name: int(masks[g.name].sum()) if g.name in masks else g.size
        for g in graph.prunable_groups
    }
    saved = dict.fromkeys(names, 0.0)
    for fn, rule in zip(graph.flat.nodes, graph.rules):
        in_w, out_w = _widths(graph, fn, masks)
        base = rule.macs(fn, in_w, out_w)
        if base == 0:
            continue
        m_in = _multiplicity(graph, fn.inputs[0], masks, names, kept_count)
        m_out = _multiplicity(graph, fn.outputs[0], masks, names, kept_count)
        for name in set(m_in) | set(m_out):
            smaller = rule.macs(fn, in_w - m_in.get(name, 0), out_w - m_out.get(name, 0))
            saved[name] += base - smaller
    return saved


def _multiplicity(graph, tensor, masks, names, kept_count) -> dict[str, int]:
    """Positions that one kept channel of each group occupies on this tensor's channel axis."""
    layout = graph.layout_of(tensor)
    kept = graph.positions_kept(layout, masks)
    counts: dict[str, int] = {}
    for g, n in zip(*np.unique(layout.gid[kept], return_counts=True)):
        name = graph._name[graph._find(int(g))]
        if name in names and kept_count[name] > 0:
            counts[name] = counts.get(name, 0) + int(n)
    return {k: round(v / kept_count[k]) for k, v in counts.items()}


class MarginalCosts:
    """Total MACs and ``marginal_for`` kept up to date as channels are switched off one group
    at a time: only the layers that read or write the changed group are recomputed, so a
    greedy removal costs a few layers instead of a pass over the whole graph.

    Example:
        >>> costs = MarginalCosts(graph, masks)
        >>> masks["conv1"][3] = False; costs.update("conv1", masks)
        >>> costs.macs, costs.marginal["conv2"]
    """

    def __init__(self, graph, masks):
        self.graph = graph
        self._names = {g.name for g in graph.prunable_groups}
        self._nodes = list(zip(graph.flat.nodes, graph.rules, strict=True))
        self._touching: dict[str, list[int]] = {}
        for i, (fn, _) in enumerate(self._nodes):
            for tensor in (fn.inputs[0], fn.outputs[0]):
                for name in self._groups_on(tensor):
                    bucket = self._touching.setdefault(name, [])
                    if not bucket or bucket[-1] != i:
                        bucket.append(i)
        self._base = [0.0] * len(self._nodes)
        self._saved: list[dict[str, float]] = [{} for _ in self._nodes]
        for i in range(len(self._nodes)):
            self._node(i, masks)

    def _groups_on(self, tensor) -> set[str]:
        layout = self.graph.layout_of(tensor)
        return {self.graph._name[self.graph._find(int(g))] for g in np.unique(layout.gid)}

    def _node(self, i: int, masks) -> None:
        fn, rule = self._nodes[i]
        in_w, out_w = _widths(self.graph, fn, masks)
        self._base[i] = float(rules.get(fn.op).macs(fn, in_w, out_w))  # as macs_for counts
        base = rule.macs(fn, in_w, out_w)
        self._saved[i] = {}
        if base == 0:
            return
        here = (self._groups_on(fn.inputs[0]) | self._groups_on(fn.outputs[0])) & self._names
        kept = {
            n: int(masks[n].sum()) if n in masks else self.graph.group(n).size for n in here
        }
        m_in = _multiplicity(self.graph, fn.inputs[0], masks, self._names, kept)
        m_out = _multiplicity(self.graph, fn.outputs[0], masks, self._names, kept)
        for name in set(m_in) | set(m_out):
            smaller = rule.macs(fn, in_w - m_in.get(name, 0), out_w - m_out.get(name, 0))
            self._saved[i][name] = float(base - smaller)

    def update(self, group: str, masks) -> None:
        """Recompute the layers touching ``group`` after its mask changed."""
        for i in self._touching.get(group, []):
            self._node(i, masks)

    @property
    def macs(self) -> float:
        return float(sum(self._base))

    @property
    def marginal(self) -> dict[str, float]:
        out = dict.fromkeys(self._names, 0.0)
        for saved in self._saved:
            for name, value in saved.items():
                out[name] += value
        return out
