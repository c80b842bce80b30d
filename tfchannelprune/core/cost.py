"""MACs and parameters, per layer and in total, at the model's current widths.

MACs count the multiply-accumulates of convolutions (all kinds) and Dense layers: one
multiply-add = 1 MAC, FLOPs = 2 x MACs. BatchNorm, activations and pooling are not counted
(BN folds into the conv at export; the rest is memory-bound). On a wrapped model, switched-off
channels do not count: the numbers are those of the model ``compact`` would return.
"""

from __future__ import annotations

import warnings

import numpy as np

from tfchannelprune import _keras
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


def _channel_counts(graph, tensor) -> tuple[int, dict[str, np.ndarray]]:
    """(width, {group: positions each of its channels holds on the tensor's channel axis}),
    computed once per tensor of the graph."""
    memo = graph.memo.setdefault("channel_counts", {})
    if tensor not in memo:
        layout = graph.layout_of(tensor)
        counts: dict[str, np.ndarray] = {}
        for name, _, ch in graph.segments(layout):
            c = np.bincount(ch, minlength=graph.group(name).size)
            counts[name] = counts[name] + c if name in counts else c
        memo[tensor] = (len(layout), counts)
    return memo[tensor]


def _kept_width(graph, tensor, masks) -> int:
    """Positions of a tensor's channel axis whose channel ``masks`` keeps."""
    width, counts = _channel_counts(graph, tensor)
    for name, c in counts.items():
        mask = masks.get(name)
        if mask is not None:
            width -= int(c.sum() - np.dot(c, mask))
    return width


def _widths(graph, fn, masks) -> tuple[int, int]:
    return _kept_width(graph, fn.inputs[0], masks), _kept_width(graph, fn.outputs[0], masks)


@keyword_only("per_layer", "plan")
def count_macs(model, *, per_layer: bool = False, plan=None):
    """Total MACs of ``model`` (or ``{layer path: MACs}`` with ``per_layer=True``).

    Args:
        model: a Keras model (wrapped or not) or its ``ChannelGraph``.
        per_layer: return a dict per leaf layer instead of the total.
        plan: optional {group: kept indices} to cost a hypothetical pruning.
    """
    graph, masks = _graph_and_masks(model, plan)
    _warn_uncounted(graph)  # here, not in macs_for: the greedy loop calls that per removal
    return macs_for(graph, masks, per_layer)


def macs_for(graph, masks, per_layer: bool = False):
    """``count_macs`` with explicit {group: keep mask} (no gate reading)."""
    result: dict[str, int] = {}
    for fn in graph.flat.nodes:
        # the layer type's own rule, also where the call is a barrier (a grouped conv ...)
        rule = rules.get(fn.op)
        in_w, out_w = _widths(graph, fn, masks)
        result[fn.path] = result.get(fn.path, 0) + int(_macs(rule, fn, in_w, out_w))
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


class _ChannelsLastView:
    """A ``channels_first`` call seen as channels-last: its shapes with the channel axis
    moved last, so a rule's ``macs`` (spatial size = ``shape[1:-1]``) reads the right axes.
    The graph takes the last axis as the channel axis everywhere, so on such a call (a
    barrier: nothing on it is prunable) the widths it holds are the W axis, not C."""

    def __init__(self, fn):
        self._fn = fn
        self.input_shapes = [_last(s) for s in fn.input_shapes]
        self.output_shapes = [_last(s) for s in fn.output_shapes]

    def __getattr__(self, name):
        return getattr(self._fn, name)


def _last(shape) -> tuple:
    shape = tuple(shape)
    return (shape[0], *shape[2:], shape[1]) if len(shape) >= 3 else shape


def node_macs(rule, fn, in_w, out_w) -> int:
    """``rule.macs(fn, in_w, out_w)``; on a ``channels_first`` call, with its true channel
    counts (the whole of them: the layout is a barrier) and its shapes seen channels-last."""
    if getattr(fn.op, "data_format", None) == "channels_first":
        fn = _ChannelsLastView(fn)
        in_w, out_w = fn.input_shapes[0][-1], fn.output_shapes[0][-1]
    return rule.macs(fn, in_w, out_w)


def _macs(rule, fn, in_w, out_w) -> int:
    try:
        return node_macs(rule, fn, in_w, out_w)
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
    cache = graph.memo.setdefault("params", {})
    for i, (fn, rule) in enumerate(zip(graph.flat.nodes, graph.rules)):
        layer = fn.op
        if id(layer) in seen or isinstance(layer, ChannelGate) or not hasattr(layer, "weights"):
            continue
        seen.add(id(layer))
        in_keep, out_keep = node_keeps(graph, fn, masks)
        key = (i, in_keep.tobytes(), out_keep.tobytes())
        if key not in cache:  # the count depends on the kept positions only
            with _keras.weight_shapes_only():  # the cut's shapes, no weight read
                cut = node_cut(graph, fn, rule, masks)[2]
            if cut is not None and cut[1] is not None:
                cache[key] = int(sum(np.size(w) for w in cut[1].values()))
            else:
                cache[key] = int(layer.count_params()) if layer.built else 0
        result[fn.path] = cache[key]
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
    counts = {}
    for name, c in _channel_counts(graph, tensor)[1].items():
        if name not in names or kept_count.get(name, 0) <= 0:
            continue
        mask = masks.get(name)
        held = int(c.sum() if mask is None else np.dot(c, mask))
        if held:
            counts[name] = round(held / kept_count[name])
    return counts


