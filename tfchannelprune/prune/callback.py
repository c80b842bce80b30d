"""``ChannelPruning``: a ``model.fit`` callback that prunes a wrapped model between updates.

The procedure is the papers' (Molchanov et al. 2017, arXiv:1611.06440; Theis et al. 2018,
arXiv:1801.05787): without calibration data, Taylor and Fisher are accumulated inside ``fit``'s
own training steps (``saliency.train_step``), and each event removes a few channels (by
default the same fraction from every group, ``prune.procedures``) and resets the sums, until the target is reached.

The state lives in the model: the gates (saved with the model and in checkpoints) and the
optimizer's iteration counter or the epoch number (the clock). Sums accumulated since the last
event are not saved: resume from a model saved right after an event (at an epoch end with
``frequency="epoch"``) and pruning goes on exactly where it stopped.

Example:
    >>> gated = tfchannelprune.wrap(model)
    >>> gated.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> pruning = tfchannelprune.ChannelPruning(target_macs=0.5, frequency="step", prune_every=20)
    >>> gated.fit(x, y, epochs=10, callbacks=[pruning])
    >>> small = tfchannelprune.compact(gated)
"""

from __future__ import annotations

import keras
import numpy as np

from tfchannelprune.core.checks import layer_names
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.cost import macs_for, params_for
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import gate_masks, set_kept_channels
from tfchannelprune.core.wrap import gated_model
from tfchannelprune.deploy import latency_measure
from tfchannelprune.prune import procedures, reporting, resume, select
from tfchannelprune.prune.latency_events import LatencyTarget, schedule_progress
from tfchannelprune.prune.schedules import PolynomialSchedule, target_fraction
from tfchannelprune.saliency import registry
from tfchannelprune.saliency.collect import score_all
from tfchannelprune.saliency.importance import SignalImportance, scoring_context
from tfchannelprune.saliency.train_step import TrainStepSaliency


def _check_fraction(name, value):
    if value is None:
        return
    if not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"{name} is a fraction of the original model's cost, in (0, 1]. "
            f"Received: {name}={value!r}"
        )


