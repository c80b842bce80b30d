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
    """Every trainable slice that belongs to one channel of a prunable group."""
    out: Slices = []
    for source in signals_lib.kernel_sources(graph):
        if source.role != "producer":
            continue
        out.append((source.variable, source.channel_axis, source.positions))
        bias = getattr(source.layer, "bias", None)
        if bias is not None:
            out.append((bias, 0, source.positions))
    by_layer: dict[int, tuple] = {}
    for group, layer, index, channels in signals_lib.batch_norms(graph):
        by_layer.setdefault(id(layer), (layer, {}))[1][group] = (index, channels)
    for layer, positions in by_layer.values():
        for var in (layer.gamma, getattr(layer, "beta", None)):
            if var is not None and var.trainable:
                out.append((var, 0, positions))
    return out


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
