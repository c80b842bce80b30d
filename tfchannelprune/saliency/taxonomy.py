"""The saliency-signal taxonomy (Persand, Anderson & Gregg, arXiv:1906.04675).

A signal is four choices, written as one id ``"base|plan|scaling"``:

* **base**: the raw tensor attached to a channel (see ``BASES``);
* **pointwise**: ``abs``, ``square`` or ``nonzero`` (the zero indicator, flipped so that a high
  fraction of zeros gives a LOW score), or none; it is a token placed at one position of the plan,
  which is where the paper says the absolute value or square is taken;
* **reduction plan**: stages ``op_axes`` applied left to right, ``op`` in ``OPS`` and ``axes``
  ``hw`` (spatial), ``n`` (examples) or ``nhw`` (both at once) for data bases, ``k`` (kernel
  taps), ``fan`` (the other channel axis of the kernel) or ``all`` for weight bases; an optional
  last token ``x<c>`` multiplies by a constant (Fisher's 1/2);
* **scaling**: ``none``, ``l2_group`` (Molchanov), ``max_group``, ``macs`` (divide by the MACs
  saved by removing the channel) or ``weights`` (by the weights removed transitively, v2 of the
  paper).

Example: Molchanov's Taylor criterion, per example the derivative of the loss with respect to
the channel's one shared mask, absolute, averaged over examples, is ``"mask_delta|abs,mean_n|none"``;
the per-gate form ``mean_n |mean_hw(a*g)|`` is ``"zero_delta|mean_hw,abs,mean_n|none"``.

The ``mask_delta`` base is ``-dl_n/dm_k`` with ``m_k`` ONE mask shared by every place where channel
``k`` of a group appears (residual adds, concatenations, depthwise repeats): the sum over all the
group's gates and spatial positions of ``(0 - a) * g``, taken per example BEFORE any absolute
value or square. It is the first-order loss change of removing the channel, and it does not
depend on where the channel is measured (a spatial sum is unchanged by pooling, dropout or
padding between the producer and the gate; a spatial mean is not).

Convention: LOWER score = prune first. The delta bases are signed as the first-order change of
the loss when the channel is replaced (``(replacement - a) * g``), so signed signals follow the
convention too; APoZ is expressed with the flipped zero indicator (fraction of non-zeros).
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np

BASES = {
    "weight": "producer kernel slices W[..., k] (every producer of the group)",
    "consumer_weight": "consumers' input slices W_next[..., k, :] (every consumer)",
    "bn_scale": "BatchNormalization gamma of the group's channels",
    "weight_delta": "(0 - W) * mean_n dl_n/dW on producer kernels (weight x weight-gradient)",
    "consumer_weight_delta": "(0 - W) * mean_n dl_n/dW on consumers' input slices",
    "activation": "a, the activation fed forward (the ChannelGate input)",
    "gradient": "g = dl_n/da, per example",
    "zero_delta": "(0 - a) * g: activation x gradient as the loss change of zeroing (Evci RS)",
    "mean_delta": "(mean(a) - a) * g: mean replacement (Evci MRS)",
    "mask_delta": "-dl_n/dm_k for one mask m_k shared by every gate of the channel: "
    "sum over gates and space of (0 - a) * g, per example (Theis's mask form)",
    "random": "uniform random scores (baseline)",
}
KIND = {
    "weight": "weight",
    "consumer_weight": "weight",
    "weight_delta": "weight",
    "consumer_weight_delta": "weight",
    "bn_scale": "scalar",
    "activation": "data",
    "gradient": "data",
    "zero_delta": "data",
    "mean_delta": "data",
    "mask_delta": "mask",
    "random": "random",
}
OPS = ("sum", "mean", "l1", "l2", "max", "var", "std")
POINTWISE = ("abs", "square", "nonzero")
SCALINGS = ("none", "l2_group", "max_group", "macs", "weights")
COST_SCALINGS = ("macs", "weights")
# Reduction orders accepted for each kind of base: the axes of the stages, left to right.
ORDERS = {
    "data": (("hw", "n"), ("n", "hw"), ("nhw",)),
    "weight": (("k", "fan"), ("fan", "k"), ("all",)),
    "scalar": ((),),
    "mask": (("n",),),
    "random": ((),),
}
_NONNEG_OPS = ("l1", "l2", "var", "std")
_LINEAR_OPS = ("sum", "mean")
_FACTOR = re.compile(r"^x([0-9.eE+-]+)$")


@dataclasses.dataclass(frozen=True)
class Stage:
    op: str
    axes: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """A parsed reduction plan: stages, where the pointwise op goes, a constant factor."""

    stages: tuple[Stage, ...]
    pointwise: str | None
    position: int  # the pointwise op runs before stage ``position`` (len(stages): at the end)
    factor: float

    def tokens_before(self, index: int) -> tuple[str, ...]:
        """The plan's tokens up to (not including) stage ``index``."""
        out = []
        for i, stage in enumerate(self.stages[:index]):
            if self.pointwise and self.position == i:
                out.append(self.pointwise)
            out.append(f"{stage.op}_{stage.axes}")
        if self.pointwise and self.position == index and index < len(self.stages):
            out.append(self.pointwise)
        return tuple(out)


