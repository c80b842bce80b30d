"""``prune()``: rounds of score -> remove -> fine-tune, without callbacks.

By default every round works on ONE wrapped model: a round switches channels off at the
gates, so the graph, the calibration pass and the training step are traced once for all the
rounds, and the model is compacted once, at the end (gated == compact makes it the model of
compacting after each round). The weights compaction would remove are set to 0 with their
optimizer slots, so they stay 0 through fine-tuning (gated off, their gradients are 0) and
weight criteria score the kept channels as on the compact model. ``compact_every_round=True``
(and ``mean_replacement``, which folds means into biases at each compaction) compacts after
every round and fine-tunes the smaller model, its optimizer slots sliced like the weights
(``prune.optimizer_state``).
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from tfchannelprune.core.batches import check_arrays, check_fits_model
from tfchannelprune.core.checks import check_finite, layer_names
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.cost import count_macs, count_params, macs_for, params_for
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import gate_masks, set_kept_channels
from tfchannelprune.core.surgery import compact, removed_entries
from tfchannelprune.core.wrap import wrap
from tfchannelprune.dead.gate_inputs import gate_input_means
from tfchannelprune.dead.mean_replacement import mean_replacement_shift
from tfchannelprune.deploy.latency_model import LatencyModel
from tfchannelprune.prune import optimizer_state, procedures, select
from tfchannelprune.prune.callback import _check_fraction
from tfchannelprune.prune.latency_events import confirm_latency
from tfchannelprune.saliency import registry
from tfchannelprune.saliency.collect import score_all
from tfchannelprune.saliency.importance import scoring_context
from tfchannelprune.saliency.train_step import TrainStepSaliency


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
    compact_every_round: bool = False,
    scoring: str = "auto",
    carry_optimizer: bool = True,
    batch_size: int = 32,
    steps: int | None = None,
    mode: str = "auto",
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
    """Prune ``model`` to a target in ``rounds`` rounds, fine-tuning after each.

    Args:
        model: a Functional or Sequential Keras model (not wrapped).
        data: calibration data for the signal ((x, y) arrays or a tf.data.Dataset).
        loss: the loss (for the signal and for fine-tuning); default: the model's compiled
            loss.
        target_macs / target_params: final fraction of the original MACs / params.
        rounds: number of prune -> fine-tune rounds; the target of round r is
            ``1 - (1 - target) * r / rounds`` (linear in the cost removed).
        signal: what ranks the channels: a signal name or id ("taylor", "fpgm" ...), an
            ``Importance`` object or a function ``fn(context) -> {group: scores}``.
        fine_tune_data: (x, y) or a dataset for ``fit``; None skips fine-tuning.
        optimizer: optimizer (name or instance). An instance already built for ``model``
            (e.g. the one it was trained with) hands its state to the first round.
        carry_optimizer: carry the optimizer's slots and iteration count from round to round
            (and through each compaction, sliced like the weights); False starts every round
            with a fresh optimizer state.
        mean_replacement: fold each removed channel's mean output over ``data`` into its
            consumers' biases (Evci's mean replacement) instead of dropping it; the rounds
            then compact after each round.
        compact_every_round: compact the model after each round and fine-tune the smaller
            model (a new graph, calibration step and training step each round) instead of
            pruning one gated model at the gates and compacting it at the end (the default:
            the same channels and weights, fewer traces, fine-tuning at full width).
        scoring: how the rounds after the first score a mask_delta signal ("taylor",
            "fisher"): "calibration" scores ``data`` every round; "fine_tuning" reads the
            signal as the previous round's fine-tuning steps accumulated it (Molchanov's
            procedure: no calibration pass after round 1, the fit's own backward pass
            computes it, ``TrainStepSaliency``); "auto" takes
            ``prune.procedures.DEFAULT_SCORING`` where "fine_tuning" can run (such a
            signal, fine-tuning, gated rounds), else "calibration".
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
            ``target_latency``, else "macs". ``mode="auto"``, ``normalize="auto"`` and
            ``beta=None`` take the same defaults as ``ChannelPruning``
            (``prune.procedures.resolve_selection``).
        verbose: 1 prints a line per round.

    Returns:
        ``PruneResult(model, history)``: the compact model (compiled with the carried optimizer
        when fine-tuned); each record has the round's ``macs_fraction``,
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
    if isinstance(fine_tune_data, (tuple, list)):  # before round 1; fit reads a dataset
        check_arrays(tuple(fine_tune_data), "fine_tune_data")
        check_fits_model(model, fine_tune_data[0], "fine_tune_data")
        check_finite(tuple(fine_tune_data), "fine_tune_data", "fine-tuning on it would "
                     "turn the weights (and every later round's scores) into NaN")
    importance = registry.get(signal)
    scoring = procedures.resolve_scoring(
        scoring, importance, fine_tune_data is not None and fine_tune_epochs > 0,
        not (mean_replacement or compact_every_round))  # fmt: skip
    loss = getattr(model, "loss", None) if loss is None else loss
    by_latency = target_latency is not None
    config = select.SelectionConfig(
        **procedures.resolve_selection(importance, mode, normalize, beta, lam),
        min_channels=min_channels,
        round_to=("auto" if by_latency else 1) if round_to is None else round_to,
        ignored_layers=layer_names(ignored_layers),
        cost=("latency" if by_latency else "macs") if cost is None else cost,
    )  # fmt: skip
    latency = latency_model
    if latency is None and (by_latency or config.cost == "latency" or config.round_to == "auto"):
        latency = LatencyModel(model, dtype=latency_dtype, num_threads=latency_threads)
    run = _Run(
        importance=importance, data=data, loss=loss, config=config, latency=latency,
        rounds=rounds, final=dict(target_macs=target_macs, target_params=target_params,
                                  target_latency=target_latency),
        original=dict(macs=count_macs(model), params=count_params(model),
                      latency=latency.predict() if by_latency else None),
        tuning=dict(data=fine_tune_data, epochs=fine_tune_epochs, optimizer=optimizer,
                    metrics=metrics, validation_data=validation_data, fit_kwargs=fit_kwargs),
        carry_optimizer=carry_optimizer, batch_size=batch_size, steps=steps, verbose=verbose,
        scoring=scoring,
    )  # fmt: skip
    source = optimizer if isinstance(optimizer, keras.optimizers.Optimizer) else None
    slots = optimizer_state.optimizer_slots(source, model) if carry_optimizer else {}
    iterations = int(source.iterations.numpy()) if source is not None and slots else 0
    if mean_replacement or compact_every_round:
        current, history = _compact_rounds(run, model, slots, iterations, mean_replacement)
    else:
        current, history = _gated_rounds(run, model, slots, iterations)
    return PruneResult(current, history)


