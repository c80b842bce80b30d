"""``DeadChannelMonitor``: dead and non-learning channels recorded during ``model.fit``.

No extra pass over the data: for the duration of ``fit`` the monitor adds a training-step hook
(``_keras.add_train_step_hook``, stacked with the other features' hooks) that records the gate
inputs, and the train function is re-traced once, so every train step also folds them into
running per-channel statistics (count, mean, M2, max |a|) held in ``tf.Variable``s. At the end
of each epoch it reads them (the channels constant over the whole epoch are dead), compares the
channels' parameters with their values at the start of the epoch (non-learning channels) and
resets them.

Costs (docs/dead.md has the measurement): one re-trace of the train function per ``fit``, and
per step, for each gate, a mean and a sum of squares over the batch and four small variable
updates; a copy of the producers' weights per epoch.

Caveats: the statistics are those of training-mode activations (BatchNorm with batch
statistics, Dropout active) under weights that change during the epoch; a channel constant
under both is dead, but for exact removal run ``find_dead_channels`` on the final model.
Validation passes are not recorded (only the train step carries the hook).

Example:
    >>> gated = tfchannelprune.wrap(model)
    >>> gated.compile("adam", "sparse_categorical_crossentropy")
    >>> monitor = DeadChannelMonitor()
    >>> gated.fit(x, y, epochs=5, callbacks=[monitor])
    >>> monitor.history[-1]["dead"], print(monitor.report)
"""

from __future__ import annotations

import keras
import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.gate import record_gate_inputs
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.wrap import gated_model
from tfchannelprune.dead import non_learning
from tfchannelprune.dead.detect import DeadReport, build_report
from tfchannelprune.dead.gate_inputs import GateStatistics


class DeadChannelMonitor(keras.callbacks.Callback):
    """Records dead channels (constant gate input over an epoch) and non-learning channels
    (parameters that moved by <= ``move_tol`` relative over the epoch) while a wrapped model
    trains.

    Args:
        tol: variance threshold of a dead channel.
        move_tol: relative weight change below which a channel is non-learning.
        verbose: 1 (the default) prints one line per epoch; 0 is silent.

    Attributes:
        history: one dict per epoch: epoch, dead ({group: channels}), num_dead,
            non_learning ({group: channels}), macs_saved (by removing the dead ones).
        report: the ``DeadReport`` of the last epoch.

    Adds ``dead_channels`` and ``non_learning_channels`` to the epoch logs.

    Raises:
        ValueError: (at the start of ``fit``) when the model has no ChannelGate layers.
    """

    @keyword_only("tol", "move_tol", "verbose")
    def __init__(self, *, tol: float = 1e-6, move_tol: float = 1e-3, verbose: int = 1):
        super().__init__()
        if not tol >= 0 or not move_tol >= 0:
            raise ValueError(
                f"tol and move_tol must be >= 0. Received: tol={tol!r}, move_tol={move_tol!r}"
            )
        self.tol, self.move_tol, self.verbose = tol, move_tol, verbose
        self.history: list[dict] = []
        self.report: DeadReport | None = None
        self._handle = None

    def on_train_begin(self, logs=None):
        gated_model(self.model, "DeadChannelMonitor", copy=False)
        self.graph = ChannelGraph(self.model)
        self.stats = GateStatistics(self.model, self.graph)
        self._slices = non_learning.channel_parameters(self.graph)
        self._handle = _keras.add_train_step_hook(self.model, self._hook)

    def _hook(self, step):
        """The training-step hook: ``step`` with every gate input folded into the stats."""

        def hooked(data):
            with record_gate_inputs(self.stats.hook):
                return step(data)

        return hooked

    def on_epoch_begin(self, epoch, logs=None):
        self.stats.reset()
        self.stats.active.assign(True)
        self._start = non_learning.snapshot(self._slices)

    def on_epoch_end(self, epoch, logs=None):
        moments = self.stats.result()
        movement = non_learning.weight_movement(self.graph, self._slices, self._start)
        flagged = non_learning.flag(movement, None, self.move_tol, 0.0)
        report = build_report(
            self.graph, moments, self.tol, self._examples(moments), self.model.name, flagged,
            movement,
        )  # fmt: skip
        self.report = report
        dead = report.dead_channels()
        record = {
            "epoch": int(epoch),
            "dead": dead,
            "num_dead": len(report.dead),
            "non_learning": {g: list(c) for g, c in flagged.items()},
            "macs_saved": int(report.macs - report.macs_after),
        }
        self.history.append(record)
        if logs is not None:
            logs["dead_channels"] = float(record["num_dead"])
            logs["non_learning_channels"] = float(sum(len(c) for c in flagged.values()))
        if self.verbose:
            print(
                f"[DeadChannelMonitor] epoch {epoch + 1}: {record['num_dead']} dead channels "
                f"(removing them saves {record['macs_saved']:,} MACs), "
                f"{int(logs['non_learning_channels']) if logs else 0} non-learning"
            )

    def on_train_end(self, logs=None):
        if self._handle is not None:
            _keras.remove_train_step_hook(self.model, self._handle)
            self._handle = None
        self.stats.active.assign(False)

    def _examples(self, moments) -> int:
        shapes = {fn.path: fn.input_shapes[0] for fn in self.graph.flat.nodes}
        for path, m in moments.items():
            spatial = shapes[path][1:-1]
            if None not in spatial:
                return int(round(m.count / max(int(np.prod(spatial)), 1)))
        return 0