def parse_plan(base: str, tokens: tuple[str, ...]) -> Plan:
    """Check a plan's tokens for ``base``; raise ValueError saying what is wrong."""
    kind = KIND[base]
    stages: list[Stage] = []
    pointwise, position, factor = None, 0, 1.0
    for i, token in enumerate(tokens):
        match = _FACTOR.match(token)
        if match:
            if i != len(tokens) - 1:
                raise ValueError(_plan_error(base, tokens, f"a factor {token!r} must come last"))
            factor = float(match.group(1))
        elif token in POINTWISE:
            if pointwise is not None:
                raise ValueError(_plan_error(base, tokens, "at most one pointwise op"))
            pointwise, position = token, len(stages)
        else:
            op, _, axes = token.rpartition("_")
            if op not in OPS:
                raise ValueError(
                    _plan_error(base, tokens, f"unknown token {token!r}; reductions are "
                                f"<op>_<axes> with op in {OPS}, pointwise ops are {POINTWISE}")
                )  # fmt: skip
            stages.append(Stage(op, axes))
    order = tuple(s.axes for s in stages)
    if order not in ORDERS[kind]:
        raise ValueError(
            _plan_error(base, tokens, f"base {base!r} ({kind}) needs its stages to reduce over "
                        f"one of {[','.join(o) or '(nothing)' for o in ORDERS[kind]]}")
        )  # fmt: skip
    if pointwise == "nonzero" and position != 0:
        raise ValueError(_plan_error(base, tokens, "'nonzero' is elementwise: put it first"))
    return Plan(tuple(stages), pointwise, position, factor)


def _plan_error(base, tokens, why) -> str:
    return f"Invalid reduction plan for base {base!r}: {why}. Received: plan={list(tokens)}"


def is_nonnegative(plan: Plan) -> bool:
    """Whether the signal is >= 0 whatever the data (needed to divide by a cost)."""
    nonneg = False
    for i, stage in enumerate(plan.stages):
        if plan.pointwise and plan.position == i:
            nonneg = True
        if stage.op in _NONNEG_OPS:
            nonneg = True
    if plan.pointwise and plan.position == len(plan.stages):
        nonneg = True
    return nonneg and plan.factor >= 0


def is_redundant(base: str, plan: Plan) -> bool:
    """True for a plan that computes the same scores as a simpler one in ``enumerate``:
    an abs of something already >= 0, abs before l1/l2 (|x| then l1 = sum, |x|^2 = x^2),
    reductions of a 0/1 indicator other than sum/mean, or two means with no pointwise op
    between them (that is the joint mean over ``nhw``)."""
    nonneg = False
    for i, stage in enumerate(plan.stages + (None,)):
        if plan.pointwise and plan.position == i:
            if plan.pointwise == "abs" and nonneg:
                return True
            if plan.pointwise == "abs" and stage is not None and stage.op in ("l1", "l2"):
                return True
            nonneg = True
        if stage is None:
            break
        if plan.pointwise == "nonzero" and stage.op not in _LINEAR_OPS:
            return True
        nonneg = nonneg or stage.op in _NONNEG_OPS
    ops = [s.op for s in plan.stages]
    if len(ops) == 2 and ops == ["mean", "mean"] and plan.position != 1:
        return True
    between = plan.pointwise is not None and plan.position == 1
    if len(ops) == 2 and not between and all(op in _LINEAR_OPS for op in ops):
        return plan.stages[0].axes != ORDERS[KIND[base]][0][0]  # linear stages commute
    return False


