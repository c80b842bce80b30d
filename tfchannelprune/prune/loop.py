"""``prune()``: rounds of score -> remove -> compact -> fine-tune, without callbacks.

Because the model is compacted after every round, fine-tuning runs on the smaller model and
gets faster round after round. The optimizer's state (Adam moments, momentum, the iteration
count) is carried through each compaction, its slots sliced like the weights
(``prune.optimizer_state``), so fine-tuning goes on as if the model had only been gated.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import keras
import numpy as np

from tfchannelprune.core.checks import layer_names
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.cost import count_macs, count_params, macs_for
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import set_kept_channels
from tfchannelprune.core.surgery import compact
from tfchannelprune.core.wrap import wrap
from tfchannelprune.dead.gate_inputs import gate_input_means
from tfchannelprune.dead.mean_replacement import mean_replacement_shift
from tfchannelprune.deploy.latency_model import LatencyModel
from tfchannelprune.prune import optimizer_state, procedures, select
from tfchannelprune.prune.callback import _check_fraction
from tfchannelprune.saliency import registry
from tfchannelprune.saliency.collect import score_all
from tfchannelprune.saliency.importance import scoring_context


@dataclasses.dataclass
class PruneResult:
    model: keras.Model  # the compact model after the last round
    history: list[dict]  # one record per round


@keyword_only("loss")
def prune(
    model,
    data,
    *,
    loss=None,
    signal="taylor",
    target_macs: float | None = None,
    target_params: float | None = None,
    rounds: int = 3,
    fine_tune_data=None,
    fine_tune_epochs: int = 1,
    optimizer="adam",
    metrics=None,
    validation_data=None,
    fit_kwargs: dict | None = None,
    mean_replacement: bool = False,
    carry_optimizer: bool = True,
    batch_size: int = 32,
    steps: int | None = None,
    mode: str = "global",
    normalize: str = "auto",
    lam: float = 0.0,
    beta: float | str | None = None,
    min_channels: int = 1,
    round_to: int | str | None = None,
    cost: str | None = None,
    ignored_layers=(),
    target_latency: float | None = None,
    latency_model=None,
    latency_dtype: str = "float32",
    latency_threads: int = 1,
    verbose: int = 1,
) -> PruneResult:
    """Prune ``model`` to a target in ``rounds`` rounds, fine-tuning the compacted model
    after each.

    Args:
        model: a Functional or Sequential Keras model (not wrapped).
        data: calibration data for the signal ((x, y) arrays or a tf.data.Dataset).
        loss: the loss (for the signal and for fine-tuning); default: the model's compiled
            loss.
        target_macs / target_params: final fraction of the original MACs / params.
        rounds: number of prune -> compact -> fine-tune rounds; the target of round r is
            ``1 - (1 - target) * r / rounds`` (linear in the cost removed).
        signal: what ranks the channels: a signal name or id ("taylor", "fpgm" ...), an
            ``Importance`` object or a function ``fn(context) -> {group: scores}``.
        fine_tune_data: (x, y) or a dataset for ``fit``; None skips fine-tuning.
        optimizer: optimizer (name or instance). An instance already built for ``model``
            (e.g. the one it was trained with) hands its state to the first round.
        carry_optimizer: carry the optimizer's slots and iteration count through each
            compaction (sliced like the weights); False starts every round afresh.
        mean_replacement: fold each removed channel's mean output over ``data`` into its
            consumers' biases (Evci's mean replacement) instead of dropping it.
        target_latency: LiteRT latency to reach, in ms (batch 1, XNNPACK, ``latency_dtype``,
            ``latency_threads``): met through a measured latency table
            (``tfchannelprune.LatencyModel``, built once and cached on disk), confirmed by one
            measured export at the end (``history[-1]["latency_ms"]``). With it, ``cost``
            defaults to "latency" and ``round_to`` to "auto".
        latency_model: a ``LatencyModel`` of ``model`` to reuse (else built when needed); the
            confirming export calibrates a copy of it, never the table passed in.
        batch_size, steps: batching of array ``data`` and the most batches scored per round.
        mode, normalize, lam, beta, min_channels, round_to, ignored_layers, cost: see
            ``SelectionConfig``. ``round_to=None`` is "auto" (widths from the latency table)
            with ``target_latency``, else 1; ``cost=None`` is "latency" with
            ``target_latency``, else "macs". ``normalize="auto"`` and ``beta=None`` take the same
            defaults as ``ChannelPruning`` (``prune.procedures.default_selection``: "mean",
            no cost term).
        verbose: 1 prints a line per round.

    Returns:
        ``PruneResult(model, history)``; each record has the round's ``macs_fraction``,
        ``params_fraction``, the last epoch's fit metrics and ``epoch_seconds`` (mean wall
        time of the round's fine-tuning epochs).
    """
    _check_fraction("target_macs", target_macs)
    _check_fraction("target_params", target_params)
    if target_macs is None and target_params is None and target_latency is None:
        raise ValueError(
            "Give target_macs or target_params (fractions of the original model) or "
            "target_latency (ms). Received: none"
        )
    if target_latency is not None and not target_latency > 0:
        raise ValueError(f"target_latency is in milliseconds, > 0. Received: {target_latency}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1. Received: rounds={rounds}")
    importance = registry.get(signal)
    loss = getattr(model, "loss", None) if loss is None else loss
    auto = procedures.default_selection(importance)
    by_latency = target_latency is not None
    config = select.SelectionConfig(
        mode=mode, normalize=auto["normalize"] if normalize == "auto" else normalize, lam=lam,
        beta=auto["beta"] if beta is None else beta, min_channels=min_channels,
        round_to=("auto" if by_latency else 1) if round_to is None else round_to,
        ignored_layers=layer_names(ignored_layers),
        cost=("latency" if by_latency else "macs") if cost is None else cost,
    )  # fmt: skip
    latency = latency_model
    if latency is None and (by_latency or config.cost == "latency" or config.round_to == "auto"):
        latency = LatencyModel(model, dtype=latency_dtype, num_threads=latency_threads)
    original_latency = latency.predict() if by_latency else None
    original_macs, original_params = count_macs(model), count_params(model)
    history = []
    current = model
    source = optimizer if isinstance(optimizer, keras.optimizers.Optimizer) else None
    slots = optimizer_state.optimizer_slots(source, model) if carry_optimizer else {}
    iterations = int(source.iterations.numpy()) if source is not None and slots else 0
    for r in range(1, rounds + 1):
        gated = wrap(current)
        graph = ChannelGraph(gated)
        context = scoring_context(gated, data, loss, caller="prune", graph=graph,
                                  batch_size=batch_size, steps=steps)  # fmt: skip
        scores = score_all(context, [importance])[0]
        targets = {}
        if target_macs is not None:
            targets["target_macs"] = (1 - (1 - target_macs) * r / rounds) * original_macs
        if target_params is not None:
            targets["target_params"] = (1 - (1 - target_params) * r / rounds) * original_params
        if target_latency is not None:
            drop = max(original_latency - target_latency, 0.0)
            targets["target_latency"] = original_latency - drop * r / rounds
        masks = select.select_channels(graph, scores, {}, config, latency=latency, **targets)
        measured = None
        if target_latency is not None and r == rounds:  # one measured export, to confirm
            masks, measured = _confirm_latency(graph, scores, config, latency, targets, masks)
        shift = None
        if mean_replacement:  # means measured with every channel still switched on
            means = gate_input_means(gated, data, batch_size=batch_size, steps=steps)
            shift = mean_replacement_shift(graph, masks, means)
        set_kept_channels(gated, {n: np.flatnonzero(m) for n, m in masks.items()}, graph=graph)
        current = compact(gated, graph=graph, bias_shift=shift)
        slots = optimizer_state.sliced_slots(gated, slots, graph, current) if slots else {}
        full = {g.name: np.ones(g.size, bool) for g in graph.prunable_groups}
        record = {
            "round": r,  # the gated model's MACs are the compact one's: no new graph
            "macs_fraction": macs_for(graph, {**full, **masks}) / original_macs,
            "params_fraction": current.count_params() / original_params,
        }
        if latency is not None:
            record["predicted_ms"] = latency.predict_plan(current)
        if measured is not None:
            record["latency_ms"] = measured
        if fine_tune_data is not None and fine_tune_epochs > 0:
            opt = optimizer_state.restore_optimizer(optimizer, current, slots, iterations)
            current.compile(optimizer=opt, loss=loss, metrics=metrics)
            start = time.perf_counter()
            fit = _fit(current, fine_tune_data, fine_tune_epochs, validation_data, fit_kwargs)
            record["epoch_seconds"] = (time.perf_counter() - start) / fine_tune_epochs
            record.update({k: float(v[-1]) for k, v in fit.history.items()})
            if carry_optimizer:
                slots = optimizer_state.optimizer_slots(opt, current)
                iterations = int(opt.iterations.numpy())
        history.append(record)
        if verbose:
            extra = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in
                              ("round", "macs_fraction", "params_fraction",
                               "epoch_seconds", "predicted_ms", "latency_ms"))  # fmt: skip
            ms = "".join(f", {k} {record[k]:.3f}" for k in ("predicted_ms", "latency_ms")
                         if k in record)  # fmt: skip
            print(
                f"[prune] round {r}/{rounds}: MACs {record['macs_fraction']:.1%}, params "
                f"{record['params_fraction']:.1%}{ms}{', ' + extra if extra else ''}"
            )
    return PruneResult(current, history)


def _confirm_latency(graph, scores, config, latency, targets, masks, tries=2, tolerance=0.05):
    """Export and time the selected plan; when it misses the target by more than
    ``tolerance``, calibrate the table on it and select again (at most ``tries`` times).

    The calibration stays in this call: it goes into a copy of the table, so the caller's
    ``LatencyModel`` predicts the same before and after (a ``prune()`` call does not change
    the next one's plans)."""
    target = targets["target_latency"]
    latency = copy.copy(latency)  # add_point rebinds .points on the copy only
    for attempt in range(tries + 1):
        plan = {n: np.flatnonzero(m) for n, m in masks.items()}
        small = compact(graph.model, plan, graph=graph)
        measured = latency.measure(small)
        if abs(measured / target - 1) <= tolerance or attempt == tries:
            return masks, measured
        latency.add_point(latency.widths_of(small), measured)
        masks = select.select_channels(graph, scores, {}, config, latency=latency, **targets)
    return masks, measured


def _fit(model, data, epochs, validation_data, fit_kwargs):
    kwargs = dict(epochs=epochs, verbose=0, validation_data=validation_data)
    kwargs.update(fit_kwargs or {})
    if isinstance(data, tuple):
        return model.fit(data[0], data[1], **kwargs)
    return model.fit(data, **kwargs)
