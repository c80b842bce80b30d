"""``SaliencyAccumulator``: saliency signals accumulated batch by batch in ``tf.Variable``s.

One ``tf.GradientTape`` pass per batch inside ``tf.function``: ChannelGate inputs ``a`` are
recorded through ``record_gate_inputs`` and a zero probe added to them, whose gradient is
``g = dl/da`` per example (the loss is the SUM of per-example losses). Under ``tf.distribute``
each replica sums its share of the batch; sums are reduced across replicas.
"""

from __future__ import annotations

import functools
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from tfchannelprune.core.checks import check_finite
from tfchannelprune.core.convention import keyword_only, one_or_several, signal_or_signals
from tfchannelprune.core.gate import is_wrapped, record_gate_inputs
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.wrap import wrap
from tfchannelprune.saliency import mask_delta, scoring
from tfchannelprune.saliency import signals as signals_lib
from tfchannelprune.saliency.gate_positions import gate_positions, plan_rows
from tfchannelprune.saliency.reductions import (
    batch_stat,
    check_batch,
    flat_gate_tensor,
    per_example_loss,
    prefix_tensor,
    state_variable,
)

_NAN_HINT = "the loss and every saliency score of the batch would be NaN"


class SaliencyAccumulator:
    """Accumulates saliency signals over batches; state in ``tf.Variable``s.

    Args:
        model: a Keras model; if it has no ChannelGate layers, a wrapped copy is used
            (``self.model``), which does not follow later changes to ``model``. A ``model.fit``
            callback should pass the wrapped model it trains.
        loss: a ``keras.losses.Loss``, a loss name, or ``fn(y_true, y_pred)`` returning one
            value per example (extra axes are averaged, as Keras does).
        signal: ONE signal (preset name, id, config or ``Signal``).
        signals: instead of ``signal``, a list of signals accumulated in the same pass.
        training: run BatchNorm / Dropout in training mode (their updates are discarded).

    ``result()`` returns {group: float64 scores} when built with ``signal``, and
    {key: {group: scores}} when built with ``signals``, keyed by the strings given (preset
    names or ids) or by ``Signal.id``: the shape follows the keyword, as in
    ``collect_saliency``.

    Example:
        >>> acc = SaliencyAccumulator(gated, loss=loss, signals=["taylor", "fisher"])
        >>> for x, y in batches:
        ...     acc.update(x, y)
        >>> acc.result()["taylor"]["conv2d"]
    """

    @keyword_only(signal_or_signals, "loss", "training", exclusive=("signal", "signals"))
    def __init__(
        self,
        model,
        *,
        loss=None,
        signal="taylor",
        signals=None,
        training: bool = False,
        _copy_ok=False,
    ):
        entries, self._single = one_or_several(signal, signals)
        self.signals = [signals_lib.get(s) for s in entries]
        self.keys = [
            e if isinstance(e, str) else s.id for e, s in zip(entries, self.signals, strict=True)
        ]
        self.training = bool(training)
        self._strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        if not is_wrapped(model):
            if not _copy_ok:
                warnings.warn(
                    f"Model {model.name!r} has no ChannelGate layers; the accumulator works on a "
                    "wrapped copy (acc.model) that will not see later weight updates. Pass "
                    "tfchannelprune.wrap(model) and train that one instead.",
                    stacklevel=2,
                )
            with self._strategy.scope():
                model = wrap(model)
        self.model = model
        self.graph = ChannelGraph(model)
        self._loss = per_example_loss(loss) if self.needs_data else None
        self._layout_gates()
        self._plan_state()
        trace = functools.partial(tf.function, reduce_retracing=True, autograph=False)  # faster
        self._step, self._mean_step = trace(self._distributed_step), trace(self._distributed_mean_step)

    # ------------------------------------------------------------------ public API
    @property
    def num_examples(self) -> int:
        return int(self._count.numpy())

    @property
    def variables(self) -> list[tf.Variable]:
        """Every state variable (for a ``tf.train.Checkpoint``)."""
        means = [v for pair in self._means.values() for v in pair]
        return [v for v, _ in self._state.values()] + means + [self._count]

    @property
    def strategy(self) -> tf.distribute.Strategy:
        """The model's distribution strategy (the default one when it has none)."""
        return self._strategy

    @property
    def needs_data(self) -> bool:
        """Whether any signal needs ``update`` (weight and BN signals read the weights)."""
        return any(s.needs_data for s in self.signals)

    @property
    def needs_means(self) -> bool:
        """Whether a ``mean_delta`` signal would use means from ``update_means``."""
        return bool(self._means)

    def update(self, x, y) -> float:
        """Accumulate one batch; returns the sum of its per-example losses.

        ``x`` and ``y`` are arrays or tensors (split between the replicas of a distribution
        strategy), or values from a distributed dataset. Without data signals it does nothing.

        Raises:
            ValueError: x, y of different lengths, an empty batch, a non-finite loss (state
            left unchanged), NaN/inf in x (``NonFiniteInputError``).
        """
        if not self.needs_data:
            return 0.0
        if not isinstance(x, tf.distribute.DistributedValues):
            n = check_batch(x, y)
            check_finite(x, "the calibration data x", _NAN_HINT)
            if self._strategy.num_replicas_in_sync > 1:
                x, y = self._distribute(x, y, n)
        return self._update(x, y)

    def update_means(self, x) -> None:
        """Forward pass only: accumulate the activation means used by ``mean_delta`` signals.

        Without it, each batch uses its own mean (Evci's deadunits), which depends on the
        batch size; ``collect_saliency`` calls it over the whole data first."""
        if not self._means:
            return
        if not isinstance(x, tf.distribute.DistributedValues):
            n = check_batch(x, None)
            if self._strategy.num_replicas_in_sync > 1:
                x, _ = self._distribute(x, np.zeros((n,), np.float32), n)
        self._mean_step(x)

    def reset(self) -> None:
        """Forget every accumulated batch (and activation mean)."""
        for var, kind in self._state.values():
            var.assign(
                tf.fill(var.shape, tf.constant(-np.inf if kind == "max" else 0.0, var.dtype))
            )
        for total, elements in self._means.values():
            total.assign(tf.zeros_like(total))
            elements.assign(0.0)
        self._count.assign(0.0)

    def result(self):
        """Scores of every signal from what was accumulated (see the class docstring).

        Raises:
            ValueError: when a data signal is asked for before any example was seen.
        """
        n = self.num_examples
        if self.needs_data and n == 0:
            raise ValueError(
                "No examples were accumulated, so data-based signals have no value. Call "
                "update(x, y) with at least one batch. Received: num_examples=0"
            )
        values = {key: var.numpy() for key, (var, _) in self._state.items()}
        cache: dict = {}

        def costs():
            if not cache:
                from tfchannelprune.core.cost import marginal_macs

                cache["macs"] = marginal_macs(self.graph)
                cache["weights"] = signals_lib.marginal_params(self.graph)
            return cache

        out = {}
        for key, signal in zip(self.keys, self.signals, strict=True):
            scores = scoring.signal_scores(self, signal, values, n)
            out[key] = signals_lib.scale_scores(scores, signal.scaling, costs)
        return out[self.keys[0]] if self._single else out

    # ------------------------------------------------------------------ set-up
    def _layout_gates(self) -> None:
        self._gate_of, self._gates = gate_positions(self.graph)
        self._sources = signals_lib.kernel_sources(self.graph)
        self._bns = signals_lib.batch_norms(self.graph)

    def _plan_state(self) -> None:
        """Which per-gate statistics and kernel gradients the signals need, and their state."""
        self._rows = plan_rows(self.signals, self._gates)
        roles = {"weight_delta": "producer", "consumer_weight_delta": "consumer"}
        wanted = {roles[s.base] for s in self.signals if s.base in roles}
        by_path = {k.variable_path: k for k in self._sources if k.role in wanted}
        self._kernels = [by_path[p] for p in sorted(by_path)]
        self._group_positions = {}
        if any(s.kind == "mask" for s in self.signals):
            for s in self.signals:
                if s.kind == "mask":
                    mask_delta.check_plan(s)
            self._group_positions = mask_delta.group_positions(self._gates)
        self._needs_grad = bool(self._kernels or self._group_positions) or any(
            s.base in ("gradient", "zero_delta", "mean_delta") for s in self.signals
        )
        with self._strategy.scope():
            self._create_state(any(s.base == "mean_delta" for s in self.signals))

    def _create_state(self, uses_mean: bool) -> None:
        self._state: dict[tuple, tuple] = {}  # key -> (variable, "sum" or "max")
        for (gate, family, kind), rows in self._rows.items():
            info = self._gates[gate]
            shape = (len(rows), info["hw"], info["width"]) if family == "n_hw" else (
                len(rows), info["width"]
            )  # fmt: skip
            self._state[(gate, family, kind)] = (state_variable(shape, kind), kind)
            if family == "nhw":
                self._state[(gate, "elements", "sum")] = (state_variable((), "sum"), "sum")
        for group in self._group_positions:
            size = self.graph.group(group).size
            self._state[("mask", group)] = (state_variable((4, size), "sum"), "sum")
        for source in self._kernels:
            shape = tuple(source.variable.shape)
            self._state[("grad", source.variable_path)] = (state_variable(shape, "sum"), "sum")
        self._means = {
            g: (state_variable((i["width"],), "sum"), state_variable((), "sum"))
            for g, i in self._gates.items()
        } if uses_mean else {}  # fmt: skip
        self._count = state_variable((), "sum")

    # ------------------------------------------------------------------ one batch
    def _update(self, x, y) -> float:
        try:
            loss, bad = self._step(x, y)
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(
                f"Saliency collection failed on a batch (are x and y of the same length and "
                f"do the labels fit the loss?). Received: {error.message.splitlines()[0]}"
            ) from None
        if float(bad) > 0:
            raise ValueError(
                f"The loss is not finite on this batch ({int(bad)} examples with NaN or inf); "
                "the accumulated state was left unchanged. Check the data, labels and model. "
                f"Received: loss={float(loss)}"
            )
        return float(loss)

    def _distribute(self, x, y, n: int):
        replicas = self._strategy.num_replicas_in_sync
        bounds = np.linspace(0, n, replicas + 1).astype(int)

        def value_fn(ctx):
            i = ctx.replica_id_in_sync_group
            return tree.map_structure(lambda t: t[bounds[i] : bounds[i + 1]], (x, y))

        values = self._strategy.experimental_distribute_values_from_function(value_fn)
        return values[0], values[1]

    def _distributed_step(self, x, y):
        per_replica = self._strategy.run(self._replica_step, args=(x, y))
        reduced = {}
        for key, value in per_replica.items():
            if self._state.get(key, (None, "sum"))[1] == "max":
                # ReduceOp has no MAX; a single-host strategy holds every replica's copy
                local = self._strategy.experimental_local_results(value)
                reduced[key] = tf.reduce_max(tf.stack(local), axis=0)
            else:
                reduced[key] = self._strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
        ok = tf.equal(reduced[("bad", "sum")], 0.0)
        for key, (var, kind) in self._state.items():
            new = tf.maximum(var, reduced[key]) if kind == "max" else var + reduced[key]
            var.assign(tf.where(ok, new, var))
        count = reduced[("count", "sum")]
        self._count.assign(tf.where(ok, self._count + count, self._count))
        return reduced[("loss", "sum")], reduced[("bad", "sum")]

    def _replica_step(self, x, y):
        acts: dict[str, tf.Tensor] = {}
        probes: dict[str, tf.Tensor] = {}
        kernels = [s.variable for s in self._kernels]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for k in kernels:
                tape.watch(k.value)

            def hook(gate, a):
                path = self._gate_of.get(id(gate))
                if path is None:
                    return a
                acts[path] = a
                if not self._needs_grad:
                    return a
                probes[path] = tf.zeros_like(a)
                tape.watch(probes[path])
                return a + probes[path]

            y_pred = self._forward(x, hook)
            per_example = self._loss(y, y_pred)
            loss = tf.reduce_sum(per_example)
        grads = tape.gradient(loss, list(probes.values()) + [k.value for k in kernels])
        grads = [tf.zeros_like(v) if g is None else g for g, v in
                 zip(grads, list(probes.values()) + [k.value for k in kernels], strict=True)]  # fmt: skip
        probe_grads = dict(zip(probes, grads[: len(probes)], strict=True))
        out = {
            ("loss", "sum"): tf.cast(loss, tf.float64),
            ("bad", "sum"): tf.reduce_sum(tf.cast(~tf.math.is_finite(per_example), tf.float64)),
            ("count", "sum"): tf.cast(tf.shape(per_example)[0], tf.float64),
        }
        for source, grad in zip(self._kernels, grads[len(probes) :], strict=True):
            out[("grad", source.variable_path)] = tf.cast(grad, tf.float64)
        out.update(self._gate_stats(acts, probe_grads))
        out.update(self._mask_stats(acts, probe_grads))
        return out

    def _mask_stats(self, acts, grads) -> dict:
        """Per group, sums of d = -dl_n/dm over the batch (``mask_delta``)."""
        if not self._group_positions:
            return {}
        per_gate = {}
        for gate, g in grads.items():
            info = self._gates[gate]
            a, g = flat_gate_tensor(acts[gate], info), flat_gate_tensor(g, info)
            per_gate[gate] = -tf.reduce_sum(a * g, axis=1)
        sizes = {name: self.graph.group(name).size for name in self._group_positions}
        deltas = mask_delta.group_deltas(per_gate, self._group_positions, sizes)
        return {
            ("mask", group): mask_delta.batch_stats(deltas[group])
            if group in deltas else tf.zeros((4, sizes[group]), tf.float64)
            for group in self._group_positions
        }

    def _forward(self, x, hook):
        with record_gate_inputs(hook):
            if not self.training:
                return self.model(x, training=False)
            with keras.StatelessScope():  # discard BatchNorm / seed updates
                return self.model(x, training=True)

    def _gate_stats(self, acts, grads) -> dict:
        out, caches = {}, {}
        for (gate, family, kind), rows in self._rows.items():
            info = self._gates[gate]
            a = flat_gate_tensor(acts[gate], info)
            g = flat_gate_tensor(grads[gate], info) if gate in grads else None
            cache = caches.setdefault(gate, {})  # prefixes shared by several statistics
            mean = functools.partial(self._reference_mean, gate)
            axes = (0, 1) if family == "nhw" else 0
            out[(gate, family, kind)] = tf.stack(
                [batch_stat(prefix_tensor(base, prefix, a, g, mean, cache), stat, axes)
                 for base, prefix, stat in rows]
            )  # fmt: skip
            if family == "nhw":
                elements = tf.cast(tf.shape(a)[0] * tf.shape(a)[1], tf.float64)
                out[(gate, "elements", "sum")] = elements
        return out

    def _distributed_mean_step(self, x):
        per_replica = self._strategy.run(self._replica_mean_step, args=(x,))
        total = tf.distribute.ReduceOp.SUM
        for gate, variables in self._means.items():
            for var, value in zip(variables, per_replica[gate], strict=True):
                var.assign_add(self._strategy.reduce(total, value, axis=None))

    def _replica_mean_step(self, x):
        acts = {}

        def hook(gate, a):
            path = self._gate_of.get(id(gate))
            if path is not None:
                acts[path] = a
            return a

        self._forward(x, hook)
        out = {}
        for gate in self._means:
            a = tf.cast(flat_gate_tensor(acts[gate], self._gates[gate]), tf.float64)
            elements = tf.cast(tf.shape(a)[0] * tf.shape(a)[1], tf.float64)
            out[gate] = (tf.reduce_sum(a, axis=(0, 1)), elements)
        return out

    def _reference_mean(self, gate, a):
        """The activation mean of ``mean_delta``: from ``update_means`` when it was called,
        else this batch's mean (per replica)."""
        batch = tf.reduce_mean(a, axis=(0, 1))
        total, elements = self._means[gate]
        fixed = tf.cast(total / tf.maximum(elements, 1.0), a.dtype)
        return tf.where(elements > 0, fixed, batch)
