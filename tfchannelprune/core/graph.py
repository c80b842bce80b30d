"""ChannelGraph / ChannelGroup: which channels are coupled across layers.

Every tensor's channel axis gets a *layout*: for each position, the group it belongs to and the
channel index inside that group. Producers (Conv, Dense ...) start new groups; pass-through and
channel-wise layers keep the layout; Add-like merges unify their inputs' groups; Concatenate
joins layouts; Flatten tiles them; DepthwiseConv with ``depth_multiplier`` repeats them. A group
is the set of channels that must be removed together, wherever they appear.

Example:
    >>> graph = ChannelGraph(model)
    >>> [g.name for g in graph.groups if g.prunable]
    ['conv1', 'conv2']
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core import rules


@dataclasses.dataclass(frozen=True)
class Layout:
    """Per position of a channel axis: group id and channel index inside the group."""

    gid: np.ndarray
    ch: np.ndarray

    def __len__(self) -> int:
        return len(self.gid)


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels removed together. ``name`` comes from the first layer that produces them."""

    name: str
    size: int
    prunable: bool
    reason: str  # why not prunable ("" when prunable)
    producers: tuple[str, ...]  # layers whose output channels these are
    consumers: tuple[str, ...]  # layers that read them jointly (input slice removed)
    channelwise: tuple[str, ...]  # per-channel layers in between (BN, depthwise ...)
    gates: tuple[str, ...]  # ChannelGate layers that switch them (in a wrapped model)


@dataclasses.dataclass(frozen=True)
class GatePoint:
    """Where ``wrap`` inserts a gate: after the leaf call ``path``, on output ``tensor``."""

    path: str
    tensor: int
    width: int


