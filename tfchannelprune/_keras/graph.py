"""Reading a model's graph: the Functional view of a model and its flat list of leaf calls."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import keras
from keras import tree

from tfchannelprune._keras import trace
from tfchannelprune.errors import UnsupportedModelError


@dataclasses.dataclass
class FlatNode:
    """One call of a leaf operation inside the (flattened) model."""

    op: Any  # keras.layers.Layer or keras.ops.Operation
    path: str  # unique name: "layer" or "nested_model/layer"
    node: Any  # keras Node of this call (for its arguments)
    inputs: list[int]  # canonical ids of the input tensors, in call-argument order
    outputs: list[int]
    input_shapes: list[tuple]
    output_shapes: list[tuple]
    shared: bool = False  # the operation is called more than once in the model


@dataclasses.dataclass
class FlatGraph:
    nodes: list[FlatNode]
    inputs: list[int]
    outputs: list[int]
    input_names: list[str]
    shapes: dict[int, tuple]  # canonical tensor id -> shape
    consumers: dict[int, list[int]]  # canonical tensor id -> indices of consuming nodes
    traced: dict[int, Any] = dataclasses.field(default_factory=dict)  # id(layer) -> traced model
    untraced: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why not
    leaf_traces: dict[str, Any] = dataclasses.field(default_factory=dict)  # path -> trace


def check_backend() -> None:
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "tfchannelprune needs the TensorFlow backend of Keras 3 (GradientTape, LiteRT "
            "export). Set KERAS_BACKEND=tensorflow before importing keras. "
            f"Received: backend={backend!r}"
        )


def functional_view(model, input_shape=None) -> keras.Model:
    """The Functional graph of a Keras 3 model (a subclassed one traced, on ``input_shape``
    when given: one example's shape, no batch axis), or a clear error."""
    check_backend()
    if not isinstance(model, keras.Model):
        module = type(model).__module__
        if module.startswith(("tf_keras", "keras.api._v2", "tensorflow.python.keras")) or (
            module.startswith("keras.") and not module.startswith("keras.src")
        ):
            raise TypeError(
                "This is a Keras 2 (tf_keras / tf.keras legacy) model; tfchannelprune works on "
                "Keras 3 models. Rebuild or reload it with `import keras` (Keras 3). "
                f"Received: model of type {module}.{type(model).__name__}"
            )
        hint = ""
        if isinstance(model, (str, bytes, os.PathLike)):
            hint = " To use a saved file, load it first: keras.saving.load_model(path)."
        raise TypeError(
            "Expected a keras.Model: a built Functional or Sequential Keras 3 model, or a "
            f"subclassed one called on data.{hint} Received: model={model!r:.80} of type "
            f"{module}.{type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(
                "This Sequential model is not built, so it has no graph yet. Give it an "
                "input shape (keras.Input as first layer) or call it on data first. "
                f"Received: model={model.name!r}"
            )
        _check_input_shape(functional, input_shape)
        return functional
    if not _is_functional(model):
        try:
            return trace.trace_model(model, input_shape)
        except trace.InputShapeError as e:
            raise UnsupportedModelError(
                "Channel pruning traces a subclassed model's call() on its input shape, and "
                f"{e}. Received: model of class {type(model).__name__}"
            ) from None
        except trace.TraceError as e:
            raise UnsupportedModelError(
                "Channel pruning needs the model's layer graph; for a subclassed model it is "
                f"traced from call(), and this one could not be: {e}. Express that part with "
                "Keras layers and keras.ops, or use the functional API. "
                f"Received: model of class {type(model).__name__}"
            ) from None
    _check_input_shape(model, input_shape)
    return model


def _check_input_shape(functional, input_shape) -> None:
    """``input_shape`` is for models without a graph of their own; a Functional model has one."""
    if input_shape is None:
        return
    own = [tuple(t.shape)[1:] for t in functional.inputs]
    if own != [tuple(input_shape)]:
        raise ValueError(
            f"input_shape= is used to trace a subclassed model; model {functional.name!r} has "
            f"its own input shape(s) {own}. Leave input_shape out. "
            f"Received: input_shape={tuple(input_shape)}"
        )


def _is_functional(model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional) and hasattr(model, "_nodes_by_depth")


def _is_graph_model(op) -> bool:
    return _is_functional(op) or isinstance(op, keras.Sequential)


def is_model(op) -> bool:
    return isinstance(op, keras.Model)


def nodes_in_order(functional) -> list:
    """The model's non-input nodes in topological order."""
    ordered = []
    for depth in sorted(functional._nodes_by_depth.keys(), reverse=True):
        for node in functional._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                ordered.append(node)
    return ordered


def _shape(t) -> tuple:
    return tuple(t.shape)


def flatten_graph(
    model, expand: Callable[[Any], bool] | None = None, input_shape=None
) -> FlatGraph:
    """Inline nested models and list every leaf call in topological order.

    ``expand(layer)`` says whether a layer without a channel rule should be traced (its
    ``call`` replayed on symbolic inputs) and inlined like a nested model; nested subclassed
    models are always traced. Shapes are those seen from the outermost model (a nested model
    built on ``(None, None, 3)`` gets the outer call's sizes). ``input_shape``: see
    ``functional_view``.
    """
    functional = functional_view(model, input_shape)
    flat = FlatGraph([], [id(t) for t in functional.inputs], [], [], {}, {})
    if functional is not model and not isinstance(model, keras.Sequential):
        flat.traced[id(model)] = functional  # a traced subclassed model: rebuilt from this
    alias: dict[int, int] = {}

    def canon(t) -> int:
        i = id(t)
        while i in alias:
            i = alias[i]
        return i

    def link(src, dst) -> None:
        target = canon(dst)
        if target != id(src):
            alias[id(src)] = target

    def walk(fm, prefix: str) -> None:
        counts: dict[int, int] = {}
        for node in nodes_in_order(fm):
            counts[id(node.operation)] = counts.get(id(node.operation), 0) + 1
        for node in nodes_in_order(fm):
            op, ins, outs = node.operation, list(node.input_tensors), list(node.outputs)
            in_shapes = [flat.shapes.get(canon(t), _shape(t)) for t in ins]
            inner = None
            if counts[id(op)] == 1:
                inner = _inner_graph(flat, op, node, in_shapes, prefix + op.name, expand)
            if inner is not None and len(inner.inputs) == len(ins):
                for inner_in, outer_in in zip(inner.inputs, ins):
                    link(inner_in, outer_in)
                walk(inner, prefix + op.name + "/")
                for inner_out, outer_out in zip(inner.outputs, outs):
                    link(outer_out, inner_out)
                continue
            out_shapes = _output_shapes(node, ins, in_shapes)
            flat.shapes.update((id(t), s) for t, s in zip(outs, out_shapes))
            flat.nodes.append(
                FlatNode(op, prefix + op.name, node, [canon(t) for t in ins],
                         [id(t) for t in outs], in_shapes, out_shapes, counts[id(op)] > 1)
            )  # fmt: skip

    for t in functional.inputs:
        flat.shapes[id(t)] = _shape(t)
    walk(functional, "")
    for i, n in enumerate(flat.nodes):
        for t in n.inputs:
            flat.consumers.setdefault(t, []).append(i)
    flat.outputs = [canon(t) for t in functional.outputs]
    flat.input_names = [t._keras_history.operation.name for t in functional.inputs]
    return flat


def _inner_graph(flat, op, node, in_shapes, path, expand):
    """The graph to inline for a call: a nested Functional model, a traced layer, or None."""
    if _is_graph_model(op):
        return functional_view(op)
    if not (is_model(op) or (expand is not None and expand(op))):
        return None
    try:
        inner = trace.trace_layer(op, node.arguments.args, node.arguments.kwargs, in_shapes)
    except trace.TraceError as e:
        flat.untraced[path] = str(e)
        if trace.own_weights(op) and not trace.sublayers(op) and len(in_shapes) == 1:
            why = trace.tf_elementwise(op, in_shapes[0], node.input_tensors[0].dtype)
            flat.untraced[path] = f"{e}; {why}" if why else ""
            if not why:
                flat.leaf_traces[path] = None  # kept whole: its TF graph is element-wise
        return None
    if trace.own_weights(op):
        if trace.sublayers(op):
            flat.untraced[path] = "it owns weights outside its sub-layers"
        else:
            flat.leaf_traces[path] = inner  # kept whole; the graph reads its element-wise ops
        return None
    flat.traced[id(op)] = inner
    return inner


def _output_shapes(node, ins, in_shapes) -> list[tuple]:
    """Output shapes of a call, recomputed when its inputs are known more precisely."""
    own = [_shape(t) for t in node.outputs]
    if all(s == _shape(t) for s, t in zip(in_shapes, ins)):
        return own
    try:
        specs = {id(t): keras.KerasTensor(s, dtype=t.dtype) for t, s in zip(ins, in_shapes)}
        args, kwargs = node.arguments.fill_in(specs)
        specs = node.operation.compute_output_spec(*args, **kwargs)
        return [_shape(t) for t in tree.flatten(specs)]
    except Exception:  # noqa: BLE001 - keep the nested graph's own (less precise) shapes
        return own
