"""Mean replacement (bias propagation): fold removed channels' constant outputs into biases.

Evci et al., "Mean Replacement Pruning" (2018), and Evci's thesis (arXiv:1806.06068): a
removed channel is replaced by a constant ``abar_k`` (its mean, or its exact value when the
channel is dead), and the constant's contribution is added to the bias of every layer that
reads it (Evci, Le Roux, Castro, Bottou, "Mean Replacement Pruning", OpenReview BJxRVnC5Fm;
docs/references.md). Each layer type's rule declares the fold (``Rule.fold_constant``); the
built-in ones:

* Dense: ``c'_o = c_o + sum_k abar_k V[k, o]`` (after Flatten, at every row of the channel);
* Conv: ``c'_o = c_o + sum_k abar_k sum_{u,v} V[u, v, k, o]``;
* SeparableConv: the depthwise taps summed, then the pointwise rows;
* Conv transpose: the taps summed and divided by the stride product (the average over output
  positions; exact for stride 1, and whenever the kernel size is a multiple of the stride).

The constant is taken where the channel is fed forward: at a ChannelGate's input (after
BatchNorm and the activation). A gate read by Flatten may instead come with a (*spatial, C) mean
map (``gate_input_means(per_position=True)``): the Dense after Flatten then folds each
position's own mean, which is exact mean replacement of its input units. From the gate to each layer that mixes channels, it is pushed
numerically through the zero-preserving channel-wise layers in between (pooling, padding,
activations, merges with other gated tensors, Flatten), so the consumer sees exactly the
constant it would have read. A channel-wise layer that does not preserve zeros (BatchNorm,
DepthwiseConv) ends the walk: its output is gated again further on, and folded there.

Exactness: the fold is exact for Dense and for convs without padding. With zero padding
('same' kernels > 1, ZeroPadding2D), output positions whose receptive field reaches the border
lose the taps that fall into the padding, so the fold is exact in the interior only (the bias
is the interior value); docs/dead.md gives the measured border error.

Example:
    >>> gated = tfchannelprune.wrap(model)
    >>> graph = tfchannelprune.ChannelGraph(gated)
    >>> means = gate_input_means(gated, x_calibration)
    >>> masks = {"conv1": keep_mask}
    >>> shift = mean_replacement_shift(graph, masks, means)
    >>> small = tfchannelprune.compact(gated, {"conv1": kept}, graph=graph, bias_shift=shift)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from tfchannelprune import _keras
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.errors import UnsupportedLayerError

_UNKNOWN_SPATIAL = 16  # stand-in for a spatial size the model leaves open


def mean_replacement_shift(
    graph: ChannelGraph,
    masks: Mapping[str, np.ndarray],
    means: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The ``bias_shift`` for ``compact`` that replaces removed channels by constants.

    Args:
        graph: the ``ChannelGraph`` of a wrapped model (its gates say where channels are fed
            forward).
        masks: {group name: boolean keep mask}; groups not named keep every channel.
        means: {gate path: vector over the gate's positions}, the value each removed channel
            is replaced with at that gate: the mean of the gate input over calibration data
            (``gate_input_means``), or a dead channel's constant. Only removed positions are
            read. Measure them with the channels switched on.

    Returns:
        {consumer layer path: shift over its original output channels}, to pass as
        ``compact(..., bias_shift=...)``.

    Raises:
        ValueError: for an unwrapped model's graph or a missing / mis-sized ``means`` entry.
        UnsupportedLayerError: when a removed channel reaches a consumer combined with a
            1-channel tensor that is kept (a broadcast merge), which no bias can fold.
    """
    if not graph.gate_paths:
        raise ValueError(
            "mean_replacement_shift needs the graph of a wrapped model (the gates say where a "
            "channel is fed forward). Use ChannelGraph(tfchannelprune.wrap(model)). "
            f"Received: graph of {graph.model.name!r} without ChannelGate layers"
        )
    masks = {name: np.asarray(m, dtype=bool) for name, m in masks.items()}
    values: dict[int, np.ndarray] = {}  # tensor -> replacement image (1, *spatial, C)
    removed: dict[int, np.ndarray] = {}  # tensor -> removed positions (C,)
    varying: set[int] = set()  # tensors whose image comes from a spatial mean map
    shifts: dict[str, np.ndarray] = {}
    for fn, rule in zip(graph.flat.nodes, graph.rules, strict=True):
        if rule.is_gate:
            gone = _removed(graph, fn.inputs[0], masks)
            values[fn.outputs[0]], is_map = _gate_image(fn, means, gone)
            removed[fn.outputs[0]] = gone
            if is_map:
                varying.add(fn.outputs[0])
            continue
        known = [t for t in fn.inputs if t in values]
        if not known or not any(removed[t].any() for t in known):
            continue
        shift = _consumer_shift(fn, rule, values, varying)
        if shift is not None:
            shifts[fn.path] = shifts.get(fn.path, 0.0) + shift
        elif rule.carries_constants(fn) and len(known) == len(fn.inputs):
            _check_broadcast(graph, fn, removed, masks)
            out = _evaluate(fn, values)
            gone = _removed(graph, fn.outputs[0], masks)
            out[..., ~gone] = 0.0
            values[fn.outputs[0]], removed[fn.outputs[0]] = out, gone
            if any(t in varying for t in fn.inputs):
                varying.add(fn.outputs[0])
    return shifts


