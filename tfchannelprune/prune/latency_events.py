"""``ChannelPruning``'s latency target, met through a measured latency table (issue 19).

``ChannelPruning(target_latency=ms)`` builds a ``LatencyModel`` of the model when training
begins (micro-model timings cached on disk: a second fit re-times only the three calibration
exports), selects each event's channels through it (``select.select_channels(...,
target_latency=, latency=)``, as ``prune()`` does), records the table's prediction per event,
and times one measured export when training ends. No export per event.

``confirm_latency`` is ``prune()``'s confirming export at its last round: one measured
export of the selected plan, the table calibrated on it (a copy) when it misses.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np

from tfchannelprune.core.surgery import compact
from tfchannelprune.deploy import latency_measure
from tfchannelprune.deploy.latency_model import LatencyModel
from tfchannelprune.prune import select
from tfchannelprune.prune.schedules import PolynomialSchedule


class LatencyTarget:
    """A latency budget (ms) spent through a ``LatencyModel``.

    Args:
        target_ms: the LiteRT latency to reach, in ms; None: the table serves only
            ``cost="latency"`` / ``round_to="auto"``.
        threads: interpreter threads of the table built when none is given.
        table: a ``LatencyModel`` of the model to reuse, or None (built by `begin`).

    Raises:
        ImportError: no ``table`` is given and LiteRT is not installed (said now, before
            training, rather than when the table is built).
    """

    def __init__(self, target_ms: float | None, threads: int = 1, table=None):
        if table is None:
            latency_measure.require_litert()
        self.target_ms, self.threads, self.table = target_ms, threads, table
        self.original_ms: float | None = None
        self.predicted_ms: float | None = None

    def begin(self, model, verbose: int = 0) -> LatencyModel:
        """Build the table of ``model`` (wrapped or not) unless one was given; return it."""
        if self.table is None:
            self.table = LatencyModel(model, num_threads=self.threads, verbose=verbose)
        self.original_ms = self.table.predict()
        return self.table

    def target_at(self, progress: float) -> float:
        """The ms to get down to once ``progress`` (0..1) of the way to the target."""
        return self.original_ms - (self.original_ms - self.target_ms) * progress

    def predict(self, masks: Mapping[str, np.ndarray]) -> float:
        """The table's prediction (ms) with the groups at the widths of ``masks``."""
        widths = {n: int(np.asarray(m).sum()) for n, m in masks.items() if n in self.table.sizes}
        self.predicted_ms = self.table.predict(widths)
        return self.predicted_ms

    def reached(self, masks: Mapping[str, np.ndarray]) -> bool:
        if self.target_ms is None:
            return True
        return self.predict(masks) <= self.target_ms * (1 + 1e-9)

    def measure(self, model) -> float:
        """One measured export of ``model`` (compacted first when wrapped), in ms."""
        return self.table.measure(model)


def schedule_progress(schedule, event: int, num_events: int) -> float:
    """How far along the latency drop event ``event`` aims: 1 with "constant" (and with a
    tfmot-style schedule object, which then sets only when to prune), the polynomial's share
    of the drop after ``event`` of ``num_events`` events with "polynomial"."""
    if schedule != "polynomial":
        return 1.0
    return PolynomialSchedule(0.0, 1.0, 0, num_events)(min(event, num_events))[1]


def confirm_latency(graph, scores, config, latency, targets, masks, current, tries=2,
                     tolerance=0.05):
    """Export and time the selected plan; when it misses the target by more than
    ``tolerance``, calibrate the table on it and select again from the ``current`` masks
    (at most ``tries`` times).

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
        masks = select.select_channels(graph, scores, current, config, latency=latency,
                                       **targets)  # fmt: skip
    return masks, measured
