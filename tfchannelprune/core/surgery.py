"""``compact()``: rebuild a smaller functional model with switched-off channels removed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import keep_masks


def node_keeps(graph: ChannelGraph, fn, masks) -> tuple[np.ndarray, np.ndarray]:
    """Kept positions of the first input and first output channel axes of a leaf call."""
    in_keep = graph.positions_kept(graph.layout_of(fn.inputs[0]), masks)
    out_keep = graph.positions_kept(graph.layout_of(fn.outputs[0]), masks)
    return in_keep, out_keep


def node_cut(graph: ChannelGraph, fn, rule, masks):
    """(kept input positions, kept output positions, cut) of a leaf call; ``cut`` is None when
    the call keeps every channel (or its rule changes nothing), else (config, weights)."""
    in_keep, out_keep = node_keeps(graph, fn, masks)
    full = len(in_keep) == len(graph.layout_of(fn.inputs[0])) and len(out_keep) == len(
        graph.layout_of(fn.outputs[0])
    )
    return in_keep, out_keep, None if full else rule.cut(fn.op, fn, in_keep, out_keep)


def cut_like_weights(graph: ChannelGraph, values, masks=None) -> dict[str, np.ndarray]:
    """Arrays shaped like the model's trainable variables (``values``: {variable path: array},
    zeros where missing), cut as ``compact`` cuts the variables, without building a model.

    Returns:
        {variable path: cut array} for the trainable variables of the graph's layers; the
        compact model's variables keep the paths of the layers they come from.
    """
    masks = keep_masks(graph, None) if masks is None else masks
    out: dict[str, np.ndarray] = {}
    seen: set[int] = set()

    def stand_in(v):
        return np.asarray(values[v.path]) if v.path in values else np.zeros(v.shape, v.dtype)

    for fn, rule in zip(graph.flat.nodes, graph.rules):
        layer = fn.op
        if id(layer) in seen or not getattr(layer, "trainable_variables", None):
            continue
        seen.add(id(layer))
        with _keras.weights_replaced(stand_in):
            cut = node_cut(graph, fn, rule, masks)[2]
            cut_values = cut[1] if cut is not None and cut[1] is not None else None
            cut_values = cut_values or _keras.weights_by_name(layer)
        for v in layer.trainable_variables:
            out[v.path] = np.asarray(cut_values[v.name])
    return out


def _flat_indices(shape) -> np.ndarray:
    """0, 1, ... in ``shape``, as floats (a rule that computes new values gives non-integers):
    float32 up to 2**22 entries, where every index and every half-way value is exact (half the
    memory of a large model's copy), float64 above."""
    size = int(np.prod(shape))
    return np.arange(size, dtype=np.float32 if size <= 2**22 else np.float64).reshape(shape)


def removed_entries(graph: ChannelGraph, masks=None) -> dict[str, np.ndarray]:
    """{trainable variable path: boolean array, True where ``compact`` removes the entry} for
    the variables that lose entries (whole filters, consumers' input slices, BatchNorm
    entries ...), found by cutting each variable's flat indices as ``compact`` cuts it.

    A variable whose cut is not a selection of its entries (a rule that computes new values)
    is left out.
    """
    variables = {}
    for fn in graph.flat.nodes:
        for v in getattr(fn.op, "trainable_variables", None) or []:
            variables[v.path] = v
    indices = {p: _flat_indices(v.shape) for p, v in variables.items()}
    out = {}
    for path, kept in cut_like_weights(graph, indices, masks).items():
        size = indices[path].size
        flat = np.asarray(kept).ravel()
        picked = flat.astype(np.int64)
        if flat.size == size or not np.array_equal(picked, flat):
            continue  # nothing removed, or not a selection
        if picked.size and (picked.min() < 0 or picked.max() >= size):
            continue
        removed = np.ones(size, bool)
        removed[picked] = False
        if size - np.count_nonzero(removed) != picked.size:
            continue  # an entry picked twice: not a selection (np.unique cost 10 s on ResNet50)
        out[path] = removed.reshape(indices[path].shape)
    return out


@keyword_only("graph", "bias_shift")
def compact(
    model,
    plan: Mapping[str, Sequence[int]] | None = None,
    *,
    graph=None,
    bias_shift: Mapping[str, np.ndarray] | None = None,
) -> keras.Model:
    """A new functional model with the switched-off channels physically removed.

    Args:
        model: a wrapped model (channels switched off by its gates) or a plain model.
        plan: optional {group name: kept channel indices}; on a wrapped model it overrides the
            gates of the groups it names.
        graph: the model's ``ChannelGraph``, if already built.
        bias_shift: {layer path: vector over the layer's ORIGINAL output channels} added to
            that layer's bias (a bias is created where the layer has none). Mean replacement
            folds removed channels' constant outputs into their consumers this way.

    Returns:
        A model without gates whose outputs equal the gated model's (to float tolerance),
        with sliced kernels, biases, BatchNorm statistics, depthwise/separable weights,
        consumers' input slices, Concatenate offsets and Dense rows after Flatten.

    Raises:
        ValueError / UnsupportedLayerError: for a bad plan (see ``set_kept_channels``).
    """
    graph = graph if graph is not None else ChannelGraph(model)
    masks = keep_masks(graph, plan)
    by_path = {fn.path: (fn, rule) for fn, rule in zip(graph.flat.nodes, graph.rules)}
    cache: dict[int, object] = {}
    pending: dict[int, dict | None] = {}

    def layer_fn(path, op):
        if isinstance(op, ChannelGate):
            return None
        if id(op) in cache:
            return cache[id(op)]
        if not isinstance(op, keras.layers.Layer):
            cut = node_cut(graph, *by_path[path], masks)[2] if path in by_path else None
            if cut is None:
                cache[id(op)] = _keras.clone_operation(op)
            else:  # a new config, or a replacement call (an argument changes, e.g. a slice)
                config = cut[0]
                cache[id(op)] = config if callable(config) else type(op).from_config(config)
            return cache[id(op)]
        _, out_keep, cut = node_cut(graph, *by_path[path], masks)
        config, weights = cut if cut is not None else (None, None)
        if bias_shift and path in bias_shift:
            config, weights = _shift_bias(op, config, weights, bias_shift[path], out_keep)
        cache[id(op)] = _keras.clone_layer(op, config)
        pending[id(op)] = weights
        return cache[id(op)]

    def built_fn(path, old, new):
        weights = pending.pop(id(old), None)
        if weights is not None:
            _keras.set_weights_by_name(new, weights)
        elif old.weights:
            new.set_weights(old.get_weights())

    return _keras.rebuild(model, layer_fn, None, built_fn, traced=graph.flat.traced)


def _shift_bias(layer, config, weights, shift, out_keep):
    """Add ``shift`` (over the original output channels) to the layer's bias."""
    config = dict(layer.get_config() if config is None else config)
    if "use_bias" not in config:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no bias to fold a shift into."
        )
    weights = dict(_keras.weights_by_name(layer) if weights is None else weights)
    shift = np.asarray(shift, dtype="float32")[out_keep]
    config["use_bias"] = True
    weights["bias"] = weights.get("bias", np.zeros_like(shift)) + shift
    return config, weights