class ChannelPruning(keras.callbacks.Callback):
    """Greedy channel pruning between fine-tuning updates (Molchanov 2017, Theis 2018).

    Args:
        data: optional calibration data for the signal: (x, y) arrays, a tf.data.Dataset or
            a keras.utils.PyDataset (see ``tfchannelprune.core.batches``), scored in a pass
            of its own at each event. None (the default): "taylor", "fisher" and other
            ``mask_delta`` signals are accumulated in the training steps between events;
            criteria that read only the weights ("l1_weight", "fpgm", ...) need nothing.
        loss: loss for the signal; default: the model's compiled loss.
        signal: what ranks the channels: a signal name or id (``tfchannelprune.signals``),
            e.g. "taylor", "fisher", "l1_weight", "fpgm", "random"; an ``Importance``; or a
            function ``fn(context) -> {group: scores}`` (see ``tfchannelprune.Importance``).
        target_macs / target_params: fraction of the original MACs / params to reach, in (0, 1].
        target_channels: number of prunable channels to keep in total (alternative target).
        target_latency: LiteRT latency to reach, in milliseconds (batch 1, float32,
            ``latency_threads`` threads, XNNPACK), met through a measured latency table
            (``latency_model``, or a ``tfchannelprune.LatencyModel`` built when training begins,
            cached on disk): each event selects channels to the table's prediction
            (``predicted_ms`` in the history), and ONE export is timed when training ends
            (``final_latency_ms``). ``round_to`` defaults to "auto" and the cost term (``lam``,
            ``beta``) is priced per ms with it. ``measure_latency()`` times an export now.
        prune_every: prune every this many epochs (``frequency="epoch"``) or steps
            (``frequency="step"``).
        schedule: "constant" (aim at the final target from the first event, removing
            ``channels_per_step`` at most each time), "polynomial" (target decays to the final
            one over ``num_events`` events), or a tfmot-style schedule object
            ``schedule(step) -> (should_prune, sparsity)`` evaluated on optimizer steps.
        num_events: events over which "polynomial" reaches the final target.
        channels_per_step: remove at most this many channels per event (Molchanov and Theis
            remove one every N updates); "auto" (default): 5% of the prunable channels with
            the "constant" schedule, no cap with another schedule (it sets the pace); None:
            no cap, i.e. one-shot down to the schedule's target.
        steps: batches of ``data`` scored per event (None: all); formerly
            ``calibration_steps``.
        batch_size: batch size for array ``data``.
        mode, normalize, lam, beta, min_channels, round_to, ignored_layers: see
            ``tfchannelprune.SelectionConfig``. ``mode="auto"``, ``normalize="auto"`` and
            ``beta=None`` take the default chosen on a benchmark (issue 18,
            ``prune.procedures.default_selection``); a cost term or a named normalisation
            makes ``mode="auto"`` global.
        monitor: metric from ``logs`` recorded with each event (e.g. "val_accuracy").
        history_path: ``.csv`` or ``.json`` file written after every event.
        log_dir: TensorBoard directory for MACs, params and channels.
        verbose: 1 prints a progress line per event.
    """

    @keyword_only("loss", "signal", renamed={"calibration_steps": "steps"})
    def __init__(
        self,
        data=None,
        *,
        loss=None,
        signal="taylor",
        target_macs: float | None = None,
        target_params: float | None = None,
        target_channels: int | None = None,
        target_latency: float | None = None,
        latency_threads: int = 1,
        latency_model=None,
        prune_every: int = 1,
        frequency: str = "epoch",
        schedule="constant",
        num_events: int = 5,
        channels_per_step: int | str | None = "auto",
        steps: int | None = None,
        batch_size: int = 32,
        mode: str = "auto",
        normalize: str = "auto",
        lam: float = 0.0,
        beta: float | str | None = None,
        min_channels: int = 1,
        round_to: int | str | None = None,
        ignored_layers=(),
        monitor: str | None = None,
        history_path: str | None = None,
        log_dir: str | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        _check_fraction("target_macs", target_macs)
        _check_fraction("target_params", target_params)
        targets = (target_macs, target_params, target_channels, target_latency)
        if all(t is None for t in targets):
            raise ValueError(
                "Give a target: target_macs or target_params (fractions of the original "
                "model), target_channels or target_latency (ms). Received: none"
            )
        if target_latency is not None and not target_latency > 0:
            raise ValueError(f"target_latency is in milliseconds, > 0. Received: {target_latency}")
        if frequency not in ("epoch", "step"):
            raise ValueError(f"frequency must be 'epoch' or 'step'. Received: {frequency!r}")
        if prune_every < 1:
            raise ValueError(f"prune_every must be >= 1. Received: prune_every={prune_every}")
        if isinstance(schedule, str) and schedule not in ("constant", "polynomial"):
            raise ValueError(
                "schedule must be 'constant', 'polynomial' or a tfmot-style schedule object. "
                f"Received: schedule={schedule!r}"
            )
        self.importance = registry.get(signal)
        if data is None and isinstance(self.importance, SignalImportance):
            if self.importance.signal.kind == "mask":  # the papers' way: in the train step
                self.importance = TrainStepSaliency(signal=self.importance.signal)
        self._in_step = bool(getattr(self.importance, "in_step", False))
        fed_by_data = self.importance.accumulated and not self._in_step
        if data is None and (self.importance.needs_data or fed_by_data):
            raise ValueError(
                f"Signal {self.importance.name!r} needs calibration data; give data=(x, y) or "
                f"a dataset, or a criterion that reads only the weights (e.g. 'fpgm'). "
                f"Received: data=None, signal={signal!r}"
            )
        self.data, self.loss, self.signal = data, loss, signal
        self.target_macs, self.target_params = target_macs, target_params
        self.target_channels = target_channels
        self.target_latency, self.latency_threads = target_latency, latency_threads
        self.latency_model, self.final_latency_ms = latency_model, None
        self.prune_every, self.frequency = prune_every, frequency
        self.schedule, self.num_events = schedule, num_events
        procedures.channels_per_event(channels_per_step, 1)  # validates
        self.channels_per_step = channels_per_step
        self.steps, self.batch_size = steps, batch_size
        self.config = select.SelectionConfig(
            **procedures.resolve_selection(self.importance, mode, normalize, beta, lam),
            min_channels=min_channels, ignored_layers=layer_names(ignored_layers),
            round_to=(1 if target_latency is None else "auto") if round_to is None else round_to,
            cost="macs" if target_latency is None else "latency",
        )  # fmt: skip
        self._latency = None  # the table's side: prune.latency_events
        if target_latency is not None or self.config.round_to == "auto":
            self._latency = LatencyTarget(target_latency, latency_threads, latency_model)
        self.monitor, self.history_path, self.log_dir = monitor, history_path, log_dir
        self.verbose = verbose
        self.history: list[dict] = []
        self.done = False

    @classmethod
    @keyword_only("loss")
    def from_paper(cls, paper: str, data=None, **overrides) -> ChannelPruning:
        """The procedure of a paper: ``"molchanov2017"`` (Taylor, layer-wise L2, ``lam=1e-3``
        on normalised FLOPs) or ``"theis2018"`` (Fisher, unnormalised, ``beta="auto"``), both
        removing one channel every 10 training steps; ``overrides`` change any argument.

        Example:
            >>> tcp.ChannelPruning.from_paper("theis2018", target_macs=0.25, beta=1e-6)
        """
        return cls(data, **{**procedures.paper(paper), **overrides})

    # ------------------------------------------------------------------ set-up
    def on_train_begin(self, logs=None):
        resume.run_before_checkpoints(self)  # checkpoints then hold each event's result
        graph = ChannelGraph(gated_model(self.model, "ChannelPruning", copy=False))
        self.graph = graph
        self._accumulators = {}  # calibration passes traced once per fit, not per event
        self._cost_of = (None, None)  # (masks, their cost): the last one computed
        self.candidates = [g.name for g in select.candidate_groups(graph, self.config)]
        full = {g.name: np.ones(g.size, bool) for g in graph.prunable_groups}
        self.original_macs = macs_for(graph, full)
        self.original_params = params_for(graph, full)
        self.original_channels = sum(graph.group(n).size for n in self.candidates)
        self._check_reachable()
        if self._latency is not None:  # built once, its timings cached on disk
            self.latency_model = self._latency.begin(self.model, self.verbose)
        self._cap = procedures.channels_per_event(
            self.channels_per_step, self.original_channels, self.schedule
        )
        if self._in_step:  # installs itself in the model's train step
            self.importance.build(self._context(None))
        self._writer = None
        if self.log_dir:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        self.done = self._target_reached(gate_masks(graph))

    def _check_reachable(self):
        select.check_reachable(
            self.graph, self.config, self.candidates,
            {"target_macs": self.target_macs, "target_params": self.target_params,
             "target_channels": self.target_channels},
            {"macs": self.original_macs, "params": self.original_params},
        )  # fmt: skip

    def on_train_end(self, logs=None):
        if self.target_latency is not None and hasattr(self, "graph"):  # the one export
            self.final_latency_ms = self._latency.measure(self.model)
        resume.report_target_not_reached(self)
        release = getattr(self.importance, "release", None)
        if release is not None:
            release()

    def _context(self, epoch):
        return scoring_context(
            self.model, self.data, self.loss or self.model.loss, caller="ChannelPruning",
            graph=self.graph, steps=self.steps, batch_size=self.batch_size, epoch=epoch,
            step=int(self.model.optimizer.iterations.numpy()), accumulators=self._accumulators,
        )  # fmt: skip

    # ------------------------------------------------------------------ the clock
    def on_epoch_end(self, epoch, logs=None):
        if self.frequency == "epoch" and (epoch + 1) % self.prune_every == 0:
            self._event((epoch + 1) // self.prune_every, epoch, logs)
        self._log_state(logs)

    def on_train_batch_end(self, batch, logs=None):
        if self.frequency != "step" and isinstance(self.schedule, str):
            return
        step = int(self.model.optimizer.iterations.numpy())
        if not isinstance(self.schedule, str):
            self._event(step, None, logs)
        elif step % self.prune_every == 0:
            self._event(step // self.prune_every, None, logs)

    def _fraction_now(self, event: int) -> tuple[bool, float | None]:
        final = self.target_macs if self.target_macs is not None else self.target_params
        if not isinstance(self.schedule, str):
            step = int(self.model.optimizer.iterations.numpy())
            return target_fraction(self.schedule, step)
        if final is None:
            return True, None
        if self.schedule == "polynomial":
            # event k of n reaches t = k / n, so the first event already prunes
            poly = PolynomialSchedule(0.0, 1 - final, 0, self.num_events)
            return True, 1 - poly(min(event, self.num_events))[1]
        return True, final

    # ------------------------------------------------------------------ one event
    def _event(self, event: int, epoch, logs):
        if self.done:
            return
        should_prune, fraction = self._fraction_now(event)
        if not should_prune:
            return
        masks = gate_masks(self.graph)
        before = self._channels_kept(masks)
        if self._in_step and not self.importance.num_examples:
            return  # no training step since the last event
        scores = score_all(self._context(epoch), [self.importance])[0]
        if self._in_step:
            self.importance.reset()
        kwargs, cap = self._targets(fraction, masks, event)
        new_masks = select.select_channels(
            self.graph, scores, masks, self.config, max_channels=cap, latency=self.latency_model,
            **kwargs,
        )
        plan = {n: np.flatnonzero(m) for n, m in new_masks.items()}
        set_kept_channels(self.model, plan, graph=self.graph)
        masks = {**masks, **new_masks}
        self.done = self._target_reached(masks)
        record = self._record(event, epoch, masks, before, logs)
        self._write(record)

    def measure_latency(self) -> float:
        """Median LiteRT latency (ms) of the model compacted as it stands."""
        return latency_measure.exported_latency_ms(self.model, self.latency_threads)

    def _targets(self, fraction, masks, event) -> tuple[dict, int | None]:
        """Absolute targets for this event, and the cap on channels removed now."""
        kwargs = {}
        if self.target_latency is not None:
            progress = schedule_progress(self.schedule, event, self.num_events)
            kwargs["target_latency"] = self._latency.target_at(progress)
        if self.target_macs is not None:
            kwargs["target_macs"] = fraction * self.original_macs
        if self.target_params is not None:
            share = fraction if self.target_macs is None else self.target_params
            kwargs["target_params"] = share * self.original_params
        cap = self._cap
        if self.target_channels is not None:
            extra = max(0, self._channels_kept(masks) - self.target_channels)
            cap = extra if cap is None else min(cap, extra)
        return kwargs, cap

    def _all_masks(self, masks) -> dict:
        """Keep masks of every prunable group, ``masks`` on top of all-kept."""
        return {**{g.name: np.ones(g.size, bool) for g in self.graph.prunable_groups}, **masks}

    def _channels_kept(self, masks) -> int:
        return sum(
            int(masks[n].sum()) if n in masks else self.graph.group(n).size
            for n in self.candidates
        )

    def _target_reached(self, masks) -> bool:
        full = self._all_masks(masks)
        ok = self._latency is None or self._latency.reached(full)
        if self.target_macs is not None:
            ok &= macs_for(self.graph, full) <= self.target_macs * self.original_macs
        if self.target_params is not None:
            ok &= params_for(self.graph, full) <= self.target_params * self.original_params
        if self.target_channels is not None:
            ok &= self._channels_kept(masks) <= self.target_channels
        return bool(ok)

    # ------------------------------------------------------------------ reporting
    def _cost(self, masks) -> dict:
        key = b"".join(np.asarray(masks[n], bool).tobytes() for n in sorted(masks))
        if self._cost_of[0] == key:  # e.g. the epoch end right after an event
            return dict(self._cost_of[1])
        full = self._all_masks(masks)
        macs, params = macs_for(self.graph, full), params_for(self.graph, full)
        cost = {"macs": macs, "macs_fraction": macs / max(self.original_macs, 1),
                "params": params, "params_fraction": params / max(self.original_params, 1)}  # fmt: skip
        self._cost_of = (key, cost)
        return dict(cost)

    def _record(self, event, epoch, masks, before, logs) -> dict:
        step = int(self.model.optimizer.iterations.numpy())
        record = reporting.event_record(
            event, epoch, step, self._cost(masks), self._channels_kept(masks), before,
            self.original_channels, self.done,
        )  # fmt: skip
        if self.target_latency is not None:
            record["predicted_ms"] = self._latency.predicted_ms
        if self.monitor and logs and self.monitor in logs:
            record[self.monitor] = float(logs[self.monitor])
        self.history.append(record)
        if self.verbose:
            print(reporting.progress_line(record, self.original_channels, self.monitor))
        return record

    def _log_state(self, logs):
        if logs is None or not hasattr(self, "graph"):
            return
        masks = gate_masks(self.graph)
        cost = self._cost(masks)
        logs["macs"], logs["params"] = float(cost["macs"]), float(cost["params"])
        logs["channels_removed"] = float(self.original_channels - self._channels_kept(masks))

    def _write(self, record):
        if self.history_path:
            reporting.write_history(self.history_path, self.history)
        if self._writer is not None:
            reporting.write_scalars(self._writer, record)
