"""Per-batch tensor math of saliency collection: per-example losses, the gate tensors a
reduction plan turns into per-example statistics, and the float64 state they stream into.

A data signal's plan is split at its example stage: everything before it runs on each batch in
TensorFlow (``prefix_tensor``); the example stage keeps running sums / maxima (``batch_stat``);
what comes after runs once in NumPy on the accumulated statistics (``taxonomy.from_stats``).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from tfchannelprune.saliency.taxonomy import Plan


def state_variable(shape, kind: str) -> tf.Variable:
    init = -np.inf if kind == "max" else 0.0
    return tf.Variable(tf.fill(shape, tf.constant(init, tf.float64)), trainable=False)


def split_plan(plan: Plan) -> tuple[str, tuple]:
    """("n", tokens before the example stage) | ("nhw", elementwise op) | ("n_hw", ...)."""
    first = plan.stages[0].axes
    if first == "hw":
        return "n", plan.tokens_before(1)
    return ("nhw" if first == "nhw" else "n_hw"), plan.tokens_before(0)


def flat_gate_tensor(t, info) -> tf.Tensor:
    """(N, positions in space, channels) float32."""
    hw = info["hw"] if info["hw"] is not None else -1
    return tf.reshape(tf.cast(t, tf.float32), (tf.shape(t)[0], hw, info["width"]))


def prefix_tensor(base: str, prefix: tuple, a, g, reference_mean, cache: dict):
    """The per-example tensor of ``base`` after the plan's tokens ``prefix`` (pointwise ops
    and spatial reductions), from the gate input ``a`` and its gradient ``g``, both
    (N, space, channels); ``reference_mean(a)`` gives the mean of mean replacement. Shared
    prefixes are computed once per batch through ``cache``."""
    key = (base, prefix)
    if key in cache:
        return cache[key]
    if not prefix:
        if base == "activation":
            t = a
        elif base == "gradient":
            t = g
        elif base == "zero_delta":
            t = -a * g
        else:
            t = (reference_mean(a) - a) * g
    else:
        t = prefix_tensor(base, prefix[:-1], a, g, reference_mean, cache)
        token = prefix[-1]
        if token == "abs":
            t = tf.abs(t)
        elif token == "square":
            t = tf.square(t)
        elif token == "nonzero":
            t = tf.cast(tf.not_equal(t, 0.0), t.dtype)
        else:
            t = _reduce_hw(t, token.rpartition("_")[0])
    cache[key] = t
    return t


def _reduce_hw(t, op: str):
    if op == "sum":
        return tf.reduce_sum(t, axis=1)
    if op == "mean":
        return tf.reduce_mean(t, axis=1)
    if op == "l1":
        return tf.reduce_sum(tf.abs(t), axis=1)
    if op == "l2":
        return tf.sqrt(tf.reduce_sum(tf.square(t), axis=1))
    if op == "max":
        return tf.reduce_max(t, axis=1)
    if op == "var":
        return tf.math.reduce_variance(t, axis=1)
    return tf.math.reduce_std(t, axis=1)


def batch_stat(t, stat: str, axes):
    t = tf.cast(t, tf.float64)
    if stat == "sum":
        return tf.reduce_sum(t, axis=axes)
    if stat == "sqsum":
        return tf.reduce_sum(tf.square(t), axis=axes)
    if stat == "abssum":
        return tf.reduce_sum(tf.abs(t), axis=axes)
    return tf.reduce_max(t, axis=axes)


def per_example_loss(loss):
    """``fn(y_true, y_pred) -> (N,)`` per-example losses from a Loss, a name or a function.

    Raises:
        ValueError: when ``loss`` is missing, or (at the first batch) returns a scalar.
    """
    if loss is None:
        raise ValueError(
            "Data-based signals need a loss, e.g. loss='sparse_categorical_crossentropy' or "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True). Received: loss=None"
        )
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    if isinstance(fn, keras.losses.Loss):
        fn = fn.call  # unreduced
    if not callable(fn):
        raise TypeError(f"A loss must be callable. Received: loss={loss!r}")

    def per_example(y_true, y_pred):
        values = tf.convert_to_tensor(fn(y_true, y_pred))
        if values.shape.rank == 0:
            raise ValueError(
                "The loss returned one value for the whole batch; signals need one value per "
                "example (the sum over examples is differentiated). Pass a keras.losses.Loss "
                f"or a function without reduction. Received: loss={loss!r}"
            )
        values = tf.reshape(values, (tf.shape(values)[0], -1))
        return tf.reduce_mean(values, axis=1)

    return per_example


def num_examples(data, name: str) -> int:
    leaves = tree.flatten(data)
    if not leaves:
        raise ValueError(f"{name} holds no arrays. Received: {name}={data!r}")
    return int(np.shape(leaves[0])[0])


def check_batch(x, y) -> int:
    n = num_examples(x, "x")
    if y is not None and num_examples(y, "y") != n:
        raise ValueError(
            "x and y must hold the same number of examples. "
            f"Received: len(x)={n}, len(y)={num_examples(y, 'y')}"
        )
    if n == 0:
        raise ValueError("The batch is empty. Received: len(x)=0")
    return n
