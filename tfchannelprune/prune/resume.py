"""What ``ChannelPruning`` checks about the ``fit`` it runs in: its place among checkpointing
callbacks, and whether the target was reached when ``fit`` ended.

Order. Keras calls callbacks in list order. A ``ModelCheckpoint`` or ``BackupAndRestore``
listed before ``ChannelPruning`` saves the model at an epoch end *before* that epoch's event,
so a run resumed from it has lost the event (and the sums accumulated for it): it keeps other
channels than an uninterrupted run. ``run_before_checkpoints`` moves the callback ahead of the
first checkpointing callback in ``fit``'s ``CallbackList`` at ``on_train_begin``, so every
checkpoint holds the model as pruned at that epoch end, whatever order the user wrote.

End. ``report_target_not_reached`` warns (``TargetNotReachedWarning``) when ``fit`` ends
before the target, naming the target, where pruning stopped and what to change, and records
the same text in the last history record (``"warning"``).
"""

from __future__ import annotations

import warnings

import keras

from tfchannelprune import _keras
from tfchannelprune.errors import TargetNotReachedWarning
from tfchannelprune.prune import reporting

CHECKPOINTS = (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore)


def run_before_checkpoints(callback) -> bool:
    """Move ``callback`` just before the first checkpointing callback of its ``fit``.

    Called from ``callback.on_train_begin``: ``CallbackList`` iterates its list by index,
    and moving an item from position i to a position before it leaves item i + 1 next, so
    no callback is skipped or called twice. Returns whether it moved.
    """
    owner = _keras.fit_callback_list(callback)
    if owner is None:
        return False
    items = owner.callbacks
    mine = next(i for i, c in enumerate(items) if c is callback)
    first = next((i for i, c in enumerate(items[:mine]) if isinstance(c, CHECKPOINTS)), None)
    if first is None:
        return False
    items.insert(first, items.pop(mine))
    return True


def report_target_not_reached(callback) -> str | None:
    """Warn when ``fit`` ended before ``callback``'s target; returns the text (or None)."""
    if callback.done or not hasattr(callback, "graph"):
        return None
    text = _shortfall_text(callback)
    if callback.history:
        callback.history[-1]["warning"] = text
        if callback.history_path:
            reporting.write_history(callback.history_path, callback.history)
    warnings.warn(text, TargetNotReachedWarning, stacklevel=3)
    return text


def _shortfall_text(callback) -> str:
    from tfchannelprune.core.plans import gate_masks

    masks = gate_masks(callback.graph)  # read once: both targets below use it
    cost = callback._cost(masks)
    targets = {
        "target_macs": (callback.target_macs, f"MACs {cost['macs_fraction']:.3f}"),
        "target_params": (callback.target_params, f"params {cost['params_fraction']:.3f}"),
        "target_channels": (callback.target_channels,
                            f"{callback._channels_kept(masks)} channels"),
        "target_latency": (callback.target_latency,
                           f"{getattr(callback._latency, 'predicted_ms', None)} ms predicted"),
    }  # fmt: skip
    named = [(k, v, now) for k, (v, now) in targets.items() if v is not None]
    wanted = ", ".join(f"{k}={v}" for k, v, _ in named)
    where = ", ".join(now for *_, now in named)
    events = len(callback.history)
    cap = "no cap per event" if callback._cap is None else f"at most {callback._cap} channels each"
    return (
        f"ChannelPruning: fit ended before the target was reached ({wanted}): pruning stopped "
        f"at {where} of the original after {events} event(s) ({cap}). Train for more epochs "
        "(or prune more often: prune_every, frequency='step'), raise channels_per_step "
        "(None: no cap), or continue with another fit call. Received: "
        f"channels_per_step={callback.channels_per_step!r}, prune_every={callback.prune_every}"
    )
