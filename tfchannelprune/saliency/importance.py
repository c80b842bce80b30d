"""The importance protocol: how important each channel of a prunable group is.

An importance is any object called with the ``ScoringContext`` of a pruning event that returns
``{group name: scores}``, one float per channel of the group, LOWER = prune first. That is the
whole contract; the taxonomy's signals (``"taylor"``, ``"l1_weight"`` ...) are importances
through ``SignalImportance``, and FPGM (``saliency/fpgm.py``) is one written from scratch.
Wherever a signal name is accepted (``collect_saliency``, ``ChannelPruning``, ``prune()``), an
importance object, or a plain function ``fn(context) -> {group: scores}``, is accepted too.

Two kinds of criteria share the protocol:

* computed at the event, from the weights (``needs_data = False``) or from a pass over the
  context's data (``needs_data = True``; read it with ``context.batches()``);
* accumulated over training steps (``accumulated = True``): ``build(context)`` once,
  ``update(x, y)`` with each batch, ``__call__(context)`` at an event reads what was
  accumulated, then ``reset()``. Where no training steps feed it (``collect_saliency``, or an
  event with calibration data), the caller runs ``build``, ``reset`` and ``update`` over the
  context's batches first (``score_all``).

Example (a criterion outside the taxonomy; docs/signals.md has a worked one):

    >>> class KernelMax(tcp.Importance):
    ...     def __call__(self, context):
    ...         return {g: np.abs(f).max(axis=1) for g, f in context.filters().items()}
    >>> tcp.collect_saliency(model, None, signal=KernelMax())
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import gate_masks
from tfchannelprune.core.wrap import gated_model
from tfchannelprune.saliency import signals as signals_lib


@dataclasses.dataclass(frozen=True)
class ScoringContext:
    """What a pruning event knows, handed to an importance.

    Attributes:
        model: the wrapped Keras model being pruned (it has ChannelGate layers).
        graph: its ``ChannelGraph``.
        masks: {group name: boolean keep mask} of every prunable group, as the gates stand.
        data: calibration data as given by the user (None when there is none); read it
            through ``batches()`` so that every importance accepts the same data types.
        loss: the loss for criteria that need gradients (None when there is none).
        steps: read at most this many batches of ``data``.
        batch_size: batch size for array data (does not change the scores of the taxonomy).
        training: run BatchNorm / Dropout in training mode in the criterion's passes.
        step: the optimizer's iteration count at the event (None outside ``fit``).
        epoch: the epoch at the event (None outside ``fit`` or between epochs).
        accumulators: a dict the caller keeps across events (``ChannelPruning`` does) so
            that the taxonomy's collection step is traced once for the model, not at every
            event; None: a new one each time.
    """

    model: Any
    graph: Any
    masks: Mapping[str, np.ndarray]
    data: Any = None
    loss: Any = None
    steps: int | None = None
    batch_size: int = 32
    training: bool = False
    step: int | None = None
    epoch: int | None = None
    accumulators: dict | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def groups(self) -> list:
        """The prunable ``ChannelGroup``s to score (``name``, ``size``, ``producers`` ...)."""
        return self.graph.prunable_groups

    def batches(self, labels: bool = True):
        """The data as a batched ``tf.data.Dataset``: of ``(x, y)`` when ``labels``, else of
        ``x`` alone (see ``tfchannelprune.core.batches.as_dataset``).

        Raises:
            ValueError: when the context has no data, or data of an unsupported kind.
        """
        from tfchannelprune.core.batches import as_dataset

        if self.data is None:
            raise ValueError(
                "This criterion needs data, and none was given. Pass calibration data, e.g. "
                "collect_saliency(model, (x, y), loss=..., ...). Received: data=None"
            )
        return as_dataset(
            self.data, self.batch_size, labels=labels, steps=self.steps, model=self.model
        )

    def filters(self) -> dict[str, np.ndarray]:
        """{group: (size, weights) matrix}: row ``k`` is channel ``k``'s filter, the slices
        of every producer kernel of the group along its output channel axis, concatenated
        (the axes come from the layer rules through ``signals.kernel_sources``; a channel
        that a kernel holds at several positions contributes each of them, and rows are
        zero-padded to one length). Groups without a producer kernel are left out."""
        parts: dict[str, dict[int, list]] = {}
        for source in signals_lib.kernel_sources(self.graph):
            if source.role != "producer":
                continue
            kernel = np.moveaxis(source.kernel, source.channel_axis, 0)
            for group, (index, channels) in source.positions.items():
                per_channel = parts.setdefault(group, {})
                for i, c in zip(index, channels, strict=True):
                    per_channel.setdefault(int(c), []).append(kernel[i].ravel())
        out = {}
        for group, per_channel in parts.items():
            size = self.graph.group(group).size
            rows = [np.concatenate(per_channel.get(c, [np.zeros(0)])) for c in range(size)]
            width = max(len(r) for r in rows)
            out[group] = np.stack([np.pad(r, (0, width - len(r))) for r in rows]).astype(
                np.float64
            )
        return out


def scoring_context(
    model,
    data=None,
    loss=None,
    *,
    caller: str = "collect_saliency",
    graph=None,
    **fields,
) -> ScoringContext:
    """The ``ScoringContext`` of ``model`` as its gates stand.

    A model without gates is scored through a wrapped copy (``core.wrap.gated_model``);
    ``graph`` is reused when it is the graph of ``model``. ``fields``: the other attributes
    of ``ScoringContext`` (steps, batch_size, training, step, epoch).
    """
    gated = gated_model(model, caller, copy=True)
    if graph is None or graph.model is not gated:
        graph = ChannelGraph(gated)
    return ScoringContext(gated, graph, gate_masks(graph), data, loss, **fields)


class Importance:
    """Base class of channel-importance criteria (lower score = prune first).

    Subclasses implement ``__call__(context) -> {group name: scores}``: a 1-D array of
    ``group.size`` finite values per group. Score every group of ``context.groups``: a group
    left out scores 0 in the selection (like ``bn_scale`` for a group without BatchNorm).

    Class attributes (declarations the callers read):
        needs_data: the criterion reads ``context.batches()``.
        needs_gradients: it needs ``context.loss`` (gradients of the loss).
        accumulated: its scores are accumulated over training steps through
            ``build`` / ``update`` / ``reset`` instead of computed at the event.
    """

    needs_data: bool = False
    needs_gradients: bool = False
    accumulated: bool = False

    def __call__(self, context: ScoringContext) -> dict[str, np.ndarray]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement __call__(context) returning "
            "{group name: scores}."
        )

    def build(self, context: ScoringContext) -> None:
        """Create any state before the first ``update`` (accumulated criteria)."""

    def update(self, x, y=None) -> None:
        """Accumulate one training batch (accumulated criteria only)."""
        if self.accumulated:
            raise NotImplementedError(f"{type(self).__name__} must implement update(x, y).")

    def reset(self) -> None:
        """Forget what was accumulated (called after each pruning event)."""

    @property
    def name(self) -> str:
        """A readable key for results, e.g. ``"fpgm"`` (snake case of the class name)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: Mapping) -> Importance:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class FunctionImportance(Importance):
    """A plain function ``fn(context) -> {group: scores}`` as an ``Importance``.

    ``needs_data`` / ``needs_gradients`` are read from attributes of the same name on ``fn``
    when it has them (default False)."""

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise TypeError(f"fn must be callable. Received: fn of type {type(fn).__name__}")
        self.fn = fn
        self.needs_data = bool(getattr(fn, "needs_data", False))
        self.needs_gradients = bool(getattr(fn, "needs_gradients", False))

    def __call__(self, context):
        return self.fn(context)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def get_config(self) -> dict:
        raise NotImplementedError(
            f"A function importance ({self.name!r}) cannot be serialised; subclass "
            "tfchannelprune.Importance and implement get_config to save it."
        )


