"""Reading a model's graph: the Functional view of a model and its flat list of leaf calls."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

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


def check_backend() -> None:
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "tfchannelprune needs the TensorFlow backend of Keras 3 (GradientTape, LiteRT "
            "export). Set KERAS_BACKEND=tensorflow before importing keras. "
            f"Received: backend={backend!r}"
        )


def functional_view(model) -> keras.Model:
    """The Functional graph of a Functional or Sequential Keras 3 model, or a clear error."""
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
        raise TypeError(
            f"Expected a keras.Model. Received: model of type {module}.{type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(
                "This Sequential model is not built, so it has no graph yet. Give it an "
                "input shape (keras.Input as first layer) or call it on data first. "
                f"Received: model={model.name!r}"
            )
        return functional
    if not _is_functional(model):
        raise UnsupportedModelError(
            "Channel pruning needs the model's layer graph, and a subclassed model (custom "
            "call()) has none that can be read or rebuilt. Express the model with the "
            "functional API or Sequential. "
            f"Received: model of class {type(model).__name__}"
        )
    return model


def _is_functional(model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional) and hasattr(model, "_nodes_by_depth")


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


def flatten_graph(model) -> FlatGraph:
    """Inline nested models and list every leaf call in topological order."""
    functional = functional_view(model)
    alias: dict[int, int] = {}
    shapes: dict[int, tuple] = {}
    nodes: list[FlatNode] = []

    def canon(t) -> int:
        i = id(t)
        while i in alias:
            i = alias[i]
        return i

    def walk(fm, prefix: str) -> None:
        counts: dict[int, int] = {}
        for node in nodes_in_order(fm):
            counts[id(node.operation)] = counts.get(id(node.operation), 0) + 1
        for node in nodes_in_order(fm):
            op = node.operation
            ins = list(node.input_tensors)
            outs = list(node.outputs)
            for t in outs:
                shapes[id(t)] = _shape(t)
            if is_model(op) and counts[id(op)] == 1:
                inner = functional_view(op)
                if len(inner.inputs) == len(ins):
                    for inner_in, outer_in in zip(inner.inputs, ins):
                        alias[id(inner_in)] = canon(outer_in)
                    walk(inner, prefix + op.name + "/")
                    for inner_out, outer_out in zip(inner.outputs, outs):
                        alias[id(outer_out)] = canon(inner_out)
                    continue
            nodes.append(
                FlatNode(
                    op=op,
                    path=prefix + op.name,
                    node=node,
                    inputs=[canon(t) for t in ins],
                    outputs=[id(t) for t in outs],
                    input_shapes=[_shape(t) for t in ins],
                    output_shapes=[_shape(t) for t in outs],
                    shared=counts[id(op)] > 1,
                )
            )

    for t in functional.inputs:
        shapes[id(t)] = _shape(t)
    walk(functional, "")
    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.inputs:
            consumers.setdefault(t, []).append(i)
    return FlatGraph(
        nodes=nodes,
        inputs=[id(t) for t in functional.inputs],
        outputs=[canon(t) for t in functional.outputs],
        input_names=[t._keras_history.operation.name for t in functional.inputs],
        shapes=shapes,
        consumers=consumers,
    )
