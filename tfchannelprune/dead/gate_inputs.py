"""Running statistics of every ChannelGate's input: count, mean, M2 (for the variance), max |a|.

The gate input is a channel's output *as fed forward* (after BatchNorm and the activation), so
these are the statistics that dead-channel detection and mean replacement need (Evci's thesis,
arXiv:1806.06068, and "Mean Replacement Pruning"; docs/references.md). The state lives in
``tf.Variable``s and is updated by ``hook``, which ``record_gate_inputs`` calls inside a
forward pass: inside ``update(x)`` (a forward pass of its own) or inside a ``model.fit`` train
step (``DeadChannelMonitor``), with no extra pass.

Per batch the statistics are computed in float64 and merged with Chan et al.'s parallel update
(count, mean, M2), so the variance does not suffer from the cancellation of
``E[a^2] - E[a]^2`` and a constant channel's mean is its constant to the last bit.

Example:
    >>> stats = GateStatistics(gated)
    >>> for x in batches:
    ...     stats.update(x)
    >>> stats.result()["conv2d_gate"].variance
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfchannelprune.core.batches import as_dataset
from tfchannelprune.core.checks import FiniteTally
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.gate import ChannelGate, record_gate_inputs
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.wrap import gated_model


@dataclasses.dataclass(frozen=True)
class GateMoments:
    """Statistics of one gate's input, one value per channel position of the gate."""

    count: float  # values seen per position (examples x spatial positions)
    mean: np.ndarray
    variance: np.ndarray  # population variance (ddof 0)
    absmax: np.ndarray  # max |a|
    mean_map: np.ndarray | None = None  # (*spatial, C) mean over examples, if asked for


class GateStatistics:
    """Per-position count / mean / M2 / max|a| of the gate inputs of a wrapped model.

    Args:
        model: a wrapped Keras model (see ``tfchannelprune.wrap``).
        graph: its ``ChannelGraph``, if already built.
        training: run BatchNorm / Dropout in training mode in ``update`` (their state updates
            are kept out of the model by a ``StatelessScope``).
        maps: gates (of fixed spatial size) for which to also record the mean over examples
            at every spatial position (``GateMoments.mean_map``).

    Raises:
        ValueError: when the model has no ChannelGate layers.
    """

    def __init__(
        self,
        model,
        graph: ChannelGraph | None = None,
        training: bool = False,
        *,
        maps=(),
    ):
        gated_model(model, "GateStatistics", copy=False)
        self.model = model
        self.graph = graph if graph is not None else ChannelGraph(model)
        self.training = bool(training)
        gates = {fn.path: fn for fn in self.graph.flat.nodes if isinstance(fn.op, ChannelGate)}
        self.paths = list(self.graph.gate_paths)
        self._path_of = {id(gates[p].op): p for p in self.paths}
        self.widths = {p: int(gates[p].input_shapes[0][-1]) for p in self.paths}
        f64 = tf.float64

        def zeros(shape):
            return tf.Variable(tf.zeros(shape, f64), trainable=False)

        self._count = {p: zeros(()) for p in self.paths}
        self._mean = {p: zeros((w,)) for p, w in self.widths.items()}
        self._m2 = {p: zeros((w,)) for p, w in self.widths.items()}
        self._absmax = {p: zeros((w,)) for p, w in self.widths.items()}
        shapes = {p: gates[p].input_shapes[0][1:] for p in maps}
        self._maps = {p: (zeros(s), zeros(())) for p, s in shapes.items() if None not in s}
        self.active = tf.Variable(True, trainable=False)  # False: hook records nothing
        self._step = tf.function(self._forward, reduce_retracing=True)

    def hook(self, gate, x):
        """The ``record_gate_inputs`` callback: accumulate ``x`` if ``gate`` is ours."""
        path = self._path_of.get(id(gate))
        if path is not None:
            self._accumulate(path, tf.stop_gradient(x))
        return x

    def update(self, x) -> None:
        """One forward pass over the batch ``x``, accumulating every gate input."""
        self._step(x)

    def reset(self) -> None:
        variables = [*self._count.values(), *self._mean.values(), *self._m2.values(),
                     *self._absmax.values(), *(v for pair in self._maps.values() for v in pair)]  # fmt: skip
        for var in variables:
            var.assign(tf.zeros_like(var))

    def result(self) -> dict[str, GateMoments]:
        """{gate path: GateMoments} from everything accumulated since the last reset."""
        out = {}
        for p in self.paths:
            count = float(self._count[p].numpy())
            m2 = self._m2[p].numpy()
            mean_map = None
            if p in self._maps:
                total, examples = self._maps[p]
                mean_map = total.numpy() / max(float(examples.numpy()), 1.0)
            out[p] = GateMoments(
                count=count,
                mean=self._mean[p].numpy(),
                variance=np.maximum(m2 / max(count, 1.0), 0.0),
                absmax=self._absmax[p].numpy(),
                mean_map=mean_map,
            )
        return out

    @property
    def num_values(self) -> float:
        return max((float(c.numpy()) for c in self._count.values()), default=0.0)

    # ------------------------------------------------------------------ internals
    def _forward(self, x):
        with record_gate_inputs(self.hook):
            if not self.training:
                return self.model(x, training=False)
            with keras.StatelessScope():
                return self.model(x, training=True)

    def _accumulate(self, path: str, x) -> None:
        width = self.widths[path]
        # float64 sums: a constant channel then gets its constant exactly, which folding needs
        a = tf.reshape(tf.cast(x, tf.float64), (-1, width))
        n_b = tf.cast(tf.shape(a)[0], tf.float64)
        mean_b = tf.reduce_mean(a, axis=0)  # NaN for an empty batch, which is not kept
        m2_b = tf.reduce_sum(tf.square(a - mean_b), axis=0)
        absmax_b = tf.reduce_max(tf.abs(a), axis=0)
        count, mean, m2 = self._count[path], self._mean[path], self._m2[path]
        n_a = count.value()
        n = n_a + n_b
        delta = mean_b - mean.value()
        share = n_b / tf.maximum(n, 1.0)
        new_mean = mean.value() + delta * share
        new_m2 = m2.value() + m2_b + tf.square(delta) * n_a * share
        keep = tf.logical_and(self.active, n_b > 0)
        count.assign(tf.where(keep, n, n_a))
        mean.assign(tf.where(keep, new_mean, mean.value()))
        m2.assign(tf.where(keep, new_m2, m2.value()))
        absmax = self._absmax[path]
        absmax.assign(tf.where(keep, tf.maximum(absmax.value(), absmax_b), absmax.value()))
        if path in self._maps:
            total, examples = self._maps[path]
            x64 = tf.cast(x, tf.float64)
            total.assign(tf.where(keep, total.value() + tf.reduce_sum(x64, axis=0), total.value()))
            n_examples = tf.cast(tf.shape(x64)[0], tf.float64)
            examples.assign(tf.where(keep, examples.value() + n_examples, examples.value()))