_GRADIENT_BASES = (
    "gradient", "zero_delta", "mean_delta", "mask_delta", "weight_delta", "consumer_weight_delta"
)


class SignalImportance(Importance):
    """A taxonomy ``Signal`` (preset name, id, config or ``Signal``) as an ``Importance``.

    Calling it runs one ``SaliencyAccumulator`` pass over ``context.batches()`` (none for
    weight and BatchNorm signals), so its scores are those of ``collect_saliency``.
    """

    def __init__(self, signal="taylor"):
        self.signal = signals_lib.get(signal)
        self.needs_data = self.signal.needs_data
        self.needs_gradients = self.signal.base in _GRADIENT_BASES

    def __call__(self, context):
        return score_signals(context, [self.signal])[0]

    @property
    def name(self) -> str:
        return self.signal.id

    def get_config(self) -> dict:
        return {"signal": self.signal.id}

    def __eq__(self, other) -> bool:
        return isinstance(other, SignalImportance) and other.signal == self.signal

    def __hash__(self) -> int:
        return hash(self.signal)


def score_signals(context: ScoringContext, signals: list) -> list[dict[str, np.ndarray]]:
    """Scores of several taxonomy signals from ONE pass over the context's data."""
    acc = _accumulator(context, list(signals))
    if acc.needs_data:
        dataset = context.batches(labels=True)
        strategy = acc.strategy
        if strategy.num_replicas_in_sync > 1:
            dataset = strategy.experimental_distribute_dataset(dataset)
        if acc.needs_means:  # the activation mean of mean_delta signals, over all the data
            for x, _ in dataset:
                acc.update_means(x)
        for x, y in dataset:
            acc.update(x, y)
        if acc.num_examples == 0:
            raise ValueError(
                "The data held no examples, so no saliency could be collected. "
                f"Received: data={context.data!r:.80}, steps={context.steps}"
            )
    result = acc.result()
    return [result[s.id] for s in acc.signals]


