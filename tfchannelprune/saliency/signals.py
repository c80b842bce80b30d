"""Saliency signals: the taxonomy's ``Signal`` objects, named presets and ``get()``.

Scores come one per channel of every prunable group, and LOWER = prune first. A group that
spans several layers (a residual add, a concatenation) gets the sum of the contributions of all
its producers, consumers, BatchNorms and gates; a channel seen at several positions of one gate
(depthwise multiplier) sums them too.

Presets (all with scaling ``none``, so they equal the papers' formulas). ``taylor`` and
``fisher`` differentiate ONE mask ``m`` per channel, shared by all the gates of its group
(``mask_delta``, spatial SUM; see ``saliency.mask_delta``); the ``_gate`` variants score each
gate on its own and add the absolute values or squares (the library's formulas before 0.2):

=================  ======================================  ==================================
name               id                                      formula
=================  ======================================  ==================================
``l1_weight``      ``weight|abs,sum_all|none``             sum |W_k| (Li et al. 2017)
``l2_weight``      ``weight|l2_all|none``                  ||W_k||_2
``min_weight``     ``weight|square,mean_all|none``         mean W_k^2 (Molchanov 2017)
``bn_scale``       ``bn_scale|abs|none``                   |gamma_k| (network slimming)
``mean_activation````activation|mean_nhw|none``            mean_nhw a
``activation_std`` ``activation|std_nhw|none``             std_nhw a (population, ddof 0)
``apoz``           ``activation|nonzero,mean_nhw|none``    1 - APoZ (Hu et al. 2016)
``taylor``         ``mask_delta|abs,mean_n|none``          mean_n |dl_n/dm| (Molchanov)
``fisher``         ``mask_delta|square,mean_n,x0.5|none``  1/(2N) sum_n (dl_n/dm)^2 (Theis)
``taylor_gate``    ``zero_delta|mean_hw,abs,mean_n|none``  mean_n |mean_hw(a g)| per gate
``fisher_gate``    ``zero_delta|sum_hw,square,mean_n,x0.5  1/(2N) sum_n (sum_hw a g)^2 per gate
                   |none``
``rs``             ``zero_delta|mean_nhw|none``            mean_n mean_hw((0 - a) g) (Evci)
``mrs``            ``mean_delta|mean_nhw|none``            mean_n mean_hw((abar - a) g)
``abs_mrs``        ``mean_delta|mean_hw,abs,mean_n|none``  mean_n |mean_hw((abar - a) g)|
``random``         ``random|seed=0|none``                  uniform [0, 1)
=================  ======================================  ==================================

Example:
    >>> sig = signals.get("taylor")
    >>> sig.id
    'zero_delta|mean_hw,abs,mean_n|none'
    >>> signals.get(sig.id) == sig
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Mapping

import numpy as np

from tfchannelprune.saliency import taxonomy
from tfchannelprune.saliency.taxonomy import apply_plan_np, pointwise_np

PRESETS = {
    "l1_weight": "weight|abs,sum_all|none",
    "l2_weight": "weight|l2_all|none",
    "min_weight": "weight|square,mean_all|none",
    "bn_scale": "bn_scale|abs|none",
    "mean_activation": "activation|mean_nhw|none",
    "activation_std": "activation|std_nhw|none",
    "apoz": "activation|nonzero,mean_nhw|none",
    "taylor": "mask_delta|abs,mean_n|none",
    "fisher": "mask_delta|square,mean_n,x0.5|none",
    "taylor_gate": "zero_delta|mean_hw,abs,mean_n|none",
    "fisher_gate": "zero_delta|sum_hw,square,mean_n,x0.5|none",
    "rs": "zero_delta|mean_nhw|none",
    "mrs": "mean_delta|mean_nhw|none",
    "abs_mrs": "mean_delta|mean_hw,abs,mean_n|none",
    "random": "random|seed=0|none",
}


@dataclasses.dataclass(frozen=True)
class Signal:
    """One saliency signal: (base, reduction plan with its pointwise op, scaling).

    Args:
        base: one of ``taxonomy.BASES``.
        plan: reduction tokens, e.g. ``("mean_hw", "abs", "mean_n")``.
        scaling: one of ``taxonomy.SCALINGS``.
        seed: seed of the ``random`` base (ignored otherwise).

    Raises:
        ValueError: for an unknown base or scaling, a malformed plan, or a cost scaling of a
        signal that can be negative.
    """

    base: str
    plan: tuple[str, ...] = ()
    scaling: str = "none"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "plan", tuple(self.plan))
        if self.base not in taxonomy.BASES:
            raise ValueError(
                f"Unknown signal base {self.base!r}; choose one of {sorted(taxonomy.BASES)}. "
                f"Received: base={self.base!r}"
            )
        if self.scaling not in taxonomy.SCALINGS:
            raise ValueError(
                f"Unknown scaling {self.scaling!r}; choose one of {taxonomy.SCALINGS}. "
                f"Received: scaling={self.scaling!r}"
            )
        if self.kind == "random":
            if self.plan or self.scaling != "none":
                raise ValueError(
                    "The random signal takes no plan and no scaling. "
                    f"Received: plan={list(self.plan)}, scaling={self.scaling!r}"
                )
            return
        parsed = self.parsed  # validates
        if self.scaling in taxonomy.COST_SCALINGS and not taxonomy.is_nonnegative(parsed):
            raise ValueError(
                f"Scaling {self.scaling!r} divides by a cost, which only ranks correctly a "
                "signal that is never negative; add 'abs' or 'square' to the plan. "
                f"Received: signal={self.id!r}"
            )

    @property
    def kind(self) -> str:
        return taxonomy.KIND[self.base]

    @property
    def parsed(self) -> taxonomy.Plan:
        return taxonomy.parse_plan(self.base, self.plan)

    @property
    def id(self) -> str:
        """Stable string id ``base|plan|scaling`` (``signals.get`` parses it back)."""
        if self.kind == "random":
            return f"random|seed={self.seed}|none"
        return f"{self.base}|{','.join(self.plan)}|{self.scaling}"

    @property
    def needs_data(self) -> bool:
        return self.kind in ("data", "mask") or self.base in ("weight_delta", "consumer_weight_delta")

    @property
    def nonnegative(self) -> bool:
        return self.kind == "random" or taxonomy.is_nonnegative(self.parsed)

    def get_config(self) -> dict:
        return {"base": self.base, "plan": list(self.plan), "scaling": self.scaling,
                "seed": self.seed}  # fmt: skip

    @classmethod
    def from_config(cls, config: Mapping) -> Signal:
        return cls(**config)

    def __str__(self) -> str:
        return self.id


def get(identifier) -> Signal:
    """A ``Signal`` from a preset name, an id string, a config dict or a ``Signal``.

    Raises:
        ValueError: for an unknown name or a malformed id, listing the presets.
        TypeError: for anything else.
    """
    if isinstance(identifier, Signal):
        return identifier
    if isinstance(identifier, Mapping):
        return Signal.from_config(identifier)
    if not isinstance(identifier, str):
        raise TypeError(
            "A signal is a preset name, an id string, a config dict or a Signal. "
            f"Received: signal of type {type(identifier).__name__}"
        )
    name = identifier.strip()
    if name in PRESETS:
        name = PRESETS[name]
    parts = name.split("|")
    if len(parts) != 3:
        close = difflib.get_close_matches(name, list(PRESETS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown signal {identifier!r}.{hint} Use a preset ({', '.join(PRESETS)}) or an "
            "id 'base|plan|scaling' such as 'zero_delta|mean_hw,abs,mean_n|l2_group' "
            f"(see tfchannelprune.signals.enumerate()). Received: signal={identifier!r}"
        )
    base, plan, scaling = parts
    if base == "random":
        if not plan.startswith("seed=") or not plan[5:].lstrip("-").isdigit():
            raise ValueError(f"Random signal ids look like 'random|seed=0|none'. "
                             f"Received: signal={identifier!r}")  # fmt: skip
        return Signal("random", (), scaling, seed=int(plan[5:]))
    return Signal(base, tuple(t for t in plan.split(",") if t), scaling)


def enumerate() -> list[Signal]:  # noqa: A001 (the issue asks for signals.enumerate())
    """Every non-redundant combination of base, pointwise op and position, reduction plan and
    scaling (``taxonomy.enumerated_ids``), as ``Signal`` objects."""
    return [get(i) for i in taxonomy.enumerated_ids()]


# ----------------------------------------------------------------------- static bases
def _weight_axes() -> dict[str, tuple[int, ...]]:
    return {"k": (0,), "fan": (1,), "all": (0, 1)}


def weight_contributions(signal: Signal, sources, grad_means=None):
    """Per-channel contributions of a weight base from ``sources`` (see ``weight_sources``):
    yields (group name, channel indices, values)."""
    plan = signal.parsed
    role = "consumer" if signal.base.startswith("consumer") else "producer"
    for source in sources:
        if source.role != role:
            continue
        kernel = source.kernel
        if signal.base in ("weight_delta", "consumer_weight_delta"):
            kernel = -kernel * grad_means[source.variable_path]
        slices = np.moveaxis(kernel, source.channel_axis, -1)
        slices = slices.reshape(-1, slices.shape[-2], slices.shape[-1]) if slices.ndim > 2 else (
            slices.reshape(1, slices.shape[0], slices.shape[1])
        )  # fmt: skip
        values = apply_plan_np(slices.astype(np.float64), plan, _weight_axes())
        for group, (index, channels) in source.positions.items():
            yield group, channels, values[index]


def bn_contributions(signal: Signal, bn_layers):
    plan = signal.parsed
    for group, layer, weight, index, channels in bn_layers:
        scale = np.asarray(getattr(layer, weight).numpy(), dtype=np.float64)[index]
        yield group, channels, pointwise_np(scale, plan.pointwise)


# ----------------------------------------------------------------------- scaling
def scale_scores(scores: dict[str, np.ndarray], scaling: str, costs) -> dict[str, np.ndarray]:
    """Apply a signal's scaling to {group: scores}; ``costs()`` returns
    {"macs": {group: MACs per channel}, "weights": {group: weights per channel}}."""
    if scaling == "none":
        return scores
    out = {}
    for group, s in scores.items():
        if scaling == "l2_group":
            norm = np.sqrt(np.sum(np.square(s)))
            out[group] = s / norm if norm > 0 else s
        elif scaling == "max_group":
            top = np.max(np.abs(s)) if s.size else 0.0
            out[group] = s / top if top > 0 else s
        else:
            out[group] = s / max(float(costs()[scaling].get(group, 1.0)), 1.0)
    return out


def marginal_params(graph) -> dict[str, float]:
    """Parameters removed with one more channel of each prunable group (its filter, the
    consumers' input slices, BatchNorm entries ...), at the current widths: the transitive
    weight count of Persand et al. v2."""
    from tfchannelprune.core.cost import count_params
    from tfchannelprune.core.plans import get_kept_channels

    kept = get_kept_channels(graph) if graph.gate_paths else {
        g.name: list(range(g.size)) for g in graph.prunable_groups
    }  # fmt: skip
    total = count_params(graph, plan=kept)
    out = {}
    for g in graph.prunable_groups:
        channels = kept[g.name]
        if len(channels) < 2:  # cannot cut below one channel; count as if from a full group
            channels = list(range(g.size))
        if len(channels) < 2:
            out[g.name] = 1.0
            continue
        out[g.name] = float(total - count_params(graph, plan={**kept, g.name: channels[:-1]}))
    return out


def random_scores(signal: Signal, groups) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(signal.seed)
    return {g.name: rng.random(g.size) for g in groups}


def warn_missing(signal: Signal, missing: list[str]) -> None:
    if missing:
        warnings.warn(
            f"Signal {signal.id!r} has no value for groups {missing[:8]} (e.g. no "
            "BatchNormalization with a scale); they are left out of its scores.",
            stacklevel=3,
        )


# ----------------------------------------------------------------------- where bases live
@dataclasses.dataclass(frozen=True)
class KernelSource:
    """A kernel whose slices along ``channel_axis`` belong to channels of prunable groups."""

    layer: object
    attr: str  # the weight's name: "kernel", "pointwise_kernel", "depthwise_kernel" ...
    channel_axis: int
    role: str  # "producer" or "consumer"
    positions: dict  # group name -> (indices along channel_axis, channel of the group)

    @property
    def variable(self):
        for v in self.layer.weights:
            if v.name == self.attr:
                return v
        return getattr(self.layer, self.attr)

    @property
    def variable_path(self) -> str:
        return self.variable.path

    @property
    def kernel(self) -> np.ndarray:
        return np.asarray(self.variable.numpy())


def channel_positions(graph, tensor, prunable: set[str]) -> dict:
    """{group: (positions on the tensor's channel axis, channel of the group)} for the
    ``prunable`` groups present on ``tensor``."""
    index, channels = graph.group_layout(tensor)
    out = {}
    for gi in np.unique(index):
        name = graph.groups[gi].name if gi >= 0 else None
        if name in prunable:
            sel = np.flatnonzero(index == gi)
            out[name] = (sel, channels[sel])
    return out


def kernel_sources(graph) -> list[KernelSource]:
    """Producer kernels (output axis) and consumer kernels (input axis) of prunable groups:
    the kernel each layer's rule declares for its side (``Rule.kernel_axis``)."""
    prunable = {g.name for g in graph.prunable_groups}
    roles: dict[str, set] = {}
    for g in graph.prunable_groups:
        for path in g.producers:
            roles.setdefault(path, set()).add("producer")
        for path in g.consumers:
            roles.setdefault(path, set()).add("consumer")
    sources = []
    for fn, rule in zip(graph.flat.nodes, graph.rules, strict=True):
        role = roles.get(fn.path, set())
        for name, side, tensor in (("producer", "out", fn.outputs), ("consumer", "in", fn.inputs)):
            axis = rule.kernel_axis(fn, side) if name in role else None
            if axis is not None:
                pos = channel_positions(graph, tensor[0], prunable)
                sources.append(KernelSource(fn.op, axis.weight, axis.axis, name, pos))
    return sources


def batch_norms(graph) -> list[tuple]:
    """(group, layer, scale weight name, indices into it, channels) for every layer whose rule
    declares a per-channel scale (``Rule.channel_scale``: BatchNormalization's "gamma", or
    what a registered rule names)."""
    prunable = {g.name for g in graph.prunable_groups}
    out = []
    for fn, rule in zip(graph.flat.nodes, graph.rules, strict=True):
        weight = rule.channel_scale(fn)
        if weight is not None:
            positions = channel_positions(graph, fn.inputs[0], prunable)
            for group, (index, channels) in positions.items():
                out.append((group, fn.op, weight, index, channels))
    return out
