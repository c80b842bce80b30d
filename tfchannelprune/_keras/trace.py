"""Tracing: expose the inner graph of a custom layer or a subclassed model.

``trace_layer(layer, args, kwargs)`` calls ``layer.call`` (inference mode) on symbolic copies of
the arguments of one of its calls, so that the Keras layers and ``keras.ops`` operations inside
become nodes of a Functional model (the same layer objects, so the same weights). Raw
TensorFlow ops, Python control flow on tensor values and the like cannot be traced: then
``TraceError`` names the first source line that failed.

Traces are cached per layer object, so the channel graph and the rebuild that follows it see
the same nodes and tensors.
"""

from __future__ import annotations

import inspect
import os
import traceback
import weakref

import keras
from keras import tree

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.dirname(m.__file__)) + os.sep
    for m in (keras, __import__("tensorflow"))
)


class TraceError(Exception):
    """A layer's ``call`` could not be expressed as Keras layers and ``keras.ops``."""


class InputShapeError(TraceError):
    """A subclassed model's input shape is not known, so its ``call`` cannot be traced."""


def _is_symbolic(x) -> bool:
    return isinstance(x, keras.KerasTensor)


def _placeholder(t, shape=None):
    shape = tuple(t.shape) if shape is None else tuple(shape)
    return keras.Input(batch_shape=shape, dtype=t.dtype)


def own_weights(layer) -> list:
    """Variables of ``layer`` that belong to none of its sub-layers."""
    inner = {id(v) for sub in layer._flatten_layers(include_self=False) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in inner]


