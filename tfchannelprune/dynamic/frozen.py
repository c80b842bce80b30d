"""``FrozenSlices``: inactive channels keep their weights and optimizer state through a step.

A channel that was not executed has zero gradients, but an optimizer would still move it
(momentum, Adam's first moment, weight decay) and decay its slots. Around each optimizer step,
the slices of every per-channel weight and of its optimizer slots (slot variables of the same
shape) that belong to an inactive channel are put back to their values before the step
(momentum and Adam state of a channel that did not run must not move either).

A weight entry is updated only when all the channels it connects are active: a conv kernel
entry needs its input and its output channel active.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _axes(fn, rule, var, fi_in, fi_out) -> list[tuple[int, np.ndarray]]:
    """(axis, flat channel slot per index along that axis) for one weight of a leaf call,
    from the channel axes its rule declares (``Rule.weight_axes``)."""
    name = var.name.split("/")[-1]
    sides = {"in": fi_in, "out": fi_out}
    return [
        (a.axis, np.repeat(sides[a.side], a.repeat))
        for a in rule.weight_axes(fn)
        if a.weight == name
    ]


class FrozenSlices:
    """Per-channel masks for a model's trainable weights and their optimizer slots.

    Args:
        executor: the ``ChannelExecutor`` (its flat channel slots and partial groups).
    """

    def __init__(self, executor):
        self.executor = executor
        graph = executor.graph
        dynamic = np.zeros(executor.total, dtype=bool)
        for gi in executor.dynamic:
            start = executor.offsets[gi]
            dynamic[start : start + executor.groups[gi].size] = True
        self.specs: list[tuple[object, list[tuple[int, np.ndarray]]]] = []
        seen: set[int] = set()
        for fn, rule in zip(graph.flat.nodes, graph.rules):
            layer = fn.op
            if not isinstance(layer, keras.layers.Layer) or rule.is_gate:
                continue
            fi_in = executor.flat_index(fn.inputs[0]) if fn.inputs else np.zeros(0, int)
            fi_out = executor.flat_index(fn.outputs[0])
            for var in layer.trainable_weights:
                axes = [
                    (a, fi) for a, fi in _axes(fn, rule, var, fi_in, fi_out) if dynamic[fi].any()
                ]
                if axes and id(var) not in seen:
                    seen.add(id(var))
                    self.specs.append((var, axes))
        self._targets = None

    @property
    def variables(self) -> list:
        """The model weights that have per-channel slices."""
        return [v for v, _ in self.specs]

    def targets(self, optimizer) -> list:
        """(variable, axes) for the weights and for every optimizer slot of the same shape."""
        if self._targets is None:
            owners = [(v.path.replace("/", "_") + "_", v, axes) for v, axes in self.specs]
            slots = []
            for slot in optimizer.variables:
                matches = [
                    (len(prefix), axes)
                    for prefix, v, axes in owners
                    if slot.name.startswith(prefix) and tuple(slot.shape) == tuple(v.shape)
                ]
                if matches:
                    slots.append((slot, max(matches, key=lambda m: m[0])[1]))
            self._targets = list(self.specs) + slots
        return self._targets

    def mask(self, axes, shape, flat_mask) -> tf.Tensor:
        rank = len(shape)
        result = None
        for axis, fi in axes:
            m = tf.gather(flat_mask, tf.constant(fi, tf.int32))
            m = tf.reshape(m, [-1 if i == axis else 1 for i in range(rank)])
            result = m if result is None else tf.logical_and(result, m)
        return tf.broadcast_to(result, shape)

    def apply_gradients(self, optimizer, grads, variables, flat_mask) -> None:
        """``optimizer.apply_gradients`` that leaves inactive slices (and their slots) as
        they were before the step."""
        targets = self.targets(optimizer)
        before = [tf.identity(v.value) for v, _ in targets]
        with tf.control_dependencies(before):
            optimizer.apply_gradients(zip(grads, variables))
        for (var, axes), old in zip(targets, before):
            keep = self.mask(axes, tuple(var.shape), flat_mask)
            var.assign(tf.where(keep, var.value, old))
