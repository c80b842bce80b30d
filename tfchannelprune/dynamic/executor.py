"""``ChannelExecutor``: run a functional model on the active channels only.

For given active sets (``{group: sorted channel indices}``, a fixed count ``k`` per group so that
every shape is static and a ``tf.function`` never retraces), each tensor whose channel axis holds
partially active groups is carried *compact*: only its active positions, in ascending order.
Each call runs the way its rule declares (``Rule.subset``; Spasov & Liò, "Dynamic Neural
Network Channel Execution for Efficient Training", arXiv:1905.06435):

* ``"gathered"`` (Conv, Dense, transposed / separable / depthwise convs, PReLU, BatchNorm,
  gates): every weight is gathered on the active positions of its declared ``weight_axes``
  and the rule's ``call_subset`` runs on the compact input; weights it updates (BatchNorm's
  moving statistics) are written back to the active slices only;
* ``"as_is"`` (activations, pooling, dropout, padding, Flatten, merges, concatenations): the
  layer runs unchanged on the compact tensors;
* ``"masked"`` (barriers, Reshape, cross-channel norms, grouped convs, a rule that declares
  no subset call ...): the input is scattered back to full width with zeros for inactive
  channels, the layer runs at full width and inactive output channels are dropped. Its MACs
  count in full.

Inactive channels thus produce nothing, and their weights get zero gradients.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from keras import tree

from tfchannelprune import _keras
from tfchannelprune.core.graph import ChannelGraph


def node_kinds(graph: ChannelGraph) -> list[str]:
    """How the executor runs each leaf call: its rule's declared ``subset(fn).mode``
    (``"as_is"``, ``"gathered"`` or ``"masked"``)."""
    return [rule.subset(fn).mode for fn, rule in zip(graph.flat.nodes, graph.rules)]


class ChannelExecutor:
    """Executes ``graph.model`` with only the active channels of some groups.

    Args:
        graph: the model's ``ChannelGraph``.
        ks: {group name: channels executed per step}; groups with k equal to their size, or
            not named, always run in full.

    Groups whose channels repeat unevenly on some tensor cannot have a static compact width
    and are run in full (listed in ``self.skipped``).
    """

    def __init__(self, graph: ChannelGraph, ks: Mapping[str, int]):
        self.graph = graph
        self.groups = list(graph.groups)
        sizes = np.array([g.size for g in self.groups], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])[:-1]
        self.total = int(sizes.sum()) + 1  # last slot: positions of no group, always active
        index = {g.name: i for i, g in enumerate(self.groups)}
        self.dynamic = {
            index[name]: int(k) for name, k in ks.items() if int(k) < self.groups[index[name]].size
        }
        self._tensors = self._all_tensors()
        self.skipped = self._drop_uneven()
        self._info = {t: self._tensor_info(t) for t in self._tensors}
        self.kinds = node_kinds(graph)

    # ------------------------------------------------------------------ static analysis
    def _all_tensors(self) -> list[int]:
        flat = self.graph.flat
        seen = dict.fromkeys(flat.inputs)
        for fn in flat.nodes:
            seen.update(dict.fromkeys(fn.inputs + fn.outputs))
        return list(seen)

    def _drop_uneven(self) -> list[str]:
        dropped = []
        for t in self._tensors:
            gidx, ch = self.graph.group_layout(t)
            for gi in set(np.unique(gidx).tolist()) & set(self.dynamic):
                counts = np.bincount(ch[gidx == gi], minlength=self.groups[gi].size)
                if np.any(counts != counts[0]):
                    del self.dynamic[gi]
                    dropped.append(self.groups[gi].name)
        return dropped

    def flat_index(self, t: int) -> np.ndarray:
        """For each position of tensor ``t``: its slot in the flat channel mask."""
        gidx, ch = self.graph.group_layout(t)
        return np.where(gidx >= 0, self.offsets[np.maximum(gidx, 0)] + ch, self.total - 1)

    def _tensor_info(self, t: int):
        gidx, _ = self.graph.group_layout(t)
        present = set(np.unique(gidx).tolist()) & set(self.dynamic)
        if not present:
            return None
        count = int(np.sum(~np.isin(gidx, list(present))))
        for gi in present:
            count += int(np.sum(gidx == gi)) * self.dynamic[gi] // self.groups[gi].size
        return self.flat_index(t).astype(np.int32), count

    # ------------------------------------------------------------------ per step
    def flat_mask(self, active: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Boolean vector over every channel of every group (+1 always-true slot)."""
        parts = []
        for gi, group in enumerate(self.groups):
            if gi in self.dynamic:
                idx = tf.reshape(tf.cast(active[group.name], tf.int32), [-1, 1])
                hits = tf.scatter_nd(idx, tf.ones([self.dynamic[gi]], tf.int32), [group.size])
                parts.append(hits > 0)
            else:
                parts.append(tf.ones([group.size], tf.bool))
        parts.append(tf.ones([1], tf.bool))
        return tf.concat(parts, 0)

    def positions(self, t: int, mask: tf.Tensor, cache: dict) -> tf.Tensor | None:
        """Active positions of tensor ``t``, ascending, static length (None: all)."""
        info = self._info.get(t)
        if info is None:
            return None
        fi, count = info
        key = fi.tobytes()
        if key not in cache:
            keep = tf.gather(mask, fi)
            width = len(fi)
            # top_k of (width - p) over kept positions: ascending p, static shape, XLA-safe
            rank = tf.where(keep, width - tf.range(width, dtype=tf.int32), 0)
            cache[key] = tf.math.top_k(rank, k=count, sorted=True).indices
        return cache[key]

    def run(self, inputs, active: Mapping[str, tf.Tensor], training: bool = True, watch=()):
        """Forward pass on the active channels.

        Args:
            inputs: the model's inputs (a tensor, or a list in ``model.inputs`` order).
            active: {group name: int32 sorted indices} for every partially executed group.
            training: training mode for BatchNorm, Dropout ...
            watch: tensor ids whose (compact) values to return too.

        Returns:
            (model outputs, {tensor id: (value, positions or None)} for ``watch``, flat mask).
        """
        run = _Run(self, self.flat_mask(active), training)
        flat = self.graph.flat
        for t, x in zip(flat.inputs, tree.flatten(inputs)):
            run.values[t] = (tf.convert_to_tensor(x), None)
        for fn, rule, kind in zip(flat.nodes, self.graph.rules, self.kinds):
            for t, value in zip(fn.outputs, getattr(run, "run_" + kind)(fn, rule)):
                run.values[t] = value
        outputs = [run.full(t) for t in flat.outputs]
        watched = {t: run.values[t] for t in watch}
        return (outputs[0] if len(outputs) == 1 else outputs), watched, run.mask