@dataclasses.dataclass
class _Run:
    """What the rounds of one ``prune()`` call share."""

    importance: object
    data: object
    loss: object
    config: select.SelectionConfig
    latency: object
    rounds: int
    final: dict  # target_macs, target_params (fractions), target_latency (ms), None if not set
    original: dict  # macs, params, latency of the model given
    tuning: dict  # data, epochs, optimizer, metrics, validation_data, fit_kwargs
    carry_optimizer: bool
    batch_size: int
    steps: int | None
    verbose: int
    scoring: str = "calibration"  # or "fine_tuning": rounds 2.. read the fit's own steps

    def in_step(self, gated, graph):
        """With ``scoring="fine_tuning"``: the run's signal as a ``TrainStepSaliency``
        installed in ``gated``'s training step (rounds 2.. read what the previous round's
        fine-tuning accumulated); else None."""
        if self.scoring != "fine_tuning":
            return None
        criterion = TrainStepSaliency(signal=self.importance.signal)
        criterion.build(scoring_context(gated, None, self.loss, caller="prune", graph=graph))
        return criterion

    @property
    def fine_tunes(self) -> bool:
        return self.tuning["data"] is not None and self.tuning["epochs"] > 0

    def targets(self, r: int) -> dict:
        """Round ``r``'s absolute targets (linear in the cost removed)."""
        out, share = {}, r / self.rounds
        for name, key in (("target_macs", "macs"), ("target_params", "params")):
            if self.final[name] is not None:
                out[name] = (1 - (1 - self.final[name]) * share) * self.original[key]
        if self.final["target_latency"] is not None:
            drop = max(self.original["latency"] - self.final["target_latency"], 0.0)
            out["target_latency"] = self.original["latency"] - drop * share
        return out

    def select(self, graph, context, r: int, importance=None):
        """Score the context (with ``importance``, default the run's) and choose round ``r``'s
        masks: (masks, measured ms or None)."""
        scores = score_all(context, [importance or self.importance])[0]
        targets = self.targets(r)
        masks = select.select_channels(graph, scores, context.masks, self.config,
                                       latency=self.latency, **targets)  # fmt: skip
        if "target_latency" in targets and r == self.rounds:  # one measured export, to confirm
            return confirm_latency(graph, scores, self.config, self.latency, targets, masks,
                                   context.masks)  # fmt: skip
        return masks, None

    def record(self, r: int, graph, masks, measured) -> dict:
        """The round's record; ``masks`` every prunable group's keep mask after the round."""
        record = {
            "round": r,
            "macs_fraction": macs_for(graph, masks) / self.original["macs"],
            "params_fraction": params_for(graph, masks) / self.original["params"],
        }
        if self.latency is not None:
            record["predicted_ms"] = self.latency.predict_plan(
                {n: np.flatnonzero(m) for n, m in masks.items()})
        if measured is not None:
            record["latency_ms"] = measured
        return record

    def fine_tune(self, model, record: dict) -> None:
        """Fit ``model`` (compiled) for the round; the time and last metrics go to ``record``."""
        epochs = self.tuning["epochs"]
        start = time.perf_counter()
        fit = _fit(model, self.tuning["data"], epochs, self.tuning["validation_data"],
                   self.tuning["fit_kwargs"])  # fmt: skip
        record["epoch_seconds"] = (time.perf_counter() - start) / epochs
        record.update({k: float(v[-1]) for k, v in fit.history.items()})

    def compile(self, model, slots, iterations):
        """Compile ``model`` with the optimizer (its state from ``slots``); return it."""
        opt = optimizer_state.restore_optimizer(self.tuning["optimizer"], model, slots,
                                                iterations)  # fmt: skip
        model.compile(optimizer=opt, loss=self.loss, metrics=self.tuning["metrics"])
        return opt

    def report(self, record: dict) -> None:
        if not self.verbose:
            return
        shown = ("round", "macs_fraction", "params_fraction", "epoch_seconds", "predicted_ms",
                 "latency_ms")  # fmt: skip
        extra = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in shown)
        ms = "".join(f", {k} {record[k]:.3f}" for k in ("predicted_ms", "latency_ms")
                     if k in record)  # fmt: skip
        print(
            f"[prune] round {record['round']}/{self.rounds}: MACs {record['macs_fraction']:.1%}, "
            f"params {record['params_fraction']:.1%}{ms}{', ' + extra if extra else ''}"
        )


