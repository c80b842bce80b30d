"""``DynamicChannelExecution``: train on a bandit-chosen subset of channels (Spasov & Lio 2019).

At every training step each prunable group executes only ``k = active_fraction x width``
channels, the top-k by the combinatorial UCB index (``ChannelBandit``; Spasov & Lio
2019, arXiv:1905.06435).
The step runs a ``ChannelExecutor`` (gathered kernels: smaller convolutions on the active
channels), so inactive channels produce nothing, get no gradient, and ``FrozenSlices`` keeps
their weights and optimizer slots unchanged. The reward of an executed channel is its Taylor
saliency on that step, ``mean_n |mean_hw(a * g)|`` at the gate points (after BN and
activation; summed over the gate points of a group), divided by the group's maximum. At the
end, keep the channels with the highest mean reward and ``compact``.

Example:
    >>> dyn = DynamicChannelExecution(active_fraction=0.5)
    >>> model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    >>> model.fit(x, y, epochs=3, callbacks=[dyn])
    >>> small = dyn.compact()            # the channels with the highest mean reward
    >>> small.compile(...); small.fit(x, y, epochs=1)   # fine-tune
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from tfchannelprune import _keras
from tfchannelprune.core.checks import layer_names
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.cost import count_macs
from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import ignored_groups
from tfchannelprune.core.surgery import compact
from tfchannelprune.dynamic.bandit import DEFAULT_EXPLORATION, ChannelBandit
from tfchannelprune.dynamic.executor import ChannelExecutor
from tfchannelprune.dynamic.frozen import FrozenSlices


class DynamicChannelExecution(keras.callbacks.Callback):
    """Executes a CUCB-chosen ``active_fraction`` of every prunable group at each step.

    Args:
        active_fraction: share of each group's channels executed per step, in (0, 1]; the
            count ``k = max(min_channels, round(active_fraction * width))`` is fixed per group
            (only the indices change, so the step is traced once).
        exploration_coef: CUCB exploration weight ``c`` (sqrt(3/2) in Chen et al. 2013).
        final_fraction: share of each group kept by ``plan()`` / ``compact()`` (default:
            ``active_fraction``).
        min_channels: at least this many channels of a group run per step.
        ignored_layers: layer names (bare or full paths) whose groups always run in full and
            are not pruned; the same meaning as everywhere (``core.plans.ignored_groups``).
        seed: seed of the bandit's tie-breaking.

    The bandit state is ``self.bandit`` (``tf.Variable``s, checkpoint it with
    ``tf.train.Checkpoint(bandit=dyn.bandit)``). ``fit`` logs ``executed_macs`` (MACs per
    example of a step's forward pass) and ``executed_macs_fraction`` each epoch.

    Raises:
        ValueError: a fraction outside (0, 1], a model without prunable groups, or training
        under a distribution strategy with several replicas (not supported).
    """

    @keyword_only(
        "active_fraction", "exploration_coef", "final_fraction", "min_channels",
        "ignored_layers", "seed",
    )  # fmt: skip
    def __init__(
        self,
        *,
        active_fraction: float = 0.5,
        exploration_coef: float = DEFAULT_EXPLORATION,
        final_fraction: float | None = None,
        min_channels: int = 1,
        ignored_layers: Sequence[str] = (),
        seed: int = 0,
    ):
        super().__init__()
        for name, value in (
            ("active_fraction", active_fraction),
            ("final_fraction", final_fraction),
        ):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1]. Received: {name}={value!r}")
        self.active_fraction = float(active_fraction)
        self.exploration_coef = exploration_coef
        self.final_fraction = final_fraction
        self.min_channels = int(min_channels)
        self.ignored_layers = layer_names(ignored_layers)
        self.seed = seed
        self.graph = None
        self._built_for = None
        self._handle = None

    # ------------------------------------------------------------------ set-up
    def build(self, model) -> None:
        """Analyse ``model`` and create the bandit (``fit`` calls it; call it yourself to
        restore a checkpointed bandit before training)."""
        if self._built_for is model:
            return
        self.graph = ChannelGraph(model)
        ignored = ignored_groups(self.graph, self.ignored_layers)
        groups = {
            g.name: (
                g.size,
                min(g.size, max(self.min_channels, round(self.active_fraction * g.size))),
            )
            for g in self.graph.prunable_groups
            if g.name not in ignored
        }
        if not groups:
            raise ValueError(
                f"Model {model.name!r} has no prunable channel group, so no channel can be "
                "skipped. See ChannelGraph(model).groups for the reasons. "
                f"Received: ignored_layers={list(self.ignored_layers)}"
            )
        self.executor = ChannelExecutor(self.graph, {g: k for g, (_, k) in groups.items()})
        if self.executor.skipped:
            warnings.warn(
                f"Groups {self.executor.skipped} repeat their channels unevenly on some tensor, "
                "so they cannot run compact with a fixed width; they run in full.",
                stacklevel=2,
            )
            groups.update({g: (groups[g][0], groups[g][0]) for g in self.executor.skipped})
        self.bandit = ChannelBandit(groups, self.exploration_coef, self.seed)
        self.frozen = FrozenSlices(self.executor)
        self._reward_points = self._find_reward_points(set(groups))
        self.dense_macs = count_macs(self.graph)
        self.executed_macs = self._executed_macs({g: k for g, (_, k) in groups.items()})
        self._built_for = model

    def _find_reward_points(self, names) -> list[int]:
        graph = self.graph
        if graph.gate_paths:  # a wrapped model: the gates' inputs
            gates = [fn for fn in graph.flat.nodes if isinstance(fn.op, ChannelGate)]
            tensors = [fn.inputs[0] for fn in gates]
        else:
            tensors = [p.tensor for p in graph.gate_points]
        keep = []
        for t in tensors:
            gidx, _ = graph.group_layout(t)
            if any(graph.groups[i].name in names for i in set(gidx.tolist()) if i >= 0):
                keep.append(t)
        return keep

    def _executed_macs(self, ks) -> int:
        """Forward MACs per example of one step: active widths where layers run compact, full
        widths for the masked fallback."""
        full = count_macs(self.graph, per_layer=True)
        plan = {g: range(k) for g, k in ks.items()}
        part = count_macs(self.graph, per_layer=True, plan=plan)
        fallback = {
            fn.path for fn, k in zip(self.graph.flat.nodes, self.executor.kinds) if k == "masked"
        }
        return int(sum(full[p] if p in fallback else part[p] for p in full))

    def set_model(self, model):
        super().set_model(model)
        self.build(model)

    # ------------------------------------------------------------------ fit hooks
    def on_train_begin(self, logs=None):
        model = self.model
        if model.distribute_strategy.num_replicas_in_sync > 1:
            raise ValueError(
                "DynamicChannelExecution does not support distribution strategies with several "
                "replicas yet. Train on one device. Received: num_replicas_in_sync="
                f"{model.distribute_strategy.num_replicas_in_sync}"
            )
        if model.optimizer is None:
            raise ValueError("Compile the model (with an optimizer) before fit().")
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        # replaces the step (it ignores the one below it): hooks added after it wrap it
        self._handle = _keras.add_train_step_hook(model, lambda step: self.train_step)

    def on_train_end(self, logs=None):
        if self._handle is not None:
            _keras.remove_train_step_hook(self.model, self._handle)
            self._handle = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["executed_macs"] = float(self.executed_macs)
            logs["executed_macs_fraction"] = self.executed_macs / max(self.dense_macs, 1)

    # ------------------------------------------------------------------ the step
    def train_step(self, data):
        """One training step on the active channels (installed as ``model.train_step``)."""
        model = self.model
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        active = self.bandit.select()
        with tf.GradientTape() as tape:
            y_pred, watched, mask = self.executor.run(
                x, active, training=True, watch=self._reward_points
            )
            loss = model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            _track_loss(model, loss, x)
            scaled = model.optimizer.scale_loss(loss)
        variables = list(model.trainable_variables)
        points = list(watched)
        grads = tape.gradient(scaled, variables + [watched[t][0] for t in points])
        weight_grads = [_dense(g) for g in grads[: len(variables)]]
        self.frozen.apply_gradients(model.optimizer, weight_grads, variables, mask)
        rewards = self._rewards(watched, dict(zip(points, grads[len(variables) :])), active)
        self.bandit.update(active, rewards)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _rewards(self, watched, grads, active) -> dict[str, tf.Tensor]:
        """Taylor saliency of each executed channel, / the group's maximum (in [0, 1])."""
        ex = self.executor
        total = tf.zeros([ex.total], tf.float32)
        for t, (a, pos) in watched.items():
            g = grads[t]
            if g is None:
                continue
            prod = tf.cast(a, tf.float32) * tf.cast(g, tf.float32)
            spatial = list(range(1, prod.shape.rank - 1))
            per_example = tf.reduce_mean(prod, axis=spatial) if spatial else prod
            score = tf.reduce_mean(tf.abs(per_example), axis=0)
            slots = tf.constant(ex.flat_index(t), tf.int32)
            slots = slots if pos is None else tf.gather(slots, pos)
            total += tf.math.unsorted_segment_sum(score, slots, ex.total)
        rewards = {}
        index = {g.name: i for i, g in enumerate(ex.groups)}
        for name in self.bandit.names:
            start = int(ex.offsets[index[name]])
            r = tf.gather(total[start : start + self.bandit.sizes[name]], active[name])
            rewards[name] = tf.math.divide_no_nan(r, tf.reduce_max(r))
        return rewards

    # ------------------------------------------------------------------ results
    def plan(self, fraction: float | None = None) -> dict[str, list[int]]:
        """{group: kept channels}: the highest mean rewards, ``fraction`` (default
        ``final_fraction`` or ``active_fraction``) of each group."""
        fraction = fraction or self.final_fraction or self.active_fraction
        return self.bandit.best(fraction)

    def compact(self, fraction: float | None = None) -> keras.Model:
        """The trained model with only the ``plan(fraction)`` channels (a new model)."""
        return compact(self._built_for, self.plan(fraction), graph=self.graph)

    def active_channels(self) -> dict[str, np.ndarray]:
        """The channels the last step executed."""
        return {g: v.numpy() for g, v in zip(self.bandit.names, self.bandit.last_active)}


def _dense(grad):
    return tf.convert_to_tensor(grad) if isinstance(grad, tf.IndexedSlices) else grad


def _track_loss(model, loss, x) -> None:
    # Keras's own train_step feeds the "loss" log through this private tracker.
    tracker = _keras.loss_tracker(model)
    if tracker is not None:
        first = next(i for i in tree.flatten(x) if i is not None)
        tracker.update_state(loss, sample_weight=tf.shape(first)[0])
