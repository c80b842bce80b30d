"""Non-learning channels: incoming weights that barely move, or whose gradient is near zero.

Evci's thesis (arXiv:1806.06068, chapter 3) separates units that carry no information (dead:
constant output, see ``dead.py``) from units that do not learn. Here a channel's *parameters*
are its slices of the producers' kernels (output axis) and biases and of the BatchNorm gamma and
beta that act on it; a channel is non-learning when, over all of them,

* ``||w - w_ref|| / ||w_ref||`` since a reference snapshot is at most ``move_tol``, or
* the RMS over batches of ``||dL/dw||`` (mean loss of the batch, as in training) is at most
  ``grad_tol`` times the largest value over all channels of the model.

A dead ReLU (never active) has exactly zero gradient; a channel silenced by ``gamma = 0`` has a
zero kernel gradient but not a zero gamma gradient, so it can still revive and is not flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf

from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.saliency import signals as signals_lib

# (variable, channel axis, {group: (indices along the axis, channels of the group)})
Slices = list[tuple[object, int, dict]]


def channel_parameters(graph: ChannelGraph) -> Slices:
    """Every trainable slice that belongs to one channel of a prunable group: the output-side
    weight axes of the groups' producers (kernel, bias) and the axes of the per-channel scaled
    layers acting on them (BatchNorm's gamma and beta), as their rules declare them."""
    prunable = {g.name for g in graph.prunable_groups}
    producers = {path for g in graph.prunable_groups for path in g.producers}
    out: Slices = []
    for fn, rule in zip(graph.flat.nodes, graph.rules, strict=True):
        if fn.path in producers:
            side, tensor = "out", fn.outputs[0]
        elif rule.channel_scale(fn) is not None:
            side, tensor = "in", fn.inputs[0]
        else:
            continue
        variables = {v.name: v for v in fn.op.trainable_weights}
        positions = signals_lib.channel_positions(graph, tensor, prunable)
        for axis in rule.weight_axes(fn):
            if axis.side == side and axis.weight in variables and positions:
                out.append((variables[axis.weight], axis.axis, _repeated(positions, axis.repeat)))
    return out


def _repeated(positions: dict, repeat: int) -> dict:
    """Positions of a weight axis where each channel position spans ``repeat`` indices."""
    if repeat == 1:
        return positions
    step = np.arange(repeat)
    return {
        g: ((i[:, None] * repeat + step).reshape(-1), np.repeat(c, repeat))
        for g, (i, c) in positions.items()
    }


def _per_channel(graph, slices: Slices, arrays: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Sum of squares of each array's channel slices, per group channel."""
    sums = {g.name: np.zeros(g.size, np.float64) for g in graph.prunable_groups}
    for (_, axis, positions), array in zip(slices, arrays, strict=True):
        squared = np.square(np.asarray(array, np.float64))
        reduce_axes = tuple(a for a in range(squared.ndim) if a != axis)
        per_index = squared.sum(axis=reduce_axes) if reduce_axes else squared
        for group, (index, channels) in positions.items():
            np.add.at(sums[group], channels, per_index[index])
    return sums


def reference_arrays(model, reference) -> dict[str, np.ndarray]:
    """{variable path: array} from a model, a ``get_weights()`` list, or such a dict.

    Raises:
        ValueError: a list of the wrong length; TypeError: anything else.
    """
    import keras

    if isinstance(reference, keras.Model):
        return {v.path: np.asarray(v.numpy()) for v in reference.weights}
    if isinstance(reference, Mapping):
        return {str(k): np.asarray(v) for k, v in reference.items()}
    if isinstance(reference, (list, tuple)):
        if len(reference) != len(model.weights):
            raise ValueError(
                "A reference given as a list must be model.get_weights() of the same model, "
                f"with {len(model.weights)} arrays. Received: {len(reference)} arrays"
            )
        return {v.path: np.asarray(a) for v, a in zip(model.weights, reference, strict=True)}
    raise TypeError(
        "reference must be a keras.Model, a list from model.get_weights() or a dict "
        f"{{variable path: array}}. Received: reference of type {type(reference).__name__}"
    )


def weight_movement(graph, slices: Slices, reference: Mapping[str, np.ndarray]):
    """{group: ||w - w_ref|| / ||w_ref|| per channel} over the channel's parameters.

    Raises:
        ValueError: when the reference lacks a variable or has another shape.
    """
    now, before = [], []
    for var, _, _ in slices:
        if var.path not in reference:
            raise ValueError(
                f"The reference has no value for {var.path!r} (layer names must match). "
                f"Received: reference paths such as {sorted(reference)[:5]}"
            )
        ref = np.asarray(reference[var.path])
        if ref.shape != tuple(var.shape):
            raise ValueError(
                f"The reference of {var.path!r} has shape {ref.shape}, the model "
                f"{tuple(var.shape)}. Received: a snapshot of another architecture"
            )
        now.append(np.asarray(var.numpy()) - ref)
        before.append(ref)
    moved = _per_channel(graph, slices, now)
    size = _per_channel(graph, slices, before)
    return {g: np.sqrt(moved[g]) / np.maximum(np.sqrt(size[g]), 1e-12) for g in moved}


def snapshot(slices: Slices) -> dict[str, np.ndarray]:
    return {var.path: np.array(var.numpy()) for var, _, _ in slices}


def gradient_norms(model, graph, slices: Slices, batches, loss) -> dict[str, np.ndarray]:
    """{group: RMS over batches of the channel's gradient norm} (inference-mode forward)."""
    from tfchannelprune.saliency.reductions import per_example_loss

    per_example = per_example_loss(loss)
    variables = [var for var, _, _ in slices]

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss_value = tf.reduce_mean(per_example(y, model(x, training=False)))
        return tape.gradient(loss_value, variables)

    total = {g.name: np.zeros(g.size, np.float64) for g in graph.prunable_groups}
    count = 0
    for x, y in batches:
        if y is None:
            raise ValueError(
                "Gradient norms need labels: pass data as (x, y) together with loss. "
                "Received: batches without y"
            )
        grads = [np.zeros(v.shape) if g is None else g.numpy() for g, v in
                 zip(step(x, y), variables, strict=True)]  # fmt: skip
        for group, values in _per_channel(graph, slices, grads).items():
            total[group] += values
        count += 1
    return {g: np.sqrt(v / max(count, 1)) for g, v in total.items()}


def flag(movement, grads, move_tol: float, grad_tol: float) -> dict[str, tuple[int, ...]]:
    """{group: channels} whose movement <= move_tol or gradient <= grad_tol x the largest."""
    flagged: dict[str, set] = {}
    if movement is not None:
        for group, values in movement.items():
            flagged.setdefault(group, set()).update(np.flatnonzero(values <= move_tol).tolist())
    if grads is not None:
        largest = max((float(v.max()) for v in grads.values() if v.size), default=0.0)
        for group, values in grads.items():
            low = np.flatnonzero(values <= grad_tol * largest).tolist()
            flagged.setdefault(group, set()).update(low)
    return {g: tuple(sorted(c)) for g, c in flagged.items() if c}
