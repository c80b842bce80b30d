"""A call's arguments and weights: node arguments, replaying one call, weights by name."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import keras
import numpy as np
from keras import tree

_SHAPES_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tfchannelprune_shapes_only", default=False
)


def weights_by_name(layer) -> dict[str, Any]:
    """{weight name: value as a NumPy array} (inside ``weight_shapes_only``: read-only zero
    stand-ins of the same shape and dtype, nothing read from the variables)."""
    if _SHAPES_ONLY.get():
        return {v.name: np.broadcast_to(np.zeros((), v.dtype), v.shape) for v in layer.weights}
    return {v.name: v.numpy() for v in layer.weights}


@contextlib.contextmanager
def weight_shapes_only():
    """Within the context ``weights_by_name`` does not read the variables, so a rule's ``cut``
    gives the cut shapes (what counting parameters needs) without copying the weights."""
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def set_weights_by_name(layer, values: dict[str, Any]) -> None:
    for v in layer.weights:
        if v.name not in values:
            raise ValueError(
                f"No value for weight {v.name!r} of layer {layer.name!r}. "
                f"Received: names={sorted(values)}"
            )
        v.assign(values[v.name])


def node_kwargs(node) -> dict:
    return dict(node.arguments.kwargs)


def node_constant_args(node) -> list:
    """Non-tensor positional arguments of a call (e.g. the 2.0 of ``x * 2.0``)."""
    from keras.src.backend import KerasTensor

    return [a for a in tree.flatten(node.arguments.args) if not isinstance(a, KerasTensor)]


def call_node(fn, values, training: bool | None = None):
    """Call ``fn.op`` again with its recorded arguments, the tensors replaced.

    Args:
        fn: the leaf call (a ``FlatNode``).
        values: {id of the call's original input tensor: new value}, as built by
            ``input_values``.
        training: passed as ``training=`` when the operation's call accepts it (None: not
            passed).

    Returns:
        The flat list of outputs.
    """
    args, kwargs = fn.node.arguments.fill_in(values)
    if training is not None and "training" in getattr(fn.op, "call_signature_parameters", ()):
        kwargs.setdefault("training", training)
    return tree.flatten(fn.op(*args, **kwargs))


def input_values(fn, value_of) -> dict:
    """{id of each original input tensor: ``value_of(canonical id)``} for ``call_node``."""
    return {id(k): value_of(t) for k, t in zip(fn.node.input_tensors, fn.inputs, strict=True)}


def operation_class(module: str, name: str):
    """The class of a ``keras.ops`` operation as it appears in functional graphs
    (``operation_class("numpy", "Add")``), or None when this Keras has none."""
    return getattr(getattr(keras.src.ops, module), name, None)


def node_args(node) -> tuple:
    """The positional arguments of a call as recorded (tensors and constants)."""
    return tuple(node.arguments.args)
