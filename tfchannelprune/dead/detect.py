"""Dead channels: find them, remove them for free, report what that saves.

A channel is *dead* when its output as fed forward (a ChannelGate's input: after BatchNorm and
the activation) has variance <= ``tol`` over the data (Evci, "Detecting Dead Weights and Units
in Neural Networks", arXiv:1806.06068). A ReLU that never fires is the common case (constant
0), a BatchNorm with ``gamma = 0`` another (constant ``beta``). A channel of a residual or
concatenated group is fed forward at several gates and is dead only if it is constant at every
one of them; its constant at each gate is folded into that gate's consumers
(``mean_replacement.py``), so the compact model computes the same function, exactly for Dense
and unpadded convs and in the interior for zero-padded ones (docs/dead.md).

Example:
    >>> report = find_dead_channels(model, x_train)
    >>> print(report.text())
    >>> small = remove_dead_channels(model, x_train)
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tfchannelprune.core.batches import as_dataset
from tfchannelprune.core.checks import FiniteTally
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.cost import macs_for, params_for
from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import keep_masks
from tfchannelprune.core.surgery import compact
from tfchannelprune.core.wrap import gated_model
from tfchannelprune.dead import non_learning
from tfchannelprune.dead.gate_inputs import GateStatistics
from tfchannelprune.dead.mean_replacement import mean_replacement_shift
from tfchannelprune.errors import NonFiniteInputError


@dataclasses.dataclass(frozen=True)
class DeadChannel:
    """One dead channel: its group, index, kind ("zero" or "constant") and its constant at
    every gate position where it is fed forward: (gate path, position, value)."""

    group: str
    channel: int
    kind: str
    values: tuple[tuple[str, int, float], ...]


@dataclasses.dataclass(frozen=True)
class DeadReport:
    """What ``find_dead_channels`` found.

    Attributes:
        model: the model's name. tol: the variance threshold. num_examples: examples seen.
        dead: the dead channels (of prunable groups, among those switched on).
        plan: {group: kept channel indices} removing them (only groups that lose some); a
            group whose channels are all dead keeps its first one (listed in ``floored``).
        macs, params / macs_after, params_after: cost before and after removing them.
        macs_saved: {group: MACs saved by removing its dead channels alone}.
        means, variances: {gate path: per-position mean / variance of the gate input}.
        non_learning: {group: channels} (see ``non_learning.py``); movement, grad_norm: the
            per-channel values behind it, when a reference / loss was given.
    """

    model: str
    tol: float
    num_examples: int
    group_sizes: dict
    dead: tuple[DeadChannel, ...]
    plan: dict
    floored: tuple[str, ...]
    macs: int
    macs_after: int
    params: int
    params_after: int
    macs_saved: dict
    means: dict
    variances: dict
    non_learning: dict = dataclasses.field(default_factory=dict)
    movement: dict | None = None
    grad_norm: dict | None = None
    output_change: float | None = None  # max |compact - model| / max |model| on the data

    def dead_channels(self) -> dict[str, list[int]]:
        """{group: dead channel indices}."""
        out: dict[str, list[int]] = {}
        for d in self.dead:
            out.setdefault(d.group, []).append(d.channel)
        return out

    def to_dict(self) -> dict:
        """A JSON-ready summary (without the per-gate statistics)."""
        dead = self.dead_channels()
        kinds = {(d.group, d.channel): d.kind for d in self.dead}
        groups = [
            {
                "group": name, "size": size, "dead": dead.get(name, []),
                "zero": [c for c in dead.get(name, []) if kinds[(name, c)] == "zero"],
                "macs_saved": int(self.macs_saved.get(name, 0)),
                "non_learning": list(self.non_learning.get(name, ())),
            }
            for name, size in self.group_sizes.items()
        ]  # fmt: skip
        return {
            "model": self.model, "tol": self.tol, "num_examples": self.num_examples,
            "dead_channels": len(self.dead), "channels": int(sum(self.group_sizes.values())),
            "macs": self.macs, "macs_after": self.macs_after, "params": self.params,
            "params_after": self.params_after, "floored": list(self.floored), "groups": groups,
            "output_change": self.output_change,
            "constants": [
                {"group": d.group, "channel": d.channel, "kind": d.kind,
                 "values": [{"gate": g, "position": p, "value": v} for g, p, v in d.values]}
                for d in self.dead
            ],
        }  # fmt: skip

    def text(self) -> str:
        """A table: dead channels per group and the MACs their removal saves."""
        dead = self.dead_channels()
        kinds = {(d.group, d.channel): d.kind for d in self.dead}
        lines = [
            f"Dead channels of {self.model!r} over {self.num_examples} examples "
            f"(variance <= {self.tol:g} where fed forward):",
            f"{'group':<36} {'size':>5} {'dead':>5} {'zero':>5} {'MACs saved':>12}  channels",
        ]
        for name, size in self.group_sizes.items():
            chans = dead.get(name, [])
            zero = sum(kinds[(name, c)] == "zero" for c in chans)
            shown = ", ".join(map(str, chans[:12])) + (" ..." if len(chans) > 12 else "")
            lines.append(
                f"{name[:36]:<36} {size:>5} {len(chans):>5} {zero:>5} "
                f"{self.macs_saved.get(name, 0):>12,}  {shown}"
            )
        total = int(sum(self.group_sizes.values()))
        lines.append(
            f"total: {len(self.dead)} of {total} prunable channels dead; removing them saves "
            f"{self.macs - self.macs_after:,} MACs ({_share(self.macs - self.macs_after, self.macs)}"
            f") and {self.params - self.params_after:,} params "
            f"({_share(self.params - self.params_after, self.params)}); {self._change_text()}"
        )
        if self.floored:
            lines.append(f"all channels dead (one kept): {', '.join(self.floored)}")
        if self.non_learning:
            flagged = sum(len(c) for c in self.non_learning.values())
            lines.append(f"non-learning channels: {flagged} in {len(self.non_learning)} groups")
        return "\n".join(lines)

    def _change_text(self) -> str:
        if self.output_change is None:
            return "outputs not measured (see measure_output_change)"
        return (
            f"outputs changed by {self.output_change:.2g} of their scale on the "
            f"{self.num_examples} examples given"
        )

    def __str__(self) -> str:
        return self.text()


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


# ---------------------------------------------------------------------- detection
@keyword_only("tol", "reference")
def find_dead_channels(
    model,
    data,
    *,
    loss=None,
    tol: float = 1e-6,
    reference=None,
    move_tol: float = 1e-3,
    grad_tol: float = 1e-6,
    batch_size: int = 32,
    steps: int | None = None,
    training: bool = False,
) -> DeadReport:
    """Channels whose output as fed forward is constant over ``data``, and non-learning ones.

    Args:
        model: a Keras model, wrapped or not (wrapped internally; group names agree).
        data: inputs ``x``, ``(x, y)`` arrays, a ``tf.data.Dataset`` of batches or a
            ``keras.utils.PyDataset`` (see ``tfchannelprune.core.batches``; labels are
            needed only with ``loss``).
        tol: a channel is dead where its population variance is <= ``tol`` at every gate.
        reference: an earlier snapshot (a model, a ``get_weights()`` list or {variable path:
            array}); channels whose parameters moved by <= ``move_tol`` (relative) since then
            are reported as non-learning.
        loss: with labels in ``data``, channels whose RMS gradient norm is <= ``grad_tol``
            times the model's largest are reported as non-learning too.
        batch_size, steps: batching of array data and the most batches read.
        training: run BatchNorm / Dropout in training mode (updates discarded).

    Returns:
        A ``DeadReport``; ``print(report)`` shows the table, ``report.to_dict()`` the data.

    Raises:
        ValueError: empty data, a bad ``tol`` or a reference of another architecture.
        NonFiniteInputError: NaN or inf in ``data`` (every channel would look dead), or
            NaN/inf gate inputs computed from finite data (NaN weights).
    """
    if not tol >= 0:
        raise ValueError(f"tol is a variance threshold >= 0. Received: tol={tol!r}")
    gated = gated_model(model, "find_dead_channels")
    graph = ChannelGraph(gated)
    stats = GateStatistics(gated, graph, training=training)
    seen, tally = 0, FiniteTally("find_dead_channels data", _NAN_HINT)
    for x in as_dataset(data, batch_size, labels=False, steps=steps, model=gated):
        tally.add(x)
        stats.update(x)
        seen += int(np.shape(keras.tree.flatten(x)[0])[0])
    if seen == 0:
        raise ValueError("The data held no batches, so nothing was measured. Received: 0 batches")
    tally.check()
    check_finite_statistics(stats.result())
    movement = grads = None
    if reference is not None or loss is not None:
        slices = non_learning.channel_parameters(graph)
        if reference is not None:
            arrays = non_learning.reference_arrays(model, reference)
            movement = non_learning.weight_movement(graph, slices, arrays)
        if loss is not None:
            batches = as_dataset(data, batch_size, labels=True, steps=steps, model=gated)
            grads = non_learning.gradient_norms(gated, graph, slices, batches, loss)
    flagged = non_learning.flag(movement, grads, move_tol, grad_tol)
    return build_report(graph, stats.result(), tol, seen, model.name, flagged, movement, grads)


def build_report(graph, moments, tol, num_examples, name, flagged=None, movement=None, grads=None):
    """A ``DeadReport`` from gate statistics (shared by ``find_dead_channels`` and the
    ``DeadChannelMonitor``)."""
    base = keep_masks(graph, None)
    groups = {g.name: g for g in graph.prunable_groups}
    where: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for path in graph.gate_paths:
        for p, (name_, ch) in enumerate(graph.gate_layout(path)):
            if name_ in groups:
                where.setdefault((name_, ch), []).append((path, p))
    dead = []
    order = {name_: i for i, name_ in enumerate(groups)}
    for (group, ch), spots in sorted(where.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        if group in base and not base[group][ch]:
            continue  # already switched off
        m = [moments[path] for path, _ in spots]
        if any(s.count == 0 or not s.variance[p] <= tol  # NaN variance: not dead
               for s, (_, p) in zip(m, spots, strict=True)):  # fmt: skip
            continue
        zero = all(s.absmax[p] == 0.0 for s, (_, p) in zip(m, spots, strict=True))
        values = tuple((path, p, float(s.mean[p])) for s, (path, p) in zip(m, spots, strict=True))
        dead.append(DeadChannel(group, ch, "zero" if zero else "constant", values))
    plan, floored = _plan(groups, base, dead)
    full = {n: base.get(n, np.ones(g.size, bool)) for n, g in groups.items()}
    after = {**full, **{n: _mask(groups[n].size, kept) for n, kept in plan.items()}}
    macs_before = macs_for(graph, full)
    saved = {n: int(macs_before - macs_for(graph, {**full, n: after[n]})) for n in plan}
    return DeadReport(
        model=name, tol=float(tol), num_examples=int(num_examples),
        group_sizes={n: g.size for n, g in groups.items()}, dead=tuple(dead), plan=plan,
        floored=tuple(floored), macs=int(macs_before), macs_after=int(macs_for(graph, after)),
        params=int(params_for(graph, full)), params_after=int(params_for(graph, after)),
        macs_saved=saved, means={p: m.mean for p, m in moments.items()},
        variances={p: m.variance for p, m in moments.items()}, non_learning=flagged or {},
        movement=movement, grad_norm=grads,
    )  # fmt: skip


def _mask(size: int, kept) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[list(kept)] = True
    return mask


def _plan(groups, base, dead) -> tuple[dict, list]:
    by_group: dict[str, list[int]] = {}
    for d in dead:
        by_group.setdefault(d.group, []).append(d.channel)
    plan, floored = {}, []
    for name, chans in by_group.items():
        on = base.get(name, np.ones(groups[name].size, bool)).copy()
        on[chans] = False
        if not on.any():  # every open channel dead: keep one so no layer is emptied
            on[min(chans)] = True
            floored.append(name)
        plan[name] = np.flatnonzero(on).tolist()
    return plan, floored


_NAN_HINT = "a NaN makes every channel's variance NaN, so every channel would look dead"


def check_finite_statistics(moments) -> None:
    """Raise ``NonFiniteInputError`` when finite data gave NaN/inf gate inputs (a NaN or
    huge weight): no channel can be called dead or alive from them."""
    bad = [p for p, m in moments.items() if not np.all(np.isfinite(m.mean))]
    if bad:
        raise NonFiniteInputError(
            f"The model computes NaN or infinite values at {len(bad)} gate(s) ({bad[:4]}) "
            "from finite data, so dead channels cannot be told apart. Check its weights for "
            f"NaN or inf. Received: gates={bad[:4]}"
        )


def measure_output_change(model, small, data, batch_size: int = 64, steps=None) -> float:
    """max |small(x) - model(x)| / max |model(x)| over the inputs of ``data``: how much
    removing channels (and folding their means) moved the outputs on that data."""
    worst = scale = 0.0
    for x in as_dataset(data, batch_size, labels=False, steps=steps, model=model):
        for a, b in zip(keras.tree.flatten(model(x, training=False)),
                        keras.tree.flatten(small(x, training=False)), strict=True):  # fmt: skip
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            worst = max(worst, float(np.max(np.abs(a - b))))
            scale = max(scale, float(np.max(np.abs(a))))
    return worst / scale if scale > 0 else worst


# ---------------------------------------------------------------------- removal
@keyword_only("tol")
def remove_dead_channels(
    model,
    data=None,
    *,
    tol: float = 1e-6,
    report: DeadReport | None = None,
    batch_size: int = 32,
    steps: int | None = None,
) -> keras.Model:
    """A compact model without the dead channels, their constants folded into the biases of
    every layer that read them (mean replacement), so it computes the same function.

    Args:
        model: a Keras model, wrapped or not; switched-off channels are removed too.
        data: data to find the dead channels on (see ``find_dead_channels``), or None with
            ``report``.
        tol: variance threshold.
        report: a ``DeadReport`` of this model (skips the pass over ``data``).
        batch_size, steps: batching of array data and the most batches read.

    Returns:
        A new model without gates. Equal to ``model`` up to float error for Dense and
        unpadded convs; next to zero-padded borders of 'same' convs with kernels > 1 it
        differs by the taps that fall into the padding (docs/dead.md).

    Raises:
        ValueError: when neither ``data`` nor ``report`` is given.
    """
    if report is None and data is None:
        raise ValueError("Give data to find dead channels on, or a report. Received: neither")
    gated = gated_model(model, "remove_dead_channels")
    graph = ChannelGraph(gated)
    if report is None:
        report = find_dead_channels(gated, data, tol=tol, batch_size=batch_size, steps=steps)
    masks = {**keep_masks(graph, None)}
    for name, kept in report.plan.items():
        masks[name] = _mask(graph.group(name).size, kept)
    gates = {fn.path: np.asarray(fn.op.gate.numpy()) for fn in graph.flat.nodes
             if isinstance(fn.op, ChannelGate)}  # fmt: skip
    # a switched-off channel already feeds zeros: fold nothing for it
    means = {p: np.asarray(m) * gates[p] for p, m in report.means.items() if p in gates}
    shift = mean_replacement_shift(graph, masks, means)
    return compact(gated, plan=report.plan, graph=graph, bias_shift=shift)


# ---------------------------------------------------------------------- command line
