"""The ``mask_delta`` base: per example, the derivative of the loss with respect to ONE mask per
channel, shared by every gate (and every position of a gate) where the channel appears.

Removing channel ``k`` of a group switches all of its gates off at once, so the first-order
loss change is ``-dl_n/dm_k = sum over gates, sum over space of (0 - a) * g`` (Theis et al.,
"Faster gaze prediction with dense networks and Fisher pruning", arXiv:1801.05787, mask form),
taken per example BEFORE any absolute value or square. Summing absolute values (or squares)
gate by gate instead scores a residual or concatenated channel by a quantity no removal
changes.

Convention: the spatial reduction is a SUM. Between a producer and a gate only positively
homogeneous operations may stand (pooling, padding, dropout, reshapes, adds of the same
group), so the sum at the gate equals the derivative of a mask at the producer's output: the
measurement point does not change the score. Molchanov et al.'s spatial mean
(arXiv:1611.06440) is this divided by the layer's number of positions, a per-layer constant
that their layer-wise L2 normalisation removes.

Per group the state is four running sums over examples (``STATS``): ``d``, ``|d|``, ``d^2``
and ``d^4`` with ``d = -dl_n/dm``, enough for a plan ``[abs|square,]op_n[,abs|square]`` with
``op`` in sum, mean, l1, l2, var, std.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfchannelprune.saliency.taxonomy import from_stats, pointwise_np

STATS = ("d", "abs", "square", "quartic")
# (pointwise op before the example stage, statistic the stage needs) -> row of STATS
_ROW = {
    (None, "sum"): 0, (None, "abssum"): 1, (None, "sqsum"): 2,
    ("abs", "sum"): 1, ("abs", "abssum"): 1, ("abs", "sqsum"): 2,
    ("square", "sum"): 2, ("square", "abssum"): 2, ("square", "sqsum"): 3,
}  # fmt: skip
_NEEDS = {"sum": ("sum",), "mean": ("sum",), "l1": ("abssum",), "l2": ("sqsum",),
          "var": ("sum", "sqsum"), "std": ("sum", "sqsum")}  # fmt: skip


def group_positions(gates: dict[str, dict]) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """{group: [(gate path, positions on the gate, channels of the group)]} from
    ``gate_positions``' per-gate table."""
    out: dict[str, list] = {}
    for path, info in gates.items():
        for group, (index, channels) in info["positions"].items():
            out.setdefault(group, []).append((path, np.asarray(index), np.asarray(channels)))
    return out


def group_deltas(per_gate: dict, positions: dict, sizes: dict[str, int]) -> dict[str, tf.Tensor]:
    """{group: (N, size) float64 ``d = -dl_n/dm``} from {gate path: (N, width) per-example
    ``sum_hw (0 - a) * g``}; a gate missing from ``per_gate`` (no gradient reached it)
    contributes nothing."""
    out = {}
    for group, entries in positions.items():
        total = None
        for path, index, channels in entries:
            if path not in per_gate:
                continue
            s = tf.cast(per_gate[path], tf.float64)
            whole = s.shape[1] == len(index) and np.array_equal(index, np.arange(len(index)))
            part = s if whole else tf.gather(s, index, axis=1)
            if not np.array_equal(channels, np.arange(sizes[group])):
                part = tf.transpose(  # positions -> channels, repeats summed
                    tf.math.unsorted_segment_sum(tf.transpose(part), channels, sizes[group])
                )
            total = part if total is None else total + part
        if total is not None:
            out[group] = total
    return out


def batch_stats(d: tf.Tensor) -> tf.Tensor:
    """(4, size) sums over the batch of d, |d|, d^2, d^4."""
    sq = tf.square(d)
    return tf.stack([tf.reduce_sum(t, axis=0) for t in (d, tf.abs(d), sq, tf.square(sq))])


def check_plan(signal) -> None:
    """Raise for a ``mask_delta`` plan that four running sums cannot evaluate."""
    plan = signal.parsed
    op = plan.stages[0].op
    early = plan.pointwise if plan.position == 0 else None
    if op not in _NEEDS or early == "nonzero" or plan.pointwise == "nonzero":
        raise ValueError(
            "mask_delta signals reduce examples with sum, mean, l1, l2, var or std, with an "
            f"optional abs or square before or after. Received: signal={signal.id!r}"
        )


def scores(signal, stats: np.ndarray, count: float) -> np.ndarray:
    """One signal's per-channel scores from a group's accumulated (4, size) ``stats``."""
    check_plan(signal)
    plan = signal.parsed
    op = plan.stages[0].op
    early = plan.pointwise if plan.position == 0 else None
    values = {stat: stats[_ROW[(early, stat)]] for stat in _NEEDS[op]}
    x = from_stats(op, values, count)
    if plan.pointwise and plan.position == 1:
        x = pointwise_np(x, plan.pointwise)
    return x * plan.factor
