"""Hooks into ``model.fit``: one stack of training-step hooks per model, and Keras's loss
tracker.

Every feature that changes what ``fit`` does in a step (in-step saliency, the dead-channel
monitor, dynamic channel execution) goes through ``add_train_step_hook``: a hook is a function
``hook(step) -> step`` that wraps the step below it (the model's own ``train_step`` at the
bottom). Hooks stack in the order they are added, each removes exactly its own
(``remove_train_step_hook``, in any order), and removing the last one gives the model back its
own train step. Nothing else in the library touches ``train_step`` or ``make_train_function``.
``fit_callback_list`` finds the ``CallbackList`` a callback is running in (to reorder it).

Example:
    >>> def timed(step):
    ...     def hooked(data):
    ...         return step(data)
    ...     return hooked
    >>> handle = add_train_step_hook(model, timed)
    >>> model.fit(x, y)
    >>> remove_train_step_hook(model, handle)
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable

import keras

StepHook = Callable[[Callable], Callable]

# model -> its stack: {"own": the instance train_step found at the first add (None: the
# class's), "hooks": [handles, bottom first], "composed": the step installed}
_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class HookHandle:
    """What ``add_train_step_hook`` returns; give it back to ``remove_train_step_hook``."""

    def __init__(self, hook: StepHook):
        self.hook = hook


def fit_callback_list(callback):
    """``fit``'s ``CallbackList`` holding ``callback``, or None when the callback is driven
    some other way. Keras hands a callback no reference to its list, so it is read from the
    calling frames: the ``self`` of the ``CallbackList`` method that is calling it."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, keras.callbacks.CallbackList) and any(
                c is callback for c in owner.callbacks
            ):
                return owner
            frame = frame.f_back
    finally:
        del frame
    return None


def loss_tracker(model):
    """The Mean metric through which Keras's own train_step reports the "loss" log."""
    return getattr(model, "_loss_tracker", None)


def _stack(model) -> dict | None:
    stack = _STACKS.get(model)
    if stack is not None and vars(model).get("train_step") is not stack["composed"]:
        _STACKS.pop(model, None)  # someone replaced or deleted our step: start afresh
        return None
    return stack


def add_train_step_hook(model, hook: StepHook) -> HookHandle:
    """Wrap ``model``'s training step in ``hook`` (above the hooks already there) and make
    ``fit`` trace a new train function (also when called from ``on_train_begin``).

    Args:
        model: a compiled Keras model.
        hook: ``hook(step) -> step``, called when the stack is composed; the returned
            function is traced by ``fit`` (a hook that ignores ``step`` replaces the steps
            below it).

    Returns:
        The handle to remove this hook with.
    """
    stack = _stack(model)
    if stack is None:
        stack = {"own": vars(model).get("train_step"), "hooks": [], "composed": None}
        _STACKS[model] = stack
    handle = HookHandle(hook)
    stack["hooks"].append(handle)
    _compose(model, stack)
    return handle


def has_train_step_hook(model, handle: HookHandle) -> bool:
    """Whether ``handle``'s hook is in ``model``'s training step now."""
    stack = _stack(model)
    return stack is not None and handle in stack["hooks"]


def remove_train_step_hook(model, handle: HookHandle) -> None:
    """Take ``handle``'s hook out of ``model``'s training step, leaving the others; with the
    last one gone the model's own train step is back and the next ``fit`` traces afresh.
    Removing a hook that is not installed does nothing."""
    stack = _stack(model)
    if stack is None or handle not in stack["hooks"]:
        return
    stack["hooks"].remove(handle)
    if stack["hooks"]:
        _compose(model, stack)
        return
    _STACKS.pop(model, None)
    if stack["own"] is None:
        del model.train_step  # the class's method again
    else:
        model.train_step = stack["own"]
    model.train_function = None


def _compose(model, stack) -> None:
    step = stack["own"] or types.MethodType(type(model).train_step, model)
    for handle in stack["hooks"]:
        step = handle.hook(step)
    stack["composed"] = step
    model.train_step = step  # an instance attribute, which Keras traces
    model.make_train_function(force=True)