# ---------------------------------------------------------------------- walking the graph
def _removed(graph, tensor, masks) -> np.ndarray:
    layout = graph.layout(tensor)
    gone = np.ones(len(layout), dtype=bool)
    gone[graph.positions_kept(layout, masks)] = False
    return gone


def _gate_image(fn, means, gone) -> tuple[np.ndarray, bool]:
    """The replacement image of a gate's output, and whether it varies over space."""
    width, spatial = len(gone), _spatial(fn.input_shapes[0])
    if not gone.any():
        return np.zeros((1, *spatial, width), np.float32), False
    if fn.path not in means:
        raise ValueError(
            f"No mean for gate {fn.path!r}, whose channels are removed. Pass the means of "
            f"every gate input (gate_input_means). Received: means for {sorted(means)[:6]}"
        )
    mean = np.asarray(means[fn.path], dtype=np.float64)
    is_map = mean.ndim > 1
    if mean.shape not in ((width,), (*spatial, width)) or (
        is_map and None in fn.input_shapes[0][1:]
    ):
        raise ValueError(
            f"The mean of gate {fn.path!r} must be a vector of its {width} positions or a map "
            f"of its input shape {tuple(spatial) + (width,)}. Received: shape={mean.shape}"
        )
    image = np.broadcast_to(np.where(gone, mean, 0.0), (1, *spatial, width))
    return np.array(image, dtype=np.float32), is_map


def _spatial(shape) -> list[int]:
    return [int(d) if d is not None else _UNKNOWN_SPATIAL for d in shape[1:-1]]


def _check_broadcast(graph, fn, removed, masks) -> None:
    width = len(graph.layout(fn.outputs[0]))
    for t in fn.inputs:
        if len(removed[t]) == 1 < width and not removed[t][0]:
            raise UnsupportedLayerError(
                f"{type(fn.op).__name__} {fn.path!r} combines removed channels with a kept "
                "1-channel tensor broadcast over them, so their contribution is not constant "
                "and no bias can replace it. Keep these channels or remove them without mean "
                f"replacement. Received: removed positions at {fn.path!r}"
            )


def _evaluate(fn, values) -> np.ndarray:
    """Run the leaf call on the constant images of its inputs (inference mode)."""
    tensors = _keras.input_values(fn, lambda t: tf.constant(values[t]))
    return np.array(_keras.call_node(fn, tensors)[0], dtype=np.float32)


# ---------------------------------------------------------------------- folding
def _centre(image: np.ndarray) -> np.ndarray:
    """The channel vector at the centre position: the interior value of a constant image."""
    return np.asarray(image[(0, *[s // 2 for s in image.shape[1:-1]])], dtype=np.float64)


def _consumer_shift(fn, rule, values, varying) -> np.ndarray | None:
    """The bias change of a consumer that reads the replacement image where the removed
    channels were (None: the layer is not a consumer; its rule folds nothing). A constant
    image is read at its centre (exact in the interior); a spatial mean map is averaged over
    space, except by a Dense after Flatten, which reads every position."""
    if fn.inputs[0] not in values:
        return None
    image = values[fn.inputs[0]]
    is_map = fn.inputs[0] in varying
    u = image.reshape(-1, image.shape[-1]).mean(axis=0) if is_map else _centre(image)
    shift = rule.fold_constant(fn.op, fn, u)
    return None if shift is None else np.asarray(shift, dtype=np.float64)
