"""ChannelGate layer, ``wrap()`` / ``strip()`` and ``set_kept_channels()``.

A gate multiplies a tensor's channels by a non-trainable 0/1 vector. ``wrap`` puts one on every
tensor that may carry a switched-off channel into a layer that reads channels jointly (a conv,
a Dense, a Flatten), i.e. after BatchNorm and activation, so that a gate at 0 is exactly
equivalent to removing the channel (``compact`` does the removal).

Example:
    >>> gated = tfchannelprune.wrap(model)
    >>> tfchannelprune.set_kept_channels(gated, {"conv1": [0, 2, 5]})
    >>> small = tfchannelprune.compact(gated)   # same outputs, fewer channels
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from tfchannelprune import _keras
from tfchannelprune.errors import UnsupportedLayerError

_RECORDER: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "tfchannelprune_gate_recorder", default=None
)


@keras.saving.register_keras_serializable(package="tfchannelprune")
class ChannelGate(keras.layers.Layer):
    """Multiplies the last axis by a non-trainable per-channel 0/1 gate.

    Args:
        units: number of channels (the last axis of the input).

    The gate state is a weight named ``gate``, so it is saved in ``.keras`` files and
    checkpoints. Inside ``record_gate_inputs(fn)``, ``fn(gate_layer, x)`` is called with the
    gate's input and may return a replacement for it (saliency collection hooks in here).
    """

    def __init__(self, units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True

    def build(self, input_shape):
        units = input_shape[-1]
        if self.units is not None and units != self.units:
            raise ValueError(
                f"ChannelGate {self.name!r} was made for {self.units} channels. "
                f"Received: input_shape={input_shape}"
            )
        self.units = units
        self.gate = self.add_weight(
            name="gate", shape=(units,), initializer="ones", trainable=False
        )

    def call(self, inputs):
        recorder = _RECORDER.get()
        if recorder is not None:
            inputs = recorder(self, inputs)
        return inputs * keras.ops.cast(self.gate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@contextlib.contextmanager
def record_gate_inputs(fn: Callable):
    """Call ``fn(gate, x)`` on every gate input while the context is open (also when a
    ``tf.function`` is traced inside it)."""
    token = _RECORDER.set(fn)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def _graph(model):
    from tfchannelprune.graph import ChannelGraph

    return model if isinstance(model, ChannelGraph) else ChannelGraph(model)


def is_wrapped(model) -> bool:
    return any(isinstance(layer, ChannelGate) for layer in leaf_layers(model))


def leaf_layers(model):
    """Every layer of ``model``, nested models opened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


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


def wrap(model) -> keras.Model:
    """A copy of ``model`` with a ``ChannelGate`` at every gate point (all gates open).

    Raises:
        ValueError: if the model is already wrapped.
    """
    if is_wrapped(model):
        raise ValueError(
            f"Model {model.name!r} already has ChannelGate layers. Call strip() first or use "
            "it as it is."
        )
    graph = _graph(model)
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

    return _keras.rebuild(model, _cloner(), after_fn, _copy_weights)


def strip(model) -> keras.Model:
    """``model`` without its gates and with every channel (switched-off ones come back).

    Use ``compact`` to remove switched-off channels instead.
    """
    base = _cloner()

    def layer_fn(path, op):
        return None if isinstance(op, ChannelGate) else base(path, op)

    return _keras.rebuild(model, layer_fn, None, _copy_weights)


def _gate_layers(model) -> dict[str, ChannelGate]:
    found = {}

    def walk(m, prefix):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer, prefix + layer.name + "/")
            elif isinstance(layer, ChannelGate):
                found[prefix + layer.name] = layer

    walk(model, "")
    return found