class ChannelGraph:
    """The channel groups of a Keras 3 Functional or Sequential model (nested models inlined).

    Args:
        model: a Functional or Sequential ``keras.Model`` (nested models, custom layers and
            ``ChannelGate`` layers of a wrapped model included), or a subclassed one, traced
            from its ``call()``.
        input_shape: one example's input shape (no batch axis, e.g. ``(None, None, 3)``) to
            trace a subclassed model on; by default the shape it was built with, or, for a
            model built without one, its first layer's channel count with free spatial axes.

    Raises:
        UnsupportedModelError: for a subclassed model that cannot be traced; ValueError for
        an ``input_shape`` that disagrees with a Functional model's own; TypeError for a Keras 2 model;
        RuntimeError for a backend other than TensorFlow.
    """

    def __init__(self, model, *, input_shape=None):
        self.model = model
        self.flat = _keras.flatten_graph(model, rules.traceable, input_shape)
        self._parent: list[int] = []
        self._size: list[int] = []
        self._name: list[str] = []
        self._blocked: dict[int, str] = {}
        self._layouts: dict[int, Layout] = {}
        self._members: list[tuple[str, str, Layout]] = []
        self._gate_layouts: dict[str, Layout] = {}
        self._split: dict[int, tuple[int, int, int]] = {}
        self.rules: list[rules.Rule] = []
        self._propagate()
        self.gate_points = self._place_gates()
        self._block_ungated()
        self.groups = self._collect_groups()
        self._by_name = {g.name: g for g in self.groups}
        # derived, mask-independent tables (the graph does not change once built): the
        # features that cost, read or write masks at every pruning event cache theirs here
        self.memo: dict = {}
        self._segments: dict[int, tuple[Layout, list]] = {}

    # ----------------------------------------------------------------- public queries
    def group(self, name: str) -> ChannelGroup:
        if name not in self._by_name:
            known = ", ".join(sorted(self._by_name)[:12])
            raise ValueError(
                f"No channel group named {name!r} in model {self.model.name!r}. "
                f"Known groups include: {known}. Received: name={name!r}"
            )
        return self._by_name[name]

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group_layout(self, tensor: int) -> tuple[np.ndarray, np.ndarray]:
        """(group index into ``self.groups`` or -1, channel) per position of a tensor."""
        layout = self._layouts[tensor]
        return self._group_index(layout.gid), layout.ch

    def gate_layout(self, gate_path: str) -> list[tuple[str, int]]:
        """(group name, channel) for each position of a ChannelGate in a wrapped model."""
        layout = self._gate_layouts[gate_path]
        return [(self._name[self._find(g)], int(c)) for g, c in zip(layout.gid, layout.ch)]

    @property
    def gate_paths(self) -> list[str]:
        return list(self._gate_layouts)

    def gate_segments(self, gate_path: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``segments`` of a ChannelGate's layout: (group name, positions, channels)."""
        return self.segments(self._gate_layouts[gate_path])

    # ----------------------------------------------------------------- union-find
    def _find(self, g: int) -> int:
        while self._parent[g] != g:
            self._parent[g] = self._parent[self._parent[g]]
            g = self._parent[g]
        return g

    def _roots(self, gid: np.ndarray) -> np.ndarray:
        return np.array([self._find(int(g)) for g in gid], dtype=np.int64)

    def _group_index(self, gid: np.ndarray) -> np.ndarray:
        index = {self._gid_of_name[g.name]: i for i, g in enumerate(self.groups)}
        return np.array([index.get(self._find(int(g)), -1) for g in gid], dtype=np.int64)

    # ----------------------------------------------------------------- rule context
    def new_group(self, fn, index: int, blocked: str | None = None, size=None) -> Layout:
        """A new group for output ``index`` of ``fn`` (of ``size`` channels, default the
        output's width)."""
        name = fn.path if len(fn.outputs) == 1 else f"{fn.path}:{index}"
        shape = fn.output_shapes[index] if size is None else (size,)
        return self._add_group(name, shape, blocked)

    def _add_group(self, name: str, shape: tuple, blocked: str | None) -> Layout:
        size = int(shape[-1]) if len(shape) and shape[-1] is not None else 0
        gid = len(self._parent)
        self._parent.append(gid)
        self._size.append(size)
        self._name.append(name)
        if blocked:
            self._blocked[gid] = blocked
        return Layout(np.full(size, gid, dtype=np.int64), np.arange(size, dtype=np.int64))

    def layout(self, tensor: int) -> Layout:
        """The raw layout of a tensor (canonical id) for rules."""
        return self._layouts[tensor]

    layout_of = layout

    def block(self, layout: Layout, reason: str) -> None:
        for g in set(self._roots(layout.gid).tolist()):
            self._blocked.setdefault(g, reason)

    def unify(self, layouts: list[Layout], fn) -> Layout:
        base = layouts[0]
        for other in layouts[1:]:
            if len(other) != len(base) or np.any(other.ch != base.ch):
                reason = f"{fn.path!r} combines channels that do not line up"
                self.block(base, reason)
                self.block(other, reason)
                continue
            pairs = set(zip(self._roots(base.gid).tolist(), self._roots(other.gid).tolist()))
            for a, b in pairs:
                a, b = self._find(a), self._find(b)
                if a == b:
                    continue
                if self._size[a] != self._size[b]:
                    reason = f"{fn.path!r} combines groups of different sizes"
                    self._blocked.setdefault(a, reason)
                    self._blocked.setdefault(b, reason)
                    continue
                root, child = min(a, b), max(a, b)
                self._parent[child] = root
                if child in self._blocked:
                    self._blocked.setdefault(root, self._blocked[child])
        return base

    def split_at(self, layout: Layout, bounds: list[int]) -> Layout:
        """``layout`` with every group that runs across one of ``bounds`` (positions) split
        there into sub-groups, everywhere it appears, so that each part of a channel split
        can be coupled on its own (CSP blocks add one half to a block's output)."""
        for b in bounds:
            if 0 < b < len(layout):
                g, c = self._find(int(layout.gid[b - 1])), int(layout.ch[b - 1])
                if g == self._find(int(layout.gid[b])) and int(layout.ch[b]) == c + 1:
                    self._refine(g, c + 1)
                    layout = self._relabel(layout)
        return layout

    def _refine(self, root: int, at: int) -> None:
        members = [m for m in range(len(self._parent)) if self._find(m) == root and self._size[m]]
        self._split = {}
        for m in members:
            name, size = self._name[m], self._size[m]
            low = self._add_group(f"{name}[:{at}]", (at,), self._blocked.get(root))
            high = self._add_group(f"{name}[{at}:]", (size - at,), self._blocked.get(root))
            self._split[m] = (int(low.gid[0]), int(high.gid[0]), at)
            self._size[m] = 0
        lows = [v[0] for v in self._split.values()]
        highs = [v[1] for v in self._split.values()]
        for subs in (lows, highs):
            for s in subs[1:]:
                self._parent[s] = subs[0]
        self._layouts = {t: self._relabel(x) for t, x in self._layouts.items()}
        self._members = [(p, r, self._relabel(x)) for p, r, x in self._members]
        self._gate_layouts = {p: self._relabel(x) for p, x in self._gate_layouts.items()}

    def _relabel(self, layout: Layout) -> Layout:
        gid, ch = layout.gid.copy(), layout.ch.copy()
        for m, (low, high, at) in self._split.items():
            sel = layout.gid == m
            upper = sel & (layout.ch >= at)
            gid[sel & ~upper], gid[upper] = low, high
            ch[upper] -= at
        return Layout(gid, ch)

    @staticmethod
    def concat(layouts: list[Layout]) -> Layout:
        return Layout(
            np.concatenate([x.gid for x in layouts]), np.concatenate([x.ch for x in layouts])
        )

    @staticmethod
    def tile(layout: Layout, n: int) -> Layout:
        return Layout(np.tile(layout.gid, n), np.tile(layout.ch, n))

    @staticmethod
    def repeat(layout: Layout, n: int) -> Layout:
        return Layout(np.repeat(layout.gid, n), np.repeat(layout.ch, n))

    def set(self, tensor: int, layout: Layout) -> None:
        self._layouts[tensor] = layout

    def member(self, fn, role: str, layout: Layout) -> None:
        self._members.append((fn.path, role, layout))

    def gate(self, fn, layout: Layout) -> None:
        self._gate_layouts[fn.path] = layout

    # ----------------------------------------------------------------- building
    def _propagate(self) -> None:
        flat = self.flat
        for tensor, name in zip(flat.inputs, flat.input_names):
            self.set(tensor, self._add_group(name, flat.shapes[tensor], "model input"))
        for fn in flat.nodes:
            rule = rules.get(fn.op)
            if fn.path in flat.leaf_traces:
                rule = rules.traced_elementwise(flat.leaf_traces[fn.path])
            reason = self._why_barrier(fn, rule)
            if reason is not None:
                rule = rules.Rule()
                rules.barrier(self, fn, reason)
            else:
                rule.propagate(self, fn)
            self.rules.append(rule)
        for tensor in flat.outputs:
            self.block(self._layouts[tensor], "model output")

    def _why_barrier(self, fn, rule: rules.Rule) -> str | None:
        if not rule.known:
            why = self.flat.untraced.get(fn.path)
            note = f" and {why}" if why else ""
            return f"{type(fn.op).__name__} {fn.path!r} is {rules.BARRIER_NOTE}{note}"
        if fn.shared and (getattr(fn.op, "weights", None) or type(rule).cut is not rules.Rule.cut):
            return f"{fn.path!r} is called more than once (shared weights)"
        for shape in list(fn.input_shapes) + list(fn.output_shapes):
            if len(shape) < 2 or shape[-1] is None:
                return f"{fn.path!r} has a tensor without a known channel axis"
        why = rule.check(fn)
        return None if why is None else f"{type(fn.op).__name__} {fn.path!r}: {why}"

    def _has_prunable(self, tensor: int) -> bool:
        layout = self._layouts[tensor]
        return any(self._find(int(g)) not in self._blocked for g in np.unique(layout.gid))

    def _place_gates(self) -> list[GatePoint]:
        """A gate goes on every tensor that may carry a non-zero switched-off channel into a
        layer that reads channels jointly; everything downstream of it then sees zeros."""
        dirty: dict[int, bool] = {t: False for t in self.flat.inputs}
        points: list[GatePoint] = []
        nodes = self.flat.nodes
        for fn, rule in zip(nodes, self.rules):
            if rule.is_gate:
                out_dirty = False
            elif not rule.zero_preserving(fn):
                out_dirty = True  # new channels (producers), or f(0) != 0
            else:
                out_dirty = any(dirty.get(t, True) for t in fn.inputs)
            for t in fn.outputs:
                dirty[t] = out_dirty
                if not out_dirty or not self._has_prunable(t):
                    continue
                consumers = self.flat.consumers.get(t, [])
                if any(self.rules[i].mixes for i in consumers):
                    points.append(GatePoint(fn.path, t, len(self._layouts[t])))
                    dirty[t] = False
        return points

    def _block_ungated(self) -> None:
        covered = set()
        for layout in list(self._gate_layouts.values()) + [
            self._layouts[p.tensor] for p in self.gate_points
        ]:
            covered.update(self._roots(layout.gid).tolist())
        for g in range(len(self._parent)):
            root = self._find(g)
            if root not in covered:
                self._blocked.setdefault(root, "no point where its channels can be gated")

    def _collect_groups(self) -> list[ChannelGroup]:
        roles: dict[int, dict[str, list[str]]] = {}
        for path, role, layout in self._members:
            for g in set(self._roots(layout.gid).tolist()):
                bucket = roles.setdefault(g, {}).setdefault(role, [])
                if path not in bucket:
                    bucket.append(path)
        for path, layout in self._gate_layouts.items():
            for g in set(self._roots(layout.gid).tolist()):
                roles.setdefault(g, {}).setdefault("gate", []).append(path)
        groups, self._gid_of_name = [], {}
        for g in range(len(self._parent)):
            if self._find(g) != g or self._size[g] == 0:
                continue
            r = roles.get(g, {})
            reason = self._blocked.get(g, "")
            groups.append(
                ChannelGroup(
                    name=self._name[g],
                    size=self._size[g],
                    prunable=not reason,
                    reason=reason,
                    producers=tuple(r.get("producer", ())),
                    consumers=tuple(r.get("consumer", ())),
                    channelwise=tuple(r.get("channelwise", ())),
                    gates=tuple(r.get("gate", ())),
                )
            )
            self._gid_of_name[self._name[g]] = g
        return groups

    # ----------------------------------------------------------------- keep masks
    def segments(self, layout: Layout) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(group name, positions, channels of the group at those positions) for each group
        on ``layout``; computed once per layout of the built graph."""
        hit = self._segments.get(id(layout))
        if hit is not None and hit[0] is layout:
            return hit[1]
        out = []
        for g in np.unique(layout.gid):
            pos = np.flatnonzero(layout.gid == g)
            out.append((self._name[self._find(int(g))], pos, layout.ch[pos]))
        self._segments[id(layout)] = (layout, out)
        return out

    def positions_kept(self, layout: Layout, masks: dict[str, np.ndarray]) -> np.ndarray:
        """Indices of the positions of ``layout`` whose channel is kept under ``masks``
        (group name -> boolean mask; groups not named keep everything)."""
        keep = np.ones(len(layout), dtype=bool)
        for name, pos, ch in self.segments(layout):
            mask = masks.get(name)
            if mask is not None:
                keep[pos] = mask[ch]
        return np.flatnonzero(keep)
