"""A call's arguments and weights: node arguments, replaying one call, weights by name."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import keras
import numpy as np
from keras import tree

_STAND_INS: contextvars.ContextVar = contextvars.ContextVar(
    "tfchannelprune_weight_stand_ins", default=None
)


def weights_by_name(layer) -> dict[str, Any]:
    """{weight name: value as a NumPy array}; inside ``weights_replaced(fn)``, ``fn(variable)``
    instead (nothing read from the variables)."""
    stand_in = _STAND_INS.get()
    if stand_in is not None:
        return {v.name: stand_in(v) for v in layer.weights}
    return {v.name: v.numpy() for v in layer.weights}


@contextlib.contextmanager
def weights_replaced(fn):
    """Within the context ``weights_by_name`` gives ``fn(variable)`` for each weight, so that a
    rule's ``cut`` slices other arrays shaped like the weights (optimizer slots)."""
    token = _STAND_INS.set(fn)
    try:
        yield
    finally:
        _STAND_INS.reset(token)


def weight_shapes_only():
    """``weights_replaced`` with read-only zero stand-ins: a rule's ``cut`` then gives the cut
    shapes (what counting parameters needs) without copying the weights."""
    return weights_replaced(lambda v: np.broadcast_to(np.zeros((), v.dtype), v.shape))


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
