"""Hooks into ``model.fit``: a replacement train step and Keras's loss tracker."""

from __future__ import annotations

from collections.abc import Callable


def loss_tracker(model):
    """The Mean metric through which Keras's own train_step reports the "loss" log."""
    return getattr(model, "_loss_tracker", None)


def install_train_step(model, step: Callable | None = None) -> None:
    """Make ``model.fit`` trace a new train function, with ``step`` as the model's
    ``train_step`` when given (an instance attribute, which Keras traces)."""
    if step is not None:
        model.train_step = step
    model.make_train_function(force=True)


def restore_train_step(model, *, traced: bool = False) -> None:
    """Undo ``install_train_step``: the class's own ``train_step`` again, and the next fit
    traces afresh (with ``traced=True`` evaluate and predict too, for hooks traced in)."""
    if "train_step" in vars(model):
        del model.train_step
    model.train_function = None
    if traced:
        model.test_function = None
        model.predict_function = None
