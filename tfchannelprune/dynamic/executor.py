"""``ChannelExecutor``: run a functional model on the active channels only.

For given active sets (``{group: sorted channel indices}``, a fixed count ``k`` per group so that
every shape is static and a ``tf.function`` never retraces), each tensor whose channel axis holds
partially active groups is carried *compact*: only its active positions, in ascending order.
Layers then run on smaller tensors with gathered weights (Spasov & Lio 2019,
arXiv:1905.06435):

* Conv1D/2D/3D and Dense: ``kernel[..., active_in, active_out]`` and ``bias[active_out]``;
* BatchNormalization: gamma, beta and moving statistics of the active channels (only those
  moving statistics are updated);
* pass-through layers (activations, pooling, dropout, padding, Flatten), merges and channel
  concatenations: run as they are on the compact tensors;
* anything else (depthwise / separable / transposed convs, PReLU, barriers ...): the *masked
  fallback*: the input is scattered back to full width with zeros for inactive channels, the
  layer runs at full width and inactive output channels are dropped. Its MACs count in full.

Inactive channels thus produce nothing, and their weights get zero gradients.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from tfchannelprune.core import rules
from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.graph import ChannelGraph

L = keras.layers
COMPACT_CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
PASS_RULES = (rules.Passthrough, rules.ActivationRule, rules.SoftmaxRule, rules.OpRule)
MERGE_RULES = (rules.MergeRule, rules.ConcatRule)


def node_kind(fn, rule) -> str:
    """How the executor runs a leaf call: conv, dense, bn, gate, pass, merge or full."""
    op = fn.op
    if isinstance(op, ChannelGate):
        return "gate"
    if type(rule) is rules.ProducerRule and type(op) in COMPACT_CONVS:
        channelwise_act = _activation(op) in rules.CHANNELWISE_ACTIVATIONS
        return "conv" if getattr(op, "groups", 1) == 1 and channelwise_act else "full"
    if type(rule) is rules.DenseRule and type(op) is L.Dense:
        return "dense" if _activation(op) in rules.CHANNELWISE_ACTIVATIONS else "full"
    if type(rule) is rules.ChannelwiseParamRule and type(op) is L.BatchNormalization:
        return "full" if op.renorm else "bn"
    if type(rule) in PASS_RULES or (type(rule) is rules.FlattenRule and type(op) is L.Flatten):
        return "pass"
    if type(rule) in MERGE_RULES:
        return "merge"
    return "full"


def _activation(layer) -> str | None:
    act = getattr(layer, "activation", None)
    return keras.activations.serialize(act) if callable(act) else act


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
        self.kinds = [node_kind(fn, r) for fn, r in zip(graph.flat.nodes, graph.rules)]

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
        for fn, kind in zip(flat.nodes, self.kinds):
            for t, value in zip(fn.outputs, getattr(run, "run_" + kind)(fn)):
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
        values = {id(k): args_of(t) for k, t in zip(fn.node.input_tensors, fn.inputs)}
        args, kwargs = fn.node.arguments.fill_in(values)
        if "training" in getattr(fn.op, "call_signature_parameters", ()):
            kwargs.setdefault("training", self.training)
        return tree.flatten(fn.op(*args, **kwargs))

    # -------------------------------------------------------------- node kinds
    def run_full(self, fn):
        outs = self._call(fn, self.full)
        result = []
        for t, y in zip(fn.outputs, outs):
            want = self.pos(t)  # masked fallback: drop the inactive outputs
            result.append((y, None) if want is None else (tf.gather(y, want, axis=-1), want))
        return result

    def run_pass(self, fn):
        outs = self._call(fn, lambda t: self.compact(t)[0])
        return [(y, self.pos(t)) for t, y in zip(fn.outputs, outs)]

    run_merge = run_pass

    def run_gate(self, fn):
        x, pos = self.compact(fn.inputs[0])
        gate = fn.op.gate if pos is None else tf.gather(fn.op.gate, pos)
        return [(x * tf.cast(gate, x.dtype), pos)]

    def _weights(self, fn):
        op = fn.op
        x, pin = self.compact(fn.inputs[0])
        pout = self.pos(fn.outputs[0])
        x = tf.cast(x, op.compute_dtype)
        kernel = tf.cast(op.kernel, x.dtype)
        if pin is not None:
            kernel = tf.gather(kernel, pin, axis=kernel.shape.rank - 2)
        if pout is not None:
            kernel = tf.gather(kernel, pout, axis=kernel.shape.rank - 1)
        bias = None
        if op.use_bias:
            bias = tf.cast(op.bias, x.dtype)
            bias = bias if pout is None else tf.gather(bias, pout)
        return x, kernel, bias, pout

    def _produce(self, fn, y, bias, pout):
        if bias is not None:
            y = y + bias
        if fn.op.activation is not None:
            y = fn.op.activation(y)
        return [(y, pout)]

    def run_conv(self, fn):
        x, kernel, bias, pout = self._weights(fn)
        return self._produce(fn, fn.op.convolution_op(x, kernel), bias, pout)

    def run_dense(self, fn):
        x, kernel, bias, pout = self._weights(fn)
        return self._produce(fn, keras.ops.matmul(x, kernel), bias, pout)

    def run_bn(self, fn):
        op = fn.op
        x, pos = self.compact(fn.inputs[0])
        x = tf.cast(x, keras.backend.result_type(x.dtype, "float32"))

        def take(v):
            v = tf.cast(v, x.dtype)
            return v if pos is None else tf.gather(v, pos)

        gamma = take(op.gamma) if op.scale else None
        beta = take(op.beta) if op.center else None
        if self.training and op.trainable:
            axes = list(range(x.shape.rank - 1))
            mean, variance = keras.ops.moments(x, axes=axes, synchronized=op.synchronized)
            for var, stat in ((op.moving_mean, mean), (op.moving_variance, variance)):
                new = take(var) * op.momentum + stat * (1.0 - op.momentum)
                _assign_slice(var, pos, new)
        else:
            mean, variance = take(op.moving_mean), take(op.moving_variance)
        y = keras.ops.batch_normalization(
            x, mean, variance, axis=-1, offset=beta, scale=gamma, epsilon=op.epsilon
        )
        return [(tf.cast(y, op.compute_dtype), pos)]


def _assign_slice(var, pos, value) -> None:
    if pos is None:
        var.assign(tf.cast(value, var.dtype))
    else:
        var.assign(tf.tensor_scatter_nd_update(var.value, pos[:, None], tf.cast(value, var.dtype)))