# The reduction plans that ``enumerate`` combines with every pointwise op and position.
ENUMERATED_PLANS = {
    "data": (
        ("sum_hw", "mean_n"), ("mean_hw", "mean_n"), ("max_hw", "mean_n"), ("mean_hw", "var_n"),
        ("mean_n", "mean_hw"), ("mean_nhw",), ("max_nhw",), ("std_nhw",),
    ),
    "weight": (("sum_all",), ("mean_all",), ("l2_all",), ("max_all",), ("l2_k", "sum_fan")),
    "scalar": ((),),
    "mask": (("mean_n",), ("std_n",)),
}  # fmt: skip
# Which pointwise ops make sense on which base when enumerating.
ENUMERATED_POINTWISE = {
    "activation": (None, "abs", "square", "nonzero"),
    "gradient": (None, "abs", "square", "nonzero"),
}


def enumerated_ids() -> list[str]:
    """Every non-redundant (base, pointwise at a position, plan, scaling) combination."""
    ids = []
    for base, kind in KIND.items():
        if kind == "random":
            ids.append("random|seed=0|none")
            continue
        for stages in ENUMERATED_PLANS[kind]:
            for tokens in _with_pointwise(base, stages):
                plan = parse_plan(base, tokens)
                if is_redundant(base, plan):
                    continue
                nonneg = is_nonnegative(plan)
                for scaling in SCALINGS:
                    if scaling in COST_SCALINGS and not nonneg:
                        continue
                    ids.append(f"{base}|{','.join(tokens)}|{scaling}")
    return ids


def _with_pointwise(base: str, stages: tuple[str, ...]):
    choices = ENUMERATED_POINTWISE.get(base, (None, "abs", "square"))
    for op, position in itertools.product(choices, range(len(stages) + 1)):
        if op is None and position > 0:
            continue
        if op == "nonzero" and position > 0:
            continue
        if op == "square" and position == len(stages) and stages:
            continue  # ranks like abs at the end
        if op is None:
            yield tuple(stages)
        else:
            yield tuple(stages[:position]) + (op,) + tuple(stages[position:])


# ----------------------------------------------------------------------- evaluation (NumPy)
def reduce_np(x: np.ndarray, op: str, axis) -> np.ndarray:
    """One reduction stage in NumPy (float64)."""
    if op == "sum":
        return x.sum(axis=axis)
    if op == "mean":
        return x.mean(axis=axis)
    if op == "l1":
        return np.abs(x).sum(axis=axis)
    if op == "l2":
        return np.sqrt(np.square(x).sum(axis=axis))
    if op == "max":
        return x.max(axis=axis)
    if op == "var":
        return x.var(axis=axis)
    return x.std(axis=axis)


def pointwise_np(x: np.ndarray, op: str | None) -> np.ndarray:
    if op is None:
        return x
    if op == "abs":
        return np.abs(x)
    if op == "square":
        return np.square(x)
    return (x != 0).astype(x.dtype)


def apply_plan_np(x: np.ndarray, plan: Plan, axes: dict[str, tuple[int, ...]], start: int = 0):
    """Run stages ``start..`` of ``plan`` on ``x``; ``axes`` maps axis names to array axes.

    Axes are removed as they are reduced, so later stages see renumbered axes."""
    remaining = list(range(x.ndim))
    for i in range(start, len(plan.stages)):
        stage = plan.stages[i]
        if plan.pointwise and plan.position == i:
            x = pointwise_np(x, plan.pointwise)
        dims = tuple(remaining.index(a) for a in axes[stage.axes])
        x = reduce_np(x, stage.op, dims)
        remaining = [a for a in remaining if a not in axes[stage.axes]]
    if plan.pointwise and plan.position == len(plan.stages):
        x = pointwise_np(x, plan.pointwise)
    return x


# Statistics a streamed reduction over examples keeps, per op (counts are kept apart).
STATS_FOR = {
    "sum": ("sum",), "mean": ("sum",), "l1": ("abssum",), "l2": ("sqsum",), "max": ("max",),
    "var": ("sum", "sqsum"), "std": ("sum", "sqsum"),
}  # fmt: skip


def from_stats(op: str, stats: dict, count) -> np.ndarray:
    count = max(float(count), 1.0)
    if op == "sum":
        return stats["sum"]
    if op == "mean":
        return stats["sum"] / count
    if op == "l1":
        return stats["abssum"]
    if op == "l2":
        return np.sqrt(stats["sqsum"])
    if op == "max":
        return stats["max"]
    var = np.maximum(stats["sqsum"] / count - np.square(stats["sum"] / count), 0.0)
    return var if op == "var" else np.sqrt(var)