def validate_plan(graph, plan: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Check a plan {group name: kept channel indices}; return {name: boolean keep mask}."""
    if not isinstance(plan, Mapping):
        raise TypeError(
            "A plan maps group names to the channel indices to keep. "
            f"Received: plan of type {type(plan).__name__}"
        )
    masks = {}
    for name, indices in plan.items():
        group = graph.group(name)
        idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError(
                f"Keeping no channel of group {name!r} would empty layers "
                f"{', '.join(group.producers or group.channelwise) or name}; keep at least one. "
                f"Received: indices=[]"
            )
        if idx.min() < 0 or idx.max() >= group.size:
            raise ValueError(
                f"Channel indices of group {name!r} must be in [0, {group.size}). "
                f"Received: indices with min={idx.min()}, max={idx.max()}"
            )
        if len(np.unique(idx)) != idx.size:
            raise ValueError(
                f"Channel indices of group {name!r} contain duplicates. "
                f"Received: indices={idx.tolist()}"
            )
        if not group.prunable and idx.size != group.size:
            raise UnsupportedLayerError(
                f"Group {name!r} cannot lose channels: {group.reason}. Received: "
                f"{group.size - idx.size} channels to remove"
            )
        mask = np.zeros(group.size, dtype=bool)
        mask[idx] = True
        masks[name] = mask
    return masks


def gate_masks(graph) -> dict[str, np.ndarray]:
    """{group name: boolean keep mask} read from the gates of a wrapped model.

    Raises:
        ValueError: when a gate holds a value other than 0 or 1, or when the gates of one
        channel disagree (no compact model would then equal the gated one).
    """
    gates = _gate_layers(graph.model)
    masks: dict[str, np.ndarray] = {}
    seen: dict[str, np.ndarray] = {}
    for path in graph.gate_paths:
        values = np.asarray(gates[path].gate.numpy())
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(
                f"Gate {path!r} holds values other than 0 and 1; only 0/1 gates describe a "
                f"smaller model. Received: values={np.unique(values)[:6].tolist()}"
            )
        for (name, ch), v in zip(graph.gate_layout(path), values):
            group = graph.group(name)
            masks.setdefault(name, np.ones(group.size, dtype=bool))
            seen.setdefault(name, np.full(group.size, -1, dtype=np.int8))
            if seen[name][ch] not in (-1, int(v)):
                raise ValueError(
                    f"The gates of channel {ch} of group {name!r} disagree (one is 0, another "
                    "1). Use set_kept_channels() to switch channels."
                )
            seen[name][ch] = int(v)
            masks[name][ch] = bool(v)
    return masks


def get_kept_channels(model) -> dict[str, list[int]]:
    """{group name: kept channel indices} for every prunable group of a wrapped model."""
    graph = _graph(model)
    masks = gate_masks(graph)
    return {
        g.name: np.flatnonzero(masks.get(g.name, np.ones(g.size, bool))).tolist()
        for g in graph.prunable_groups
    }


def set_kept_channels(model, plan: Mapping[str, Sequence[int]], graph=None) -> None:
    """Switch channels on (kept) and off in a wrapped model.

    Args:
        model: a model returned by ``wrap``.
        plan: {group name: indices of the channels to keep}; groups not named are unchanged.
        graph: the model's ``ChannelGraph``, if already built (saves the analysis).

    Raises:
        ValueError: unwrapped model, unknown group, out-of-range or duplicate indices, or a plan
        that would empty a group. Nothing is changed when it raises.
    """
    graph = graph if graph is not None else _graph(model)
    if not graph.gate_paths:
        raise ValueError(
            f"Model {model.name!r} has no ChannelGate layers; call tfchannelprune.wrap(model) "
            "first and prune the model it returns."
        )
    masks = validate_plan(graph, plan)
    gates = _gate_layers(graph.model)
    updates = []
    for path in graph.gate_paths:
        values = np.array(gates[path].gate.numpy())
        for p, (name, ch) in enumerate(graph.gate_layout(path)):
            if name in masks:
                values[p] = float(masks[name][ch])
        updates.append((gates[path], values))
    for layer, values in updates:
        layer.gate.assign(values)
