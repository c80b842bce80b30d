"""Rebuilding a model: replay its graph on new inputs, clone layers and operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import tree

from tfchannelprune._keras.graph import functional_view, is_model, nodes_in_order

# A layer_fn gets (path, op) and returns the operation to call, or None to drop the call
# (its first argument passes through unchanged). An after_fn gets (path, original output
# tensor id, new output tensor) and returns the tensor that downstream calls should see.
LayerFn = Callable[[str, Any], Any]
AfterFn = Callable[[str, int, Any], Any]
BuiltFn = Callable[[str, Any, Any], None]


def rebuild(
    model,
    layer_fn: LayerFn,
    after_fn: AfterFn | None = None,
    built_fn: BuiltFn | None = None,
    prefix: str = "",
    input_shapes: list | None = None,
) -> keras.Model:
    """Replay ``model``'s graph on new inputs; keeps names and nesting.

    ``built_fn(path, old_op, new_op)`` runs after a replaced layer has been called (so it is
    built) and is where weights get assigned.
    """
    functional = functional_view(model)
    shapes = input_shapes or [None] * len(functional.inputs)
    new_inputs = [_copy_input(t, s) for t, s in zip(functional.inputs, shapes)]
    tensors = {id(t): n for t, n in zip(functional.inputs, new_inputs)}
    for node in nodes_in_order(functional):
        op = node.operation
        path = prefix + op.name
        args, kwargs = node.arguments.fill_in(tensors)
        if is_model(op):
            arg_shapes = [
                tuple(t.shape) for t in tree.flatten((args, kwargs)) if hasattr(t, "shape")
            ]
            new_op = rebuild(op, layer_fn, after_fn, built_fn, path + "/", arg_shapes)
            outputs = new_op(*args, **kwargs)
        else:
            new_op = layer_fn(path, op)
            if new_op is None:
                outputs = args[0]
            else:
                outputs = new_op(*args, **kwargs)
                if built_fn is not None and new_op is not op and isinstance(op, keras.layers.Layer):
                    built_fn(path, op, new_op)
        flat_outputs = tree.flatten(outputs)
        for old, new in zip(node.outputs, flat_outputs):
            if after_fn is not None and not is_model(op):
                new = after_fn(path, id(old), new)
            tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in functional.outputs]
    inputs_struct = getattr(functional, "_inputs_struct", None)
    outputs_struct = getattr(functional, "_outputs_struct", None)
    inputs = (
        tree.pack_sequence_as(inputs_struct, new_inputs)
        if inputs_struct is not None
        else new_inputs
    )
    outputs = (
        tree.pack_sequence_as(outputs_struct, outputs) if outputs_struct is not None else outputs
    )
    return keras.Model(inputs, outputs, name=model.name)


def _copy_input(t, batch_shape=None):
    layer = t._keras_history.operation
    shape = tuple(layer.batch_shape) if batch_shape is None else tuple(batch_shape)
    return keras.Input(batch_shape=shape, dtype=layer.dtype, name=layer.name)


def clone_layer(layer, config: dict | None = None):
    """A fresh layer of the same class from ``config`` (default: the layer's own)."""
    if isinstance(layer, keras.layers.Lambda) and config is None:
        return layer  # stateless; re-creating it from config would need unsafe deserialization
    config = layer.get_config() if config is None else config
    return type(layer).from_config(config)


def clone_operation(op):
    """A fresh ``keras.ops`` operation (a stateless node such as ``a + b``), so the rebuilt
    model does not add call nodes to the original's operations."""
    try:
        return type(op).from_config(op.get_config())
    except Exception:  # an operation without a usable config: reuse it (it is stateless)
        return op
