"""``TrainStepSaliency``: Taylor / Fisher accumulated inside ``model.fit``'s own training step.

Molchanov et al. (arXiv:1611.06440) accumulate the criterion "over the minibatches" of
fine-tuning between two removals; Theis et al. (arXiv:1801.05787) the Fisher signal over the N
training steps between prunes. No calibration pass is needed: while installed (a training-step
hook, ``_keras.add_train_step_hook``), the model's train step runs inside ``record_gate_inputs``
with every gate input passed through an identity whose custom gradient keeps, per example,
``s = -sum_hw a * dL/da`` at that gate.
Keras's own backward pass (the one that updates the weights) computes it; nothing is
differentiated twice. After the step, the gates of each channel are summed into ``d =
-dl_n/dm`` (one shared mask per channel, ``saliency.mask_delta``) and the running sums of d,
|d|, d^2 and d^4 grow by the batch's.

Scale: Keras differentiates the batch MEAN loss, divided by the number of replicas and
multiplied by the optimizer's loss scale; ``s`` is multiplied back by ``batch x replicas /
loss scale`` so that ``d`` is the derivative of each example's OWN loss (Theis's per-example
Fisher), whatever the batch size. Sample weights and losses reduced otherwise than by the mean
are not corrected for. Like the weight update, the pass runs in training mode (Dropout on,
BatchNorm on batch statistics).

Under ``tf.distribute.MirroredStrategy`` each replica adds its examples to its own copy of the
sums (on-read variables); reading them sums the replicas.

The train function is rebuilt once, when the criterion is installed (``build``); pruning
events change gate values only, so they never retrace it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from tfchannelprune import _keras
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.gate import record_gate_inputs
from tfchannelprune.saliency import mask_delta
from tfchannelprune.saliency import signals as signals_lib
from tfchannelprune.saliency.finite import check_step_sums
from tfchannelprune.saliency.gate_positions import gate_positions
from tfchannelprune.saliency.importance import Importance


def _sum_variable(shape):
    return tf.Variable(
        tf.zeros(shape, tf.float64),
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
    )


class TrainStepSaliency(Importance):
    """A ``mask_delta`` signal ("taylor", "fisher" ...) accumulated by ``fit``'s train step.

    Args:
        signal: (keyword) a ``mask_delta`` signal: ``"taylor"`` (mean_n |d|), ``"fisher"``
            (1/(2N) sum_n d^2) or another ``mask_delta|...`` id. Given positionally it still
            works, with a ``DeprecationWarning`` (docs/api.md).

    ``ChannelPruning`` without calibration data uses it for such signals: ``build(context)``
    at the start of ``fit`` installs it on ``context.model``, each event calls it and then
    ``reset()``, and ``release()`` at the end of ``fit`` restores the model's train step.

    Raises:
        ValueError: for a signal that is not a ``mask_delta`` one.
    """

    needs_data = False
    needs_gradients = True
    accumulated = True
    in_step = True  # fed by the training step itself, not by update(x, y) over batches

    @keyword_only("signal")
    def __init__(self, *, signal="taylor"):
        self.signal = signals_lib.get(signal)
        if self.signal.kind != "mask":
            raise ValueError(
                "Only mask_delta signals (e.g. 'taylor', 'fisher') are accumulated in the "
                f"training step; give calibration data for the others. Received: "
                f"signal={self.signal.id!r}"
            )
        mask_delta.check_plan(self.signal)
        self.model = None
        self._handle = None  # of the training-step hook while installed
        self._sums = None  # (4, channels of every group) float64 running sums, one variable
        self._columns: dict[str, tuple[int, int]] = {}  # group -> its columns in the sums

    @property
    def name(self) -> str:
        return self.signal.id

    def get_config(self) -> dict:
        return {"signal": self.signal.id}

    @property
    def num_examples(self) -> int:
        return int(self._count.numpy()) if self._sums is not None else 0

    # ------------------------------------------------------------------ protocol
    def build(self, context) -> None:
        """Install on ``context.model``: rebuild its train function once with the hooks."""
        model = context.model
        if self.model is model and _keras.has_train_step_hook(model, self._handle):
            return
        if self.model is not None:
            self.release()
        gate_of, gates = gate_positions(context.graph)
        self._gate_of = gate_of
        self._positions = mask_delta.group_positions(gates)
        self._sizes = {g: context.graph.group(g).size for g in self._positions}
        starts = np.cumsum([0, *self._sizes.values()])
        self._columns = {g: (int(a), int(b)) for g, a, b in zip(self._sizes, starts, starts[1:])}
        with model.distribute_strategy.scope():
            self._sums = _sum_variable((4, int(starts[-1])))
            self._count = _sum_variable(())
        self.model = model
        self._handle = _keras.add_train_step_hook(model, self._hook)

    def __call__(self, context) -> dict[str, np.ndarray]:
        n = self.num_examples
        if n == 0:
            raise ValueError(
                f"No training step ran since the last event, so {self.signal.id!r} has no "
                "value. Prune after at least one step. Received: num_examples=0"
            )
        sums = self._sums.numpy()  # one read for every group
        check_step_sums(self.signal, {g: sums[:, a:b] for g, (a, b) in self._columns.items()}, n)
        out = {}
        for g in context.groups:
            if g.name in self._columns:
                a, b = self._columns[g.name]
                out[g.name] = mask_delta.scores(self.signal, sums[:, a:b], n)
            else:
                out[g.name] = np.zeros(g.size, np.float64)
        return out

    def update(self, x, y=None) -> None:
        """Nothing to do: the training step itself accumulates."""

    def reset(self) -> None:
        if self._sums is not None:
            self._sums.assign(tf.zeros_like(self._sums))
            self._count.assign(tf.zeros_like(self._count))

    def release(self) -> None:
        """Take the hook out of the model's train step (the others stay)."""
        if self.model is None:
            return
        model, self.model = self.model, None
        _keras.remove_train_step_hook(model, self._handle)

    # ------------------------------------------------------------------ in the step
    def _hook(self, step):
        """The training-step hook: ``step`` with every gate input probed, then the sums."""

        def hooked(data):
            return self._train_step(step, data)

        return hooked

    def _train_step(self, step, data):
        stash: dict[str, tf.Tensor] = {}

        def hook(gate, x):
            path = self._gate_of.get(id(gate))
            return x if path is None else _probe(x, path, stash)

        with record_gate_inputs(hook):
            logs = step(data)
        self._accumulate(stash, data)
        return logs

    def _accumulate(self, stash, data) -> None:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch = tf.shape(next(t for t in tree.flatten(x) if t is not None))[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scale = tf.cast(batch * replicas, tf.float64)
        optimizer = self.model.optimizer
        if optimizer is not None:  # undo a mixed-precision loss scale
            scale = scale / tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float64)
        per_gate = {path: tf.cast(s, tf.float64) * scale for path, s in stash.items()}
        deltas = mask_delta.group_deltas(per_gate, self._positions, self._sizes)
        columns = [  # a group no gradient reached adds nothing
            deltas[g] if g in deltas else tf.zeros(tf.stack([batch, n]), tf.float64)
            for g, n in self._sizes.items()
        ]
        if columns:  # the statistics of every group at once, one update
            self._sums.assign_add(mask_delta.batch_stats(tf.concat(columns, axis=1)))
        self._count.assign_add(tf.cast(batch, tf.float64))


def _probe(x, path: str, stash: dict):
    """``x`` unchanged; its gradient ``dy`` leaves ``-sum_hw x * dy`` per example in
    ``stash[path]``."""

    @tf.custom_gradient
    def identity(t):
        def grad(dy):
            prod = tf.cast(t, tf.float32) * tf.cast(dy, tf.float32)
            width = prod.shape[-1]
            stash[path] = -tf.reduce_sum(tf.reshape(prod, (tf.shape(prod)[0], -1, width)), 1)
            return dy

        return tf.identity(t), grad

    return identity(x)
