"""Latency as the selection's cost: the predicted ms a removal saves, from a `LatencyModel`.

``select.select_channels`` spends a latency budget with it (``target_latency``), prices the
cost term per millisecond (``cost="latency"``: Molchanov's lambda, Theis's beta and beta*) and
takes its width steps from the table (``round_to="auto"``: widths where a narrower one is not
faster are skipped, as in NetAdapt's and HALP's latency tables).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import numpy as np


class LatencyCosts:
    """Predicted total ms and ms saved per removal, kept up to date as groups shrink.

    Args:
        latency: a ``tfchannelprune.deploy.latency_model.LatencyModel`` of the model (or of
            the model this one was compacted from: groups are matched by name, widths by count).
        graph: the ``ChannelGraph`` being pruned.
        masks: {group: keep mask} now.
    """

    def __init__(self, latency, graph, masks: Mapping[str, np.ndarray]):
        self.latency = latency
        self.widths = {g.name: _kept(masks, g) for g in graph.prunable_groups
                       if g.name in latency.sizes}  # fmt: skip
        self._saved: dict[tuple[str, int], float] = {}
        self._allowed: dict[str, list[int]] = {}

    @property
    def total(self) -> float:
        return self.latency.predict(self.widths)

    def saved(self, name: str, unit: int) -> float:
        """Predicted ms saved by removing ``unit`` more channels of ``name``."""
        if name not in self.widths:
            return 0.0
        key = (name, unit)
        if key not in self._saved:
            now = self.widths[name]
            before = self.latency.group_ms(name, self.widths)
            after = self.latency.group_ms(name, {**self.widths, name: max(now - unit, 0)})
            self._saved[key] = before - after
        return self._saved[key]

    def update(self, name: str, masks) -> None:
        if name not in self.widths:
            return
        self.widths[name] = int(np.asarray(masks[name]).sum())
        stale = self.latency.neighbours(name) | {name}
        self._saved = {k: v for k, v in self._saved.items() if k[0] not in stale}

    def next_width(self, name: str, kept: int) -> int | None:
        """The widest table-chosen width below ``kept`` (``round_to="auto"``), or None."""
        if name not in self.widths:
            return kept - 1 if kept > 1 else None
        if name not in self._allowed:
            self._allowed[name] = self.latency.allowed_widths(name)
        allowed = self._allowed[name]
        i = bisect.bisect_left(allowed, kept)
        return allowed[i - 1] if i > 0 else None

    def snap_up(self, name: str, width: int) -> int:
        """The narrowest table-chosen width >= ``width`` (``round_to="auto"``, local mode)."""
        if name not in self.widths:
            return width
        if name not in self._allowed:
            self._allowed[name] = self.latency.allowed_widths(name)
        allowed = self._allowed[name]
        i = bisect.bisect_left(allowed, width)
        return allowed[i] if i < len(allowed) else width

    def largest_channel_ms(self, names) -> float:
        """The largest ms one channel saves in the unpruned model (Molchanov's normaliser
        in latency units), as the mean over each group's full width."""
        full = dict.fromkeys(self.latency.sizes, None)
        values = [self.latency.group_ms(n, {}) / max(self.latency.sizes[n], 1)
                  for n in names if n in full]  # fmt: skip
        return max(values, default=1.0) or 1.0


def _kept(masks, group) -> int:
    return int(np.asarray(masks[group.name]).sum()) if group.name in masks else group.size