def sublayers(layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _first_failure(exc: BaseException) -> str:
    """``file:line: source`` of the innermost frame outside Keras/TensorFlow."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if not frame.filename.startswith(_LIBRARY_DIRS) and __file__ != frame.filename:
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}: `{frame.line}`"
    message = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return f"{where} ({type(exc).__name__}: {message})" if where else (
        f"{type(exc).__name__}: {message}"
    )


def _call_kwargs(layer, kwargs: dict) -> dict:
    """Inference mode (``training=False``) for the Python code of ``call``. The Keras layers
    inside still follow the flag the model is run with: a Functional model passes its own
    ``training`` to every layer call, so a BatchNormalization inside trains when the pruned
    model is fine-tuned."""
    kwargs = dict(kwargs)
    params = inspect.signature(layer.call).parameters
    if "training" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs["training"] = False
    return kwargs


def trace_layer(layer, args, kwargs, shapes=None) -> keras.Model:
    """A Functional model equal to ``layer.call(*args, **kwargs)`` in inference mode.

    Args:
        layer: the layer (or subclassed model) to trace.
        args, kwargs: the arguments of one call, with KerasTensors where tensors go.
        shapes: optional shapes for the flattened KerasTensor arguments (more precise ones
            than the tensors carry, e.g. a nested model's inputs seen from the outer model).

    Returns:
        A Functional model whose inputs are the flattened KerasTensor arguments, in
        ``tree.flatten((args, kwargs))`` order, and whose outputs keep the call's structure.

    Raises:
        TraceError: naming the first line of ``call`` that could not be traced.
    """
    key = tuple(tuple(s) for s in shapes) if shapes is not None else None
    cached = _CACHE.get(layer)
    if cached is not None and cached[0] == key:
        if isinstance(cached[1], TraceError):
            raise cached[1]
        return cached[1]
    try:
        traced = _trace(layer, args, kwargs, shapes)
    except TraceError as e:
        _CACHE[layer] = (key, e)
        raise
    _CACHE[layer] = (key, traced)
    return traced


def _trace(layer, args, kwargs, shapes):
    flat = [x for x in tree.flatten((args, kwargs)) if _is_symbolic(x)]
    shapes = shapes or [None] * len(flat)
    inputs = [_placeholder(t, s) for t, s in zip(flat, shapes)]
    by_id = {id(t): p for t, p in zip(flat, inputs)}
    args, kwargs = tree.map_structure(lambda x: by_id.get(id(x), x), (tuple(args), kwargs))
    model_inputs = call_inputs(args, kwargs)
    try:
        outputs = layer.call(*args, **_call_kwargs(layer, kwargs))
    except Exception as e:  # raw tf ops, bool() of a tensor, ...: the layer stays whole
        raise TraceError(f"its call() could not be traced at {_first_failure(e)}") from None
    if not all(_is_symbolic(t) for t in tree.flatten(outputs)) or not tree.flatten(outputs):
        raise TraceError("its call() returned something other than symbolic tensors")
    try:
        return keras.Model(model_inputs, outputs, name=layer.name)
    except Exception as e:
        raise TraceError(f"its traced graph is not a valid model ({_first_failure(e)})") from None


def call_inputs(args, kwargs):
    """What a traced model is called with: the one positional argument as it is (a tensor,
    list or dict), or the flat list of every tensor argument."""
    tensors = [x for x in tree.flatten((args, kwargs)) if _is_symbolic(x)]
    kwarg_tensors = [x for x in tree.flatten(kwargs) if _is_symbolic(x)]
    return args[0] if len(args) == 1 and not kwarg_tensors else tensors


def trace_model(model, input_shape=None) -> keras.Model:
    """The Functional graph of a subclassed model, traced from its build shapes.

    Args:
        model: a subclassed ``keras.Model``.
        input_shape: the shape of one input example (no batch axis), e.g. ``(None, None, 3)``;
            when given, the model is traced on it. Otherwise the shapes the model was built
            with are used, and when it was built without any (``model.build()`` with no shape,
            or sub-layers built one by one), the input is ``(None, ..., None, C)`` with the
            rank and channel count ``C`` read from its first layer's weights.

    Raises:
        TraceError: when no input shape is known and none can be read, or the trace fails.
    """
    if input_shape is not None:
        dtype = getattr(model, "input_dtype", None) or "float32"
        spec = keras.KerasTensor((None, *tuple(input_shape)), dtype)
        return trace_layer(model, [spec], {}, shapes=[spec.shape])
    cached = _CACHE.get(model)
    if cached is not None and not isinstance(cached[1], TraceError):
        return cached[1]
    shapes = getattr(model, "_build_shapes_dict", None)
    dtype = getattr(model, "input_dtype", None) or "float32"
    if shapes and all(_known_shape(s) for s in shapes.values()):
        specs = [
            tree.map_shape_structure(
                lambda s: keras.KerasTensor((None, *tuple(s)[1:]), dtype), shape
            )
            for shape in shapes.values()
        ]
        return trace_layer(model, specs, {})
    shape, source = first_layer_input(model)
    if shape is None:
        state = "it is built but recorded no input shape" if model.built else "it is not built"
        raise InputShapeError(
            f"{state} and the channel count of its input could not be read from its first "
            "layer's weights; call it on a batch of data, build it with "
            "model.build((None, ..., channels)), or pass input_shape= (one example's shape, "
            "e.g. (None, None, 3)) to wrap / ChannelGraph"
        )
    try:
        return trace_layer(model, [keras.KerasTensor(shape, dtype)], {})
    except TraceError as e:
        raise InputShapeError(
            f"it was built without an input shape, so it was traced on {shape} (the channel "
            f"count of layer {source!r}), and {e}; pass input_shape= to wrap / ChannelGraph"
        ) from None


def _known_shape(shape) -> bool:
    """Whether a recorded build shape is a shape (or a structure of shapes)."""
    try:
        return bool(tree.flatten(tree.map_shape_structure(lambda s: True, shape)))
    except Exception:  # noqa: BLE001 - None or something that is not a shape
        return False


def first_layer_input(model) -> tuple[tuple | None, str | None]:
    """``((None, ..., None, C), layer name)`` for a model built without an input shape: the
    rank and input channels of its first sub-layer with a kernel (in attribute order; a wrong
    guess fails the trace, as built layers check their input), or ``(None, None)``."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if sublayers(layer) or not layer.built:
            continue
        recorded = getattr(layer, "_build_shapes_dict", None) or {}
        shape = next(iter(recorded.values()), None)
        if isinstance(shape, (tuple, list)) and shape and isinstance(shape[-1], int):
            return (None, *tuple(shape)[1:]), layer.name
        kernel = getattr(layer, "kernel", None) or getattr(layer, "depthwise_kernel", None)
        if kernel is None:
            continue
        rank = len(kernel.shape)
        channels = int(kernel.shape[-2]) * int(getattr(layer, "groups", 1) or 1)
        if isinstance(layer, keras.layers.Dense):
            return (None, int(kernel.shape[0])), layer.name
        if "Transpose" in type(layer).__name__:
            channels = int(kernel.shape[-1])
        return (None,) * (rank - 1) + (channels,), layer.name
    return None, None


_ELEMENTWISE_TF_OPS = {
    "Placeholder", "Const", "Identity", "ReadVariableOp", "NoOp", "Cast", "Mul", "AddV2", "Add",
    "Sub", "RealDiv", "Div", "Maximum", "Minimum", "Relu", "Relu6", "Elu", "Selu", "LeakyRelu",
    "Sigmoid", "Tanh", "Softplus", "Neg", "Abs", "Square", "Sqrt", "Rsqrt", "Exp", "Log", "Erf",
    "Pow", "Sign", "Floor", "Ceil",
}  # fmt: skip


def tf_elementwise(layer, shape, dtype="float32") -> str | None:
    """Why ``layer.call`` on one tensor of ``shape`` is not element-wise, or None.

    Read from the TensorFlow graph of the call: every op must be element-wise, and every
    operand that does not come from the input must be a scalar (a weight of shape () or (1,)).
    For layers that ``trace_layer`` cannot express in keras.ops (a weight times a tensor).
    """
    import tensorflow as tf

    fn = tf.function(lambda x: layer.call(x))
    try:
        graph = fn.get_concrete_function(tf.TensorSpec((1, *shape[1:]), dtype)).graph
    except Exception as e:  # noqa: BLE001
        return f"its call() could not be traced by TensorFlow ({_first_failure(e)})"
    from_input: set[str] = set()
    for op in graph.get_operations():
        if op.type not in _ELEMENTWISE_TF_OPS:
            return f"its call() uses the TensorFlow op {op.type}, which is not element-wise"
        if op.type == "Placeholder" and op.outputs[0].dtype != tf.resource and not from_input:
            from_input.add(op.outputs[0].name)
            continue
        if any(t.name in from_input for t in op.inputs):
            for t in op.inputs:
                if t.name not in from_input and t.shape.num_elements() not in (0, 1):
                    return f"its call() combines the input with a non-scalar in {op.type}"
            from_input.update(t.name for t in op.outputs)
    return None