@dataclasses.dataclass
class _Gated:
    """The one wrapped model the gated rounds share, and what goes with it."""

    model: keras.Model
    graph: ChannelGraph
    opt: object  # the compiled optimizer, None without fine-tuning
    fresh: list  # its variables' first values (carry_optimizer=False restores them)
    in_step: object  # TrainStepSaliency fed by the fits (scoring="fine_tuning"), or None
    accumulators: dict = dataclasses.field(default_factory=dict)  # the calibration pass's
    zeroed: dict = dataclasses.field(default_factory=dict)  # entries set to 0 so far


def _gated_rounds(run: _Run, model, slots, iterations):
    """Every round on ONE wrapped model: its graph, its scoring step (traced once) and its
    training step (traced once) serve all the rounds; a round switches channels off at the
    gates and sets the weights that compaction would remove (and their optimizer slots) to 0,
    so that they stay 0 through fine-tuning and weight criteria score the channels as on the
    compact model. The model is compacted once, at the end."""
    gated = wrap(model)
    graph = ChannelGraph(gated)
    opt = run.compile(gated, slots, iterations) if run.fine_tunes else None
    state = _Gated(gated, graph, opt, [np.asarray(v) for v in opt.variables] if opt else [],
                   run.in_step(gated, graph))  # fmt: skip
    history = []
    try:
        for r in range(1, run.rounds + 1):
            history.append(_gated_round(run, r, state))
            run.report(history[-1])
    finally:
        if state.in_step is not None:
            state.in_step.release()
    small = compact(gated, graph=graph)
    if opt is not None:  # the compact model goes on with the optimizer's state
        sliced = optimizer_state.sliced_slots(gated, optimizer_state.optimizer_slots(opt, gated),
                                              graph, small)  # fmt: skip
        run.compile(small, sliced, int(opt.iterations.numpy()))
    return small, history