@keyword_only("batch_size", "steps", "per_position")
def gate_input_means(
    model, data, *, batch_size: int = 32, steps: int | None = None, per_position: bool = False
) -> dict[str, np.ndarray]:
    """{gate path: mean of the gate input per channel position} over ``data``: the ``means``
    that ``mean_replacement_shift`` folds (Evci's mean replacement).

    Args:
        model: the wrapped model whose graph the shift is computed on, with the channels to
            be removed switched on.
        data: inputs ``x``, ``(x, y)`` arrays, a ``tf.data.Dataset`` of batches or a
            ``keras.utils.PyDataset`` (see ``tfchannelprune.core.batches``).
        batch_size, steps: batching of array data and the most batches read.
        per_position: give a gate read by a Flatten its (*spatial, C) mean map, so the Dense
            after it folds each position's own mean (exact mean replacement of its input
            units) instead of the channel's mean at every position (Evci). A conv reading a
            map folds its spatial average, the per-channel mean, so only Flatten consumers
            differ. It helped when one layer was pruned, not when several were at once
            (docs/dead.md), so it is off by default.

    A model without gates is measured through a wrapped copy (``core.wrap.gated_model``),
    whose gate paths are those of ``wrap(model)``.

    Raises:
        ValueError: for empty data; ``NonFiniteInputError`` for NaN or inf in it.
    """
    model = gated_model(model, "gate_input_means")
    graph = ChannelGraph(model)
    maps = flattened_gates(graph) if per_position else ()
    stats = GateStatistics(model, graph, maps=maps)
    tally = FiniteTally("gate_input_means data", "the means folded into biases would be NaN")
    for x in as_dataset(data, batch_size, labels=False, steps=steps, model=model):
        tally.add(x)
        stats.update(x)
    tally.check()
    return {p: m.mean if m.mean_map is None else m.mean_map for p, m in stats.result().items()}


def flattened_gates(graph: ChannelGraph) -> list[str]:
    """Gates whose output is read by a Flatten (or a Reshape that flattens): a reader whose
    rule declares ``flattens``."""
    found = []
    for fn, rule in zip(graph.flat.nodes, graph.rules):
        if not rule.is_gate:
            continue
        for i in graph.flat.consumers.get(fn.outputs[0], []):
            if graph.rules[i].flattens(graph.flat.nodes[i]):
                found.append(fn.path)
                break
    return found
