"""GradientTape passes over data that feed the saliency signals.

``collect_saliency(model, data, loss, signal)`` runs one forward/backward pass per batch and
returns {group: scores} (LOWER = prune first); ``SaliencyAccumulator`` (re-exported here) is the
same machinery as an object a ``model.fit`` callback feeds with ``update(x, y)``;
``oracle_loss_change`` measures the true loss change of switching each channel off.

Conventions (docs/signals.md):

* gradients are those of the SUM of per-example losses, so each example's gradient is its own
  and no signal depends on the batch size;
* BatchNorm and Dropout run in inference mode (``training=False``) unless asked otherwise; with
  ``training=True`` their state updates (moving statistics) are discarded;
* per-example statistics are accumulated in float64 across batches, weighted by examples;
* the activation ``a`` is a ChannelGate's input (after BatchNorm and activation) and
  ``g = dl_n/da``; a switched-off channel has ``g = 0``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import tree

from tfchannelprune.core.gate import is_wrapped
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.wrap import wrap
from tfchannelprune.saliency.accumulator import SaliencyAccumulator
from tfchannelprune.saliency.reductions import check_batch, per_example_loss

__all__ = ["SaliencyAccumulator", "as_dataset", "collect_saliency", "oracle_loss_change"]


def as_dataset(data, batch_size: int, model=None) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of (x, y) from a Dataset or an (x, y) pair of arrays.

    Raises:
        ValueError: empty arrays, x and y of different lengths, or a dataset that does not
        yield (x, y) batches of ``model``'s input rank.
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(
                f"The dataset must yield (x, y) batches. Received: element_spec={spec}"
            )
        rank = tree.flatten(spec[0])[0].shape.rank
        if model is not None and rank is not None and rank == len(model.inputs[0].shape) - 1:
            raise ValueError(
                "The dataset yields single examples; batch it, e.g. dataset.batch(32). "
                f"Received: element_spec={spec}"
            )
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "data must be a tf.data.Dataset of (x, y) batches or a pair (x, y) of arrays. "
            f"Received: data of type {type(data).__name__}"
        )
    x, y = data
    check_batch(x, y)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def collect_saliency(
    model,
    data,
    loss,
    signal="taylor",
    steps: int | None = None,
    training: bool = False,
    batch_size: int = 32,
):
    """Saliency scores of every prunable channel group from one pass over ``data``.

    Args:
        model: a Keras model, wrapped or not (it is wrapped internally; group names agree).
        data: a ``tf.data.Dataset`` of (x, y) batches, or a pair (x, y) of NumPy arrays.
        loss: a ``keras.losses.Loss``, a loss name or ``fn(y_true, y_pred)`` per example.
        signal: a preset name (``"taylor"``, ``"fisher"``, ...), an id, a ``Signal``, or a
            list of them (one pass computes all).
        steps: at most this many batches.
        training: run BatchNorm / Dropout in training mode (updates discarded).
        batch_size: batch size for NumPy data (does not change the scores).

    Returns:
        {group name: float64 scores, LOWER = prune first}, or for a list of signals
        {key: {group: scores}} keyed by the given strings (or ``Signal.id``).

    Raises:
        ValueError: empty data, x and y of different lengths, a non-finite loss, an unknown
        signal.

    Example:
        >>> scores = collect_saliency(model, (x, y), "sparse_categorical_crossentropy")
    """
    acc = SaliencyAccumulator(model, signal, loss, training, _copy_ok=True)
    if not acc.needs_data:
        return acc.result()
    dataset = as_dataset(data, batch_size, acc.model)
    if steps is not None:
        dataset = dataset.take(int(steps))
    strategy = acc.strategy
    if strategy.num_replicas_in_sync > 1:
        dataset = strategy.experimental_distribute_dataset(dataset)
    if acc.needs_means:  # the activation mean of mean_delta signals, over all the data
        for x, _ in dataset:
            acc.update_means(x)
    for x, y in dataset:
        acc.update(x, y)
    if acc.num_examples == 0:
        raise ValueError(
            "The data held no examples, so no saliency could be collected. "
            f"Received: data={data!r:.80}, steps={steps}"
        )
    return acc.result()


def oracle_loss_change(model, data, loss, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Molchanov's oracle: the true change of the mean loss when each channel alone is
    switched off, ``L(channel off) - L`` (signed; its absolute value is "oracle-abs").

    Channels already switched off, and the last kept channel of a group (which cannot be
    removed), get 0. The gates are restored afterwards.

    Returns:
        {group name: float64 loss changes}.
    """
    from tfchannelprune.core.plans import get_kept_channels, set_kept_channels

    gated = model if is_wrapped(model) else wrap(model)
    graph = ChannelGraph(gated)
    per_example = per_example_loss(loss)
    batches = list(as_dataset(data, batch_size))

    @tf.function(reduce_retracing=True, autograph=False)
    def batch_loss(x, y):
        return tf.reduce_sum(tf.cast(per_example(y, gated(x, training=False)), tf.float64))

    def mean_loss() -> float:
        total = sum(float(batch_loss(x, y)) for x, y in batches)
        return total / max(sum(int(tf.shape(y)[0]) for _, y in batches), 1)

    original = get_kept_channels(graph)
    base = mean_loss()
    out = {}
    try:
        for group in graph.prunable_groups:
            kept = original[group.name]
            deltas = np.zeros(group.size, np.float64)
            for ch in kept if len(kept) > 1 else []:
                set_kept_channels(gated, {group.name: [c for c in kept if c != ch]}, graph)
                deltas[ch] = mean_loss() - base
            set_kept_channels(gated, {group.name: kept}, graph)
            out[group.name] = deltas
    finally:
        set_kept_channels(gated, original, graph)
    return out
