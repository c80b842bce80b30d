"""Optimizer state carried through ``compact``: slots sliced like the weights they follow.

Keras optimizers keep per-variable slots (Adam's moments, SGD's momentum ...) created by
``add_variable_from_reference`` and named ``<variable path with '/' -> '_'>_<slot>``. A slot
has its variable's shape, so ``compact`` can cut it exactly as it cuts the variable: the slots
are put in place of the weights of the gated model, the model is compacted, and the compact
model's variables are read back. The iteration count (and with it a learning-rate schedule)
goes on where it was. The first step of the compact model then equals the gated model's.
"""

from __future__ import annotations

import keras
import numpy as np

from tfchannelprune.core.surgery import compact, cut_like_weights


def _slot_name(variable) -> str:
    return variable.path.replace("/", "_") + "_"


def slot_pairs(optimizer, model) -> list[tuple[str, object, object]]:
    """(slot suffix, slot variable, model variable) for each of ``optimizer``'s slots that
    follows one of ``model``'s trainable variables (an optimizer not built yet has none)."""
    if optimizer is None or not getattr(optimizer, "built", False):
        return []
    prefixes = sorted(((_slot_name(v), v) for v in model.trainable_variables),
                      key=lambda pv: -len(pv[0]))  # fmt: skip
    out = []
    for slot in optimizer.variables:
        for prefix, var in prefixes:  # the longest matching variable path
            if slot.name.startswith(prefix) and tuple(slot.shape) == tuple(var.shape):
                out.append((slot.name[len(prefix) :], slot, var))
                break
    return out


def optimizer_slots(optimizer, model) -> dict[str, dict[str, np.ndarray]]:
    """{slot name: {variable path: value}} of ``optimizer``'s slots for ``model``'s
    trainable variables (an optimizer not built yet has none)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, slot, var in slot_pairs(optimizer, model):
        out.setdefault(name, {})[var.path] = np.asarray(slot)
    return out


def zero_entries(model, optimizer, where: dict[str, np.ndarray]) -> None:
    """Set to 0 the entries ``where`` ({variable path: boolean array}) of ``model``'s trainable
    variables and of the optimizer slots that follow them.

    With the weight, its gradient (its channel is gated off) and its slots at 0, a step of Adam,
    SGD with momentum, weight decay or an L2 penalty leaves the entry at 0.
    """
    targets = [(v, v) for v in model.trainable_variables]
    targets += [(var, slot) for _, slot, var in slot_pairs(optimizer, model)]
    for var, variable in targets:
        dead = where.get(var.path)
        if dead is not None:
            variable.assign(np.where(dead, 0, np.asarray(variable)).astype(variable.dtype))


def sliced_slots(gated, slots, graph=None, compacted=None) -> dict[str, dict[str, np.ndarray]]:
    """The slots of ``gated``'s variables (by path) cut like ``compact(gated)`` cuts them.

    With ``compacted`` (that compact model) and a ``graph``, the rules' cuts are applied to
    the slot values directly (``core.surgery.cut_like_weights``), checked against the compact
    model's variables; otherwise (or when they do not match) through one ``compact`` per slot.
    """
    if compacted is not None and graph is not None:
        expected = {v.path: tuple(v.shape) for v in compacted.trainable_variables}
        out = {name: cut_like_weights(graph, values) for name, values in slots.items()}
        if all({p: np.shape(a) for p, a in cut.items()} == expected for cut in out.values()):
            return out
    variables = {v.path: v for v in gated.trainable_variables}
    saved = {path: np.asarray(v) for path, v in variables.items()}
    out = {}
    try:
        for name, values in slots.items():
            for path, var in variables.items():
                var.assign(values.get(path, np.zeros(var.shape, var.dtype)))
            small = compact(gated, graph=graph)
            out[name] = {v.path: np.asarray(v) for v in small.trainable_variables}
    finally:
        for path, var in variables.items():
            var.assign(saved[path])
    return out


def restore_optimizer(optimizer, model, slots, iterations: int = 0):
    """A new optimizer like ``optimizer`` (an instance, or a name), built for ``model``'s
    trainable variables, with ``slots`` ({slot: {variable path: value}}) and the iteration
    count put back.

    Raises:
        ValueError: when a slot value does not fit its variable (the plan changed shapes
        without ``sliced_slots``).
    """
    if isinstance(optimizer, keras.optimizers.Optimizer):
        fresh = type(optimizer).from_config(optimizer.get_config())
    else:
        fresh = keras.optimizers.get(optimizer)
    fresh.build(model.trainable_variables)
    by_path = {v.path: v for v in model.trainable_variables}
    for slot in fresh.variables:
        for name, values in slots.items():
            for path, value in values.items():
                if path in by_path and slot.name == _slot_name(by_path[path]) + name:
                    if tuple(np.shape(value)) != tuple(slot.shape):
                        raise ValueError(
                            f"Optimizer slot {slot.name!r} has shape {tuple(slot.shape)}; the "
                            f"carried value has {np.shape(value)}. Slice slots with "
                            "sliced_slots(). Received: shape mismatch"
                        )
                    slot.assign(value)
    fresh.iterations.assign(int(iterations))
    return fresh