def _accumulator(context: ScoringContext, signals: list):
    """A ``SaliencyAccumulator`` for these signals on the context's model: the one kept in
    ``context.accumulators`` (reset) when the model, loss and mode are the same objects."""
    from tfchannelprune.saliency.accumulator import SaliencyAccumulator

    cache = context.accumulators
    key = (tuple(s.id for s in signals), context.training)
    kept = cache.get(key) if cache is not None else None
    if kept is not None and kept[0] is context.model and kept[1] is context.loss:
        kept[2].reset()
        return kept[2]
    acc = SaliencyAccumulator(
        context.model, loss=context.loss, signals=signals, training=context.training
    )
    if cache is not None:
        cache[key] = (context.model, context.loss, acc)
    return acc


def check_scores(scores, context: ScoringContext, name: str) -> dict[str, np.ndarray]:
    """Validate what an importance returned: {known group: 1-D finite array of its size}.

    Raises:
        TypeError: not a mapping.
        ValueError: an unknown group, a wrong size, or non-finite values.
    """
    if not isinstance(scores, Mapping):
        raise TypeError(
            f"Importance {name!r} must return {{group name: scores}}. "
            f"Received: {type(scores).__name__}"
        )
    sizes = {g.name: g.size for g in context.groups}
    out = {}
    for group, values in scores.items():
        if group not in sizes:
            raise ValueError(
                f"Importance {name!r} scored group {group!r}, which is not a prunable group "
                f"of the model ({sorted(sizes)[:8]}...). Received: group={group!r}"
            )
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (sizes[group],):
            raise ValueError(
                f"Importance {name!r} must give one score per channel of group {group!r} "
                f"({sizes[group]}). Received: shape={values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"Importance {name!r} gave non-finite scores for group {group!r}. "
                f"Received: {values[~np.isfinite(values)][:4]}"
            )
        out[group] = values
    return out
