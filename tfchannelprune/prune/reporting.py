"""What ``ChannelPruning`` records at each event: the history record, its progress line, the
history file and TensorBoard scalars."""

from __future__ import annotations

import csv
import json
import os


def event_record(event, epoch, step, cost: dict, kept: int, before: int, original: int,
                 done: bool) -> dict:  # fmt: skip
    """One history record (the keys every event has)."""
    return {
        "event": int(event),
        "epoch": None if epoch is None else int(epoch),
        "step": int(step),
        "macs": int(cost["macs"]),
        "macs_fraction": cost["macs_fraction"],
        "params": int(cost["params"]),
        "params_fraction": cost["params_fraction"],
        "channels_kept": kept,
        "channels_removed_now": before - kept,
        "channels_removed": original - kept,
        "target_reached": done,
    }


def progress_line(record: dict, original: int, monitor: str | None) -> str:
    epoch = record["epoch"]
    where = f"epoch {epoch + 1}" if epoch is not None else f"step {record['step']}"
    metric = f", {monitor} {record[monitor]:.4f}" if monitor in record else ""
    return (
        f"[ChannelPruning] {where}: removed {record['channels_removed_now']} channels "
        f"({record['channels_removed']}/{original} so far), MACs "
        f"{record['macs_fraction']:.1%} of original, params "
        f"{record['params_fraction']:.1%}{metric}"
        f"{' - target reached' if record['target_reached'] else ''}"
    )


def write_history(path: str, history: list[dict]) -> None:
    """``history`` to ``path`` (.csv or .json), atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        if path.endswith(".csv"):
            keys = sorted({k for r in history for k in r})
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
        else:
            json.dump(history, f, indent=2)
    os.replace(tmp, path)


def write_scalars(writer, record: dict) -> None:
    import tensorflow as tf

    with writer.as_default(step=record["step"]):
        for key in ("macs", "params", "channels_kept", "channels_removed"):
            tf.summary.scalar(f"pruning/{key}", record[key])
    writer.flush()
