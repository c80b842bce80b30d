"""One data contract for every entry point that reads data.

``as_dataset(data, ...)`` accepts, everywhere (``collect_saliency``, ``ChannelPruning``,
``prune()``, ``find_dead_channels``, ``gate_input_means`` ...):

* a pair ``(x, y)`` of arrays (a tuple or a list), or ``(x, y, sample_weight)``;
* ``x`` alone (an array, a tensor or a dict of them) where no labels are needed;
* a ``tf.data.Dataset`` of batches: ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``;
* a ``keras.utils.PyDataset`` whose items are such batches.

It returns a batched ``tf.data.Dataset`` of ``(x, y)`` (``labels=True``) or of ``x``
(``labels=False``); sample weights are dropped. A tuple is always read as ``(x, y, ...)``: give
the inputs of a multi-input model as a dict, or as a dataset.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import tree

_KINDS = (
    "a pair (x, y) of arrays, x alone (where no labels are needed), a tf.data.Dataset of "
    "batches or a keras.utils.PyDataset"
)


def as_dataset(
    data, batch_size: int = 32, *, labels: bool = True, steps: int | None = None, model=None
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of ``(x, y)`` (``labels``) or of ``x`` from ``data``.

    Args:
        data: see the module docstring.
        batch_size: batch size for array data.
        labels: whether the caller needs labels; without them ``y`` is dropped.
        steps: at most this many batches.
        model: when given, a dataset of single examples (inputs one rank short of the
            model's) is refused with a hint to batch it.

    Raises:
        ValueError: labels needed and missing, empty arrays, x and y of different lengths,
            an unbatched dataset.
        TypeError: data of another kind.
    """
    if isinstance(data, keras.utils.PyDataset):
        dataset = _from_py_dataset(data)
    elif isinstance(data, tf.data.Dataset):
        dataset = data
    elif isinstance(data, (tuple, list)):
        dataset = _from_arrays(tuple(data), batch_size)
    elif isinstance(data, (np.ndarray, tf.Tensor, dict)):
        dataset = _from_arrays((data,), batch_size)
    else:
        raise TypeError(f"data must be {_KINDS}. Received: data of type {type(data).__name__}")
    spec = dataset.element_spec
    has_labels = isinstance(spec, tuple) and len(spec) >= 2
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    _check_batched(x_spec, spec, model)
    if labels and not has_labels:
        raise ValueError(
            "This needs labels: give data as (x, y) arrays or a dataset of (x, y) batches. "
            f"Received: data without labels (element_spec={spec})"
        )
    if isinstance(spec, tuple) and (len(spec) != 2 or not labels):
        if labels:
            dataset = dataset.map(lambda *e: (e[0], e[1]))
        else:
            dataset = dataset.map(lambda *e: e[0])
    if steps is not None:
        dataset = dataset.take(int(steps))
    return dataset


def is_batched_source(data) -> bool:
    """Whether ``data`` is a ``tf.data.Dataset`` or a ``keras.utils.PyDataset``."""
    return isinstance(data, (tf.data.Dataset, keras.utils.PyDataset))


def first_inputs(data, limit: int) -> list[np.ndarray]:
    """The first ``limit`` model inputs of ``data`` (labels dropped), one array per input."""
    parts, count = [], 0
    for batch in as_dataset(data, labels=False):
        leaves = [np.asarray(t) for t in tree.flatten(batch)]
        parts.append(leaves)
        count += len(leaves[0])
        if count >= limit:
            break
    if not parts:
        raise ValueError("The data holds no batches. Received: an empty dataset")
    return [np.concatenate(column)[:limit] for column in zip(*parts, strict=True)]


def num_examples(x) -> int:
    """The leading dimension of ``x`` (its first array when it is a structure)."""
    leaves = tree.flatten(x)
    return int(np.shape(leaves[0])[0]) if leaves else 0


def check_arrays(parts: tuple, what: str = "data") -> int:
    """Raise for array data that is not x, (x, y) or (x, y, sample_weight) with the same,
    non-zero number of examples in each; return that number."""
    if not 1 <= len(parts) <= 3:
        raise ValueError(
            f"Array data is x, (x, y) or (x, y, sample_weight). Received: a {len(parts)}-tuple"
        )
    n = num_examples(parts[0])
    if n == 0:
        raise ValueError(f"The {what} is empty: it holds no examples. Received: len(x)=0")
    for name, part in zip(("y", "sample_weight"), parts[1:], strict=False):
        if num_examples(part) != n:
            raise ValueError(
                f"x and {name} must hold the same number of examples. "
                f"Received: len(x)={n}, len({name})={num_examples(part)}"
            )
    return n


def check_fits_model(model, x, what: str = "data") -> None:
    """Raise when the array ``x`` does not have the per-example shape of ``model``'s one
    input (an axis the model leaves as None matches any length); several inputs or a
    structure of arrays are left to Keras (their order is the model's to match)."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or isinstance(x, (dict, list, tuple)):
        return
    got, want = tuple(np.shape(x)[1:]), tuple(inputs[0].shape[1:])
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        raise ValueError(
            f"{what} does not fit the model: its examples have shape {got}, the model takes "
            f"{want}. Received: x.shape={np.shape(x)}"
        )


def _from_arrays(parts: tuple, batch_size: int) -> tf.data.Dataset:
    check_arrays(parts)
    element = parts[0] if len(parts) == 1 else parts
    return tf.data.Dataset.from_tensor_slices(element).batch(int(batch_size))


def _from_py_dataset(data) -> tf.data.Dataset:
    count = data.num_batches
    if count is None:
        raise ValueError(
            "An infinite PyDataset cannot be read to its end; give steps or a finite one. "
            "Received: num_batches=None"
        )
    if count == 0:
        raise ValueError("The PyDataset holds no batches. Received: num_batches=0")

    def item(i):
        value = data[i]
        return tuple(value) if isinstance(value, (tuple, list)) else value

    first = item(0)
    signature = tree.map_structure(
        lambda a: tf.TensorSpec((None, *np.shape(a)[1:]), tf.as_dtype(np.asarray(a).dtype)),
        first,
    )

    def generate():
        for i in range(count):
            yield item(i)

    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def _check_batched(x_spec, spec, model) -> None:
    if model is None or not getattr(model, "inputs", None):
        return
    rank = tree.flatten(x_spec)[0].shape.rank
    if rank is not None and rank == len(model.inputs[0].shape) - 1:
        raise ValueError(
            "The dataset yields single examples; batch it, e.g. dataset.batch(32). "
            f"Received: element_spec={spec}"
        )
