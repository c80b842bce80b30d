"""``wrap()`` / ``strip()``: put channel gates into a model, or take them out.

Example:
    >>> gated = tfchannelprune.wrap(model)
    >>> tfchannelprune.set_kept_channels(gated, {"conv1": [0, 2, 5]})
    >>> small = tfchannelprune.compact(gated)   # same outputs, fewer channels
"""

from __future__ import annotations

import keras

from tfchannelprune import _keras
from tfchannelprune.core.gate import ChannelGate, is_wrapped, leaf_layers
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import as_graph


def _copy_weights(path, old, new) -> None:
    new.set_weights(old.get_weights())


def _cloner():
    cache: dict[int, object] = {}

    def layer_fn(path, op):
        if id(op) not in cache:
            is_layer = isinstance(op, keras.layers.Layer)
            cache[id(op)] = _keras.clone_layer(op) if is_layer else _keras.clone_operation(op)
        return cache[id(op)]

    return layer_fn


def wrap(model, *, input_shape=None) -> keras.Model:
    """A copy of ``model`` with a ``ChannelGate`` at every gate point (all gates open).

    Args:
        model: a Keras model (Functional, Sequential or subclassed).
        input_shape: for a subclassed model, one example's input shape (no batch axis) to
            trace it on (see ``ChannelGraph``); the copy is a Functional model of that input.

    Raises:
        TypeError: ``model`` is not a keras.Model (None, a file path ...).
        ValueError: if the model is already wrapped.
    """
    if not isinstance(model, keras.Model):
        as_graph(model)  # raises the TypeError that says what is taken
    if is_wrapped(model):
        raise ValueError(
            f"Model {model.name!r} already has ChannelGate layers. Call strip() first or use "
            "it as it is."
        )
    graph = ChannelGraph(model, input_shape=input_shape)
    points = {p.tensor: p for p in graph.gate_points}
    used = {layer.name for layer in leaf_layers(model)}

    def after_fn(path, tensor, y):
        point = points.get(tensor)
        if point is None:
            return y
        name = path.split("/")[-1] + "_gate"
        while name in used:
            name += "_"
        used.add(name)
        return ChannelGate(point.width, name=name)(y)

    return _keras.rebuild(model, _cloner(), after_fn, _copy_weights, traced=graph.flat.traced)


def strip(model) -> keras.Model:
    """``model`` without its gates and with every channel (switched-off ones come back).

    Use ``compact`` to remove switched-off channels instead.
    """
    base = _cloner()

    def layer_fn(path, op):
        return None if isinstance(op, ChannelGate) else base(path, op)

    return _keras.rebuild(model, layer_fn, None, _copy_weights)


def gated_model(model, caller: str, *, copy: bool = True) -> keras.Model:
    """The wrapped model an entry point works on: one rule for models without gates.

    ``model`` itself when it has ChannelGate layers. Otherwise, with ``copy`` (entry points
    that only read the model or return a new one: ``collect_saliency``,
    ``find_dead_channels``, ``gate_input_means``, ``prune``), a wrapped copy, made in the
    model's distribution-strategy scope; its group names and scores are those of
    ``wrap(model)``. Without ``copy`` (callbacks that prune the model being trained:
    ``ChannelPruning``), the one error below.

    Raises:
        ValueError: a model without gates and ``copy=False``.
    """
    if is_wrapped(model):
        return model
    if not copy:
        _check_prunable(model, caller)
        raise ValueError(
            f"{caller} needs a wrapped model, and {model.name!r} has no ChannelGate layers. "
            "Call `gated = tfchannelprune.wrap(model)`, compile and fit `gated`, then "
            "`tfchannelprune.compact(gated)` at the end. Received: an unwrapped model"
        )
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        return wrap(model)
    with strategy.scope():
        return wrap(model)


def _check_prunable(model, caller: str) -> None:
    """Raise "nothing here is prunable" (with the graph's reasons) for a model whose graph has
    no prunable group: ``wrap`` put no gate in it, so "call wrap" would be wrong."""
    graph = as_graph(model)
    if graph.prunable_groups:
        return
    reasons = list(dict.fromkeys(g.reason for g in graph.groups if g.reason))
    layout = [r for r in reasons if "channels_first" in r]
    hint = (
        "tfchannelprune prunes the last axis (channels_last); rebuild the model with "
        "data_format='channels_last' (keras.config.set_image_data_format) and load its weights"
        if layout else "see tfchannelprune.summary(model) for each group's reason"
    )
    shown = "; ".join((layout or reasons)[:4])
    lead = "channels_first data format" if layout else "no group of channels can be removed"
    raise ValueError(
        f"{caller}: nothing here is prunable: {lead} ({shown}), so the model has no "
        f"ChannelGate layers even after wrap(). {hint}. Received: model {model.name!r} with "
        f"{len(graph.groups)} channel groups, none prunable"
    )