def _counts_macs(rule) -> bool:
    return type(rule).macs is not rules.Rule.macs


class MarginalCosts:
    """Total MACs and ``marginal_for`` kept up to date as channels are switched off one group
    at a time: only the tensors and layers that hold the changed group are recounted (the
    marginal costs lazily, when read), so a greedy removal costs a few layers instead of a
    pass over the whole graph.

    Example:
        >>> costs = MarginalCosts(graph, masks)
        >>> masks["conv1"][3] = False; costs.update("conv1", masks)
        >>> costs.macs, costs.marginal["conv2"]
    """

    def __init__(self, graph, masks):
        self.graph = graph
        self._names = {g.name for g in graph.prunable_groups}
        self._masks = {n: np.array(m, bool) for n, m in masks.items()}
        self._kept = {g.name: int(self._masks[g.name].sum()) if g.name in self._masks
                      else g.size for g in graph.prunable_groups}  # fmt: skip
        # only calls whose rules count MACs (a rule that keeps Rule.macs counts none)
        self._nodes = [
            (fn, rule, rules.get(fn.op))  # macs_for counts with the layer type's own rule
            for fn, rule in zip(graph.flat.nodes, graph.rules, strict=True)
            if _counts_macs(rule) or _counts_macs(rules.get(fn.op))
        ]
        self._width = {}  # tensor -> kept width
        self._holders: dict[str, list[tuple[int, np.ndarray]]] = {}  # group -> (tensor, counts)
        self._touching: dict[str, list[int]] = {}  # group -> nodes reading or writing it
        for i, (fn, _, _) in enumerate(self._nodes):
            for tensor in dict.fromkeys((fn.inputs[0], fn.outputs[0])):
                counts = _channel_counts(graph, tensor)[1]
                if tensor not in self._width:
                    self._width[tensor] = _kept_width(graph, tensor, self._masks)
                    for name, c in counts.items():
                        self._holders.setdefault(name, []).append((tensor, c))
                for name in counts:
                    bucket = self._touching.setdefault(name, [])
                    if not bucket or bucket[-1] != i:
                        bucket.append(i)
        self._base = [self._node_macs(i) for i in range(len(self._nodes))]
        self._total = sum(self._base)
        self._saved: list[dict[str, int]] = [{} for _ in self._nodes]
        self._marginal = dict.fromkeys(self._names, 0)
        self._stale = set(range(len(self._nodes)))

    def _node_widths(self, fn) -> tuple[int, int]:
        return self._width[fn.inputs[0]], self._width[fn.outputs[0]]

    def _node_macs(self, i: int) -> int:
        fn, _, own = self._nodes[i]
        return int(node_macs(own, fn, *self._node_widths(fn)))

    def _node_saved(self, i: int) -> dict[str, int]:
        fn, rule, _ = self._nodes[i]
        in_w, out_w = self._node_widths(fn)
        base = rule.macs(fn, in_w, out_w)
        if base == 0:
            return {}
        args = (self._masks, self._names, self._kept)
        m_in = _multiplicity(self.graph, fn.inputs[0], *args)
        m_out = _multiplicity(self.graph, fn.outputs[0], *args)
        return {
            name: int(base - rule.macs(fn, in_w - m_in.get(name, 0), out_w - m_out.get(name, 0)))
            for name in set(m_in) | set(m_out)
        }

    def update(self, group: str, masks) -> None:
        """Recount the tensors and layers holding ``group`` after its mask changed."""
        size = self.graph.group(group).size
        old = self._masks.get(group, np.ones(size, bool))
        new = np.array(masks[group], bool) if group in masks else np.ones(size, bool)
        changed = np.flatnonzero(old != new)
        if changed.size == 0:
            return
        self._masks[group] = new
        if group in self._kept:
            self._kept[group] = int(new.sum())
        sign = np.where(new[changed], 1, -1)
        for tensor, counts in self._holders.get(group, []):
            self._width[tensor] += int(np.dot(counts[changed], sign))
        for i in self._touching.get(group, []):
            value = self._node_macs(i)
            self._total += value - self._base[i]
            self._base[i] = value
            self._stale.add(i)

    @property
    def macs(self) -> float:
        return float(self._total)

    @property
    def marginal(self) -> dict[str, float]:
        for i in self._stale:
            for name, value in self._saved[i].items():
                self._marginal[name] -= value
            self._saved[i] = self._node_saved(i)
            for name, value in self._saved[i].items():
                self._marginal[name] += value
        self._stale.clear()
        return {name: float(v) for name, v in self._marginal.items()}