class _Run:
    """One forward pass: values are (tensor, positions) with positions None for full width."""

    def __init__(self, executor: ChannelExecutor, mask, training: bool):
        self.ex = executor
        self.mask = mask
        self.training = training
        self.values: dict[int, tuple] = {}
        self._cache: dict = {}
        self._gathered: dict = {}

    def pos(self, t):
        return self.ex.positions(t, self.mask, self._cache)

    # -------------------------------------------------------------- representations
    def full(self, t):
        x, pos = self.values[t]
        if pos is None:
            return x
        width = len(self.ex.flat_index(t))
        count = pos.shape[0]
        inverse = tf.tensor_scatter_nd_update(
            tf.fill([width], count), pos[:, None], tf.range(count, dtype=tf.int32)
        )
        padded = tf.concat([x, tf.zeros_like(x[..., :1])], axis=-1)
        return tf.gather(padded, inverse, axis=-1)

    def compact(self, t):
        x, pos = self.values[t]
        want = self.pos(t)
        if pos is None and want is not None:
            if t not in self._gathered:  # once per tensor, whatever the number of consumers
                self._gathered[t] = tf.gather(x, want, axis=-1)
            return self._gathered[t], want
        return x, pos

    def _call(self, fn, args_of):
        values = _keras.input_values(fn, args_of)
        return _keras.call_node(fn, values, training=self.training)

    # -------------------------------------------------------------- subset modes
    def run_masked(self, fn, rule):
        outs = self._call(fn, self.full)
        result = []
        for t, y in zip(fn.outputs, outs):
            want = self.pos(t)  # masked fallback: drop the inactive outputs
            result.append((y, None) if want is None else (tf.gather(y, want, axis=-1), want))
        return result

    def run_as_is(self, fn, rule):
        outs = self._call(fn, lambda t: self.compact(t)[0])
        return [(y, self.pos(t)) for t, y in zip(fn.outputs, outs)]

    def run_gathered(self, fn, rule):
        x, pin = self.compact(fn.inputs[0])
        pout = self.pos(fn.outputs[0])
        sides = {"in": pin, "out": pout}
        axes = _axes_by_weight(rule.weight_axes(fn))
        variables = {v.name: v for v in fn.op.weights}
        weights = {
            name: _gather(var.value, axes.get(name, ()), sides) for name, var in variables.items()
        }
        y, updates = rule.call_subset(fn.op, fn, x, weights, self.training)
        for name, value in updates.items():
            _assign_gathered(variables[name], axes.get(name, ()), sides, value)
        return [(y, pout)]


def _axes_by_weight(axes) -> dict[str, list]:
    out: dict[str, list] = {}
    for a in axes:
        out.setdefault(a.weight, []).append(a)
    return out


def _indices(axis, sides):
    """The indices along ``axis`` of the active positions of its side (None: all)."""
    pos = sides[axis.side]
    if pos is None or axis.repeat == 1:
        return pos
    r = axis.repeat
    return tf.reshape(pos[:, None] * r + tf.range(r, dtype=pos.dtype)[None, :], [-1])


def _gather(value, axes, sides):
    for axis in axes:
        idx = _indices(axis, sides)
        if idx is not None:
            value = tf.gather(value, idx, axis=axis.axis)
    return value


def _assign_gathered(var, axes, sides, value) -> None:
    """Write ``value`` (gathered on ``axes``) back into the active slices of ``var``."""
    value = tf.cast(value, var.dtype)
    index = [a for a in axes if _indices(a, sides) is not None]
    if not index:
        var.assign(value)
        return
    if len(index) > 1 or len(var.shape) != 1:
        raise NotImplementedError(
            f"Subset updates are written back along one axis of a vector only. Received: "
            f"weight {var.path!r} of shape {tuple(var.shape)} updated along {len(index)} axes"
        )
    idx = _indices(index[0], sides)
    var.assign(tf.tensor_scatter_nd_update(var.value, idx[:, None], value))
