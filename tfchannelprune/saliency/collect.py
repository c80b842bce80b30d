"""GradientTape passes over data that feed the saliency signals.

``collect_saliency(model, data, loss=..., signal=...)`` runs one forward/backward pass per batch and
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
  ``g = dl_n/da``; a switched-off channel has ``g = 0``;
* ``taylor`` and ``fisher`` (base ``mask_delta``) differentiate ONE mask per channel shared by
  all the gates of its group: per example the sum over gates and positions of ``(0 - a) * g``
  (a spatial SUM) before the absolute value or square (``saliency.mask_delta``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfchannelprune.core.batches import as_dataset
from tfchannelprune.core.convention import keyword_only, one_or_several, signal_or_signals
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.wrap import gated_model
from tfchannelprune.saliency import registry
from tfchannelprune.saliency.accumulator import SaliencyAccumulator
from tfchannelprune.saliency.importance import (
    SignalImportance,
    check_scores,
    score_signals,
    scoring_context,
)
from tfchannelprune.saliency.reductions import per_example_loss

__all__ = ["SaliencyAccumulator", "collect_saliency", "oracle_loss_change", "score_all"]


@keyword_only(
    "loss", signal_or_signals, "steps", "training", "batch_size", exclusive=("signal", "signals")
)
def collect_saliency(
    model,
    data,
    *,
    loss=None,
    signal="taylor",
    signals=None,
    batch_size: int = 32,
    steps: int | None = None,
    training: bool = False,
):
    """Importance scores of every prunable channel group from one pass over ``data``.

    Args:
        model: a Keras model, wrapped or not (a model without gates is scored through a
            wrapped copy; group names agree with ``wrap(model)``).
        data: (x, y) arrays, a ``tf.data.Dataset`` of (x, y) batches or a
            ``keras.utils.PyDataset`` (see ``tfchannelprune.core.batches``); None for
            criteria that read only the weights.
        loss: a ``keras.losses.Loss``, a loss name or ``fn(y_true, y_pred)`` per example;
            needed by criteria that use gradients.
        signal: ONE criterion: a preset name (``"taylor"``, ``"fisher"``, ``"fpgm"`` ...),
            an id, a ``Signal``, an ``Importance`` object or a function ``fn(context) ->
            {group: scores}``.
        signals: instead of ``signal``, a list of criteria scored in one pass (every
            taxonomy signal shares it); the result is then keyed by criterion.
        batch_size: batch size for NumPy data (does not change the taxonomy's scores).
        steps: at most this many batches.
        training: run BatchNorm / Dropout in training mode (updates discarded).

    Returns:
        With ``signal``: {group name: float64 scores, LOWER = prune first}. With ``signals``:
        {key: {group: scores}} keyed by the given strings (or the importance's ``name``).
        The shape follows the keyword, never the value.

    Raises:
        TypeError: a list given as ``signal`` (use ``signals``), or both keywords.
        ValueError: empty data, x and y of different lengths, a non-finite loss, an unknown
        signal, or scores of the wrong shape from an importance.

    Example:
        >>> scores = collect_saliency(model, (x, y), loss="sparse_categorical_crossentropy")
        >>> both = collect_saliency(model, (x, y), loss=loss, signals=["taylor", "fisher"])
    """
    entries, one = one_or_several(signal, signals)
    importances = [registry.get(e) for e in entries]
    keys = [e if isinstance(e, str) else imp.name for e, imp in zip(entries, importances)]
    context = scoring_context(
        model, data, loss, steps=steps, batch_size=batch_size, training=training
    )
    results = score_all(context, importances)
    return results[0] if one else dict(zip(keys, results, strict=True))


def score_all(context, importances) -> list[dict[str, np.ndarray]]:
    """Scores of each importance at one event.

    The taxonomy signals among them share one data pass; an accumulated importance is
    first fed the context's batches (``build``, ``reset``, ``update(x, y)`` per batch).
    """
    missing = [i.name for i in importances if i.needs_gradients and context.loss is None]
    if missing:
        raise ValueError(
            f"Criteria {missing} need gradients of a loss; give loss (e.g. "
            "'sparse_categorical_crossentropy'). Received: loss=None"
        )
    taxonomy = [i.signal for i in importances if isinstance(i, SignalImportance)]
    shared = dict(zip(taxonomy, score_signals(context, taxonomy))) if taxonomy else {}
    results = []
    for imp in importances:
        if isinstance(imp, SignalImportance):
            scores = shared[imp.signal]
        else:
            if imp.accumulated and not getattr(imp, "in_step", False):
                accumulate(imp, context)  # in-step criteria were fed by the training steps
            scores = imp(context)
        results.append(check_scores(scores, context, imp.name))
    return results


def accumulate(importance, context) -> None:
    """Feed an accumulated importance every batch of the context's data."""
    importance.build(context)
    importance.reset()
    for x, y in context.batches(labels=True):
        importance.update(x, y)


@keyword_only("loss", "batch_size", "channels")
def oracle_loss_change(
    model, data, *, loss=None, batch_size: int = 32, channels: dict | None = None
) -> dict[str, np.ndarray]:
    """Molchanov's oracle: the true change of the mean loss when each channel alone is
    switched off, ``L(channel off) - L`` (signed; its absolute value is "oracle-abs").

    Channels already switched off, and the last kept channel of a group (which cannot be
    removed), get 0. The gates are restored afterwards.

    Args:
        model: a Keras model, wrapped or not.
        data: (x, y) arrays or a dataset (see ``collect_saliency``).
        loss: the loss whose change is measured (default: the model's compiled loss).
        batch_size: batch size for NumPy data.
        channels: {group name: channel indices} to measure only those (one forward pass over
            ``data`` per channel, so a sample keeps a large network affordable); the other
            channels, and groups not named, get NaN. None measures every channel.

    Returns:
        {group name: float64 loss changes}.

    Raises:
        ValueError: ``channels`` names an unknown group or an index out of range.
    """
    from tfchannelprune.core.plans import get_kept_channels, set_kept_channels

    loss = getattr(model, "loss", None) if loss is None else loss
    gated = gated_model(model, "oracle_loss_change")
    graph = ChannelGraph(gated)
    per_example = per_example_loss(loss)
    batches = list(as_dataset(data, batch_size, model=gated))

    @tf.function(reduce_retracing=True, autograph=False)
    def batch_loss(x, y):
        return tf.reduce_sum(tf.cast(per_example(y, gated(x, training=False)), tf.float64))

    def mean_loss() -> float:
        total = sum(float(batch_loss(x, y)) for x, y in batches)
        return total / max(sum(int(tf.shape(y)[0]) for _, y in batches), 1)

    wanted = _oracle_channels(graph, channels)
    original = get_kept_channels(graph)
    base = mean_loss()
    out = {}
    try:
        for group in graph.prunable_groups:
            kept = original[group.name]
            deltas = np.zeros(group.size, np.float64)
            todo = kept if len(kept) > 1 else []
            if wanted is not None:  # a sample: NaN where not measured
                sample = wanted.get(group.name, set())
                deltas[:] = np.nan
                deltas[sorted(sample)] = 0.0
                todo = [ch for ch in todo if ch in sample]
            for ch in todo:
                set_kept_channels(gated, {group.name: [c for c in kept if c != ch]}, graph=graph)
                deltas[ch] = mean_loss() - base
            set_kept_channels(gated, {group.name: kept}, graph=graph)
            out[group.name] = deltas
    finally:
        set_kept_channels(gated, original, graph=graph)
    return out


def _oracle_channels(graph, channels) -> dict[str, set] | None:
    if channels is None:
        return None
    sizes = {g.name: g.size for g in graph.prunable_groups}
    wanted = {}
    for name, indices in channels.items():
        if name not in sizes:
            raise ValueError(f"`channels` names an unknown prunable group {name!r}; groups: "
                             f"{sorted(sizes)}. Received: channels={channels!r}")  # fmt: skip
        picked = {int(i) for i in np.asarray(indices).ravel()}
        if any(not 0 <= i < sizes[name] for i in picked):
            raise ValueError(f"`channels[{name!r}]` has an index outside 0..{sizes[name] - 1}. "
                             f"Received: {sorted(picked)}")  # fmt: skip
        wanted[name] = picked
    return wanted