def _gated_round(run: _Run, r: int, s: _Gated) -> dict:
    """Round ``r`` of ``_gated_rounds``: score, switch off, zero, fine-tune; the record."""
    if s.in_step is not None and r > 1:  # the previous round's fine-tuning steps scored it
        context = scoring_context(s.model, None, run.loss, caller="prune", graph=s.graph)
        masks, measured = run.select(s.graph, context, r, importance=s.in_step)
    else:
        context = scoring_context(s.model, run.data, run.loss, caller="prune", graph=s.graph,
                                  batch_size=run.batch_size, steps=run.steps,
                                  accumulators=s.accumulators)  # fmt: skip
        masks, measured = run.select(s.graph, context, r)
    set_kept_channels(s.model, {n: np.flatnonzero(m) for n, m in masks.items()}, graph=s.graph)
    masks = gate_masks(s.graph)
    s.zeroed = _zero_removed(s.model, s.graph, masks, s.opt, s.zeroed)
    record = run.record(r, s.graph, masks, measured)
    if s.opt is not None:
        if not run.carry_optimizer and r > 1:  # a fresh optimizer's state, same step
            for variable, value in zip(s.opt.variables, s.fresh, strict=True):
                variable.assign(value)
        if s.in_step is not None:
            s.in_step.reset()  # the next round's scores: this round's steps only
        run.fine_tune(s.model, record)
    return record


def _zero_removed(gated, graph, masks, opt, zeroed: dict) -> dict:
    """Set to 0 the weights (and optimizer slots) that compacting with ``masks`` removes, in
    the variables whose removed entries changed since ``zeroed`` (a zero entry stays 0: its
    gradient and slots are 0); return the removed entries now."""
    removed = removed_entries(graph, masks)
    changed = {p: m for p, m in removed.items() if not np.array_equal(m, zeroed.get(p))}
    optimizer_state.zero_entries(gated, opt, changed)
    return removed


def _compact_rounds(run: _Run, model, slots, iterations, mean_replacement: bool):
    """Each round wraps the current model, prunes it, compacts it and fine-tunes the compact
    model (``compact_every_round=True``; always with ``mean_replacement``)."""
    current, history = model, []
    for r in range(1, run.rounds + 1):
        gated = wrap(current)
        graph = ChannelGraph(gated)
        context = scoring_context(gated, run.data, run.loss, caller="prune", graph=graph,
                                  batch_size=run.batch_size, steps=run.steps)  # fmt: skip
        masks, measured = run.select(graph, context, r)
        shift = None
        if mean_replacement:  # means measured with every channel still switched on
            means = gate_input_means(gated, run.data, batch_size=run.batch_size, steps=run.steps)
            shift = mean_replacement_shift(graph, masks, means)
        set_kept_channels(gated, {n: np.flatnonzero(m) for n, m in masks.items()}, graph=graph)
        current = compact(gated, graph=graph, bias_shift=shift)
        slots = optimizer_state.sliced_slots(gated, slots, graph, current) if slots else {}
        record = run.record(r, graph, gate_masks(graph), measured)
        record["params_fraction"] = current.count_params() / run.original["params"]  # a bias
        if run.fine_tunes:
            opt = run.compile(current, slots, iterations)
            run.fine_tune(current, record)
            if run.carry_optimizer:
                slots = optimizer_state.optimizer_slots(opt, current)
                iterations = int(opt.iterations.numpy())
        history.append(record)
        run.report(record)
    return current, history


def _fit(model, data, epochs, validation_data, fit_kwargs):
    kwargs = dict(epochs=epochs, verbose=0, validation_data=validation_data)
    kwargs.update(fit_kwargs or {})
    if isinstance(data, tuple):
        return model.fit(data[0], data[1], **kwargs)
    return model.fit(data, **kwargs)
