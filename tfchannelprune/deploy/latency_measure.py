"""Micro-benchmarks for the latency model: a few layers at given widths, timed in LiteRT.

A *unit* is a leaf call of a model plus the zero-MAC same-shape calls that follow it alone
(BatchNorm, activations): LiteRT folds those into the call before them, so they are timed
together. `unit_model` rebuilds a unit with the channels of a keep-mask plan removed (through
the layers' own rules, as ``compact`` does) on inputs of the matching width; `MicroBench`
times converted models in interleaved rounds (fastest invoke per round, median over rounds), and
`LatencyCache` keeps each result on disk under a key made of the layers' configurations, the
input shapes, the dtype, the thread count and the runtime, so a second build is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time

import keras
import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.checks import check_output_path
from tfchannelprune.core.surgery import node_cut
from tfchannelprune.deploy.export import export_tflite
from tfchannelprune.deploy.latency import benchmark_tflite

DTYPES = ("float32", "int8")
STATISTIC = "min1"  # in the cache file name: entries timed another way are not mixed in


def require_litert():
    """Import LiteRT's interpreter or say how to install it.

    Raises:
        ImportError: ``ai_edge_litert`` is not installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ImportError(
            "The latency model times layers in LiteRT, which is not installed. Install it "
            "with `pip install ai-edge-litert`. Received: import ai_edge_litert failed"
        ) from error
    return Interpreter


def default_cache_dir() -> str:
    """``$TFCHANNELPRUNE_CACHE/latency`` or ``~/.cache/tfchannelprune/latency``."""
    root = os.environ.get("TFCHANNELPRUNE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tfchannelprune"
    )
    return os.path.join(root, "latency")


def machine_tag() -> str:
    """The runtime a measurement is valid for: CPU, LiteRT version."""
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - metadata missing: the tag still separates machines
        litert = "unknown"
    return f"{platform.machine()}-{platform.processor() or 'cpu'}-{os.cpu_count()}-litert{litert}"


# --------------------------------------------------------------------------- units
def units_of(graph) -> list[list]:
    """The model's leaf calls in order, each with the calls LiteRT folds into it: a call
    whose only input is the previous call's only output, read by nothing else, of the same
    shape, and costing no MACs (BatchNorm, activations, dropout)."""
    consumers = graph.flat.consumers
    units: list[list] = []
    for fn, rule in zip(graph.flat.nodes, graph.rules, strict=True):
        if rule.is_gate:
            continue
        if units and _folds(graph, units[-1][-1][0], fn, rule, consumers):
            units[-1].append((fn, rule))
        else:
            units.append([(fn, rule)])
    return units


def _folds(graph, previous, fn, rule, consumers) -> bool:
    if len(fn.inputs) != 1 or len(previous.outputs) != 1 or fn.inputs[0] != previous.outputs[0]:
        return False
    if len(consumers.get(fn.inputs[0], ())) != 1 or len(fn.outputs) != 1:
        return False
    if tuple(fn.input_shapes[0]) != tuple(fn.output_shapes[0]):
        return False
    width = int(fn.output_shapes[0][-1] or 1)
    try:
        return rule.macs(fn, width, width) == 0
    except Exception:  # noqa: BLE001 - a rule that cannot cost this call is timed alone
        return False


def groups_of(graph, unit) -> set[str]:
    """Prunable groups on the inputs and outputs of a unit's calls."""
    names = set()
    for fn, _ in unit:
        for tensor in (*fn.inputs, *fn.outputs):
            index, _ = graph.group_layout(tensor)
            names |= {graph.groups[i].name for i in np.unique(index)
                      if i >= 0 and graph.groups[i].prunable}  # fmt: skip
    return names


def overhead_model() -> keras.Model:
    """One op on one value: what every invoke costs besides the work."""
    x = keras.Input(batch_shape=(1, 1))
    return keras.Model(x, keras.layers.ReLU()(x))


def _strip_names(value):
    if isinstance(value, dict):
        return {k: _strip_names(v) for k, v in value.items() if k != "name"}
    if isinstance(value, (list, tuple)):
        return [_strip_names(v) for v in value]
    return value


def _op_config(op, cut) -> dict:
    config = cut[0] if cut is not None else None
    if callable(config):
        return {"replacement": repr(config)}
    if config is None:
        try:
            config = op.get_config()
        except Exception:  # noqa: BLE001 - a config-less op: its class says what it does
            config = {}
    return _strip_names(config)


def unit_key(graph, unit, masks, dtype: str, num_threads: int) -> str:
    """The cache key of ``unit`` at ``masks``: configs, input shapes, dtype, threads."""
    parts = []
    for fn, rule in unit:
        cut = node_cut(graph, fn, rule, masks)[2]
        parts.append([type(fn.op).__name__, _op_config(fn.op, cut)])
    head = unit[0][0]
    shapes = [_input_shape(graph, head, i, masks) for i in range(len(head.inputs))]
    text = json.dumps([parts, shapes, dtype, num_threads], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def _input_shape(graph, fn, i, masks) -> list:
    shape = list(fn.input_shapes[i])
    kept = len(graph.positions_kept(graph.layout_of(fn.inputs[i]), masks))
    return [1, *shape[1:-1], kept]


def unit_model(graph, unit, masks) -> keras.Model:
    """A model of the unit's calls with the channels ``masks`` switch off removed.

    Args:
        graph: ``ChannelGraph`` of a model without gates.
        unit: [(FlatNode, rule)], the head first.
        masks: {group: keep mask}; groups left out keep every channel.
    """
    head = unit[0][0]
    inputs = [keras.Input(batch_shape=_input_shape(graph, head, i, masks))
              for i in range(len(head.inputs))]  # fmt: skip
    values = dict(zip(head.inputs, inputs, strict=True))
    for fn, rule in unit:
        cut = node_cut(graph, fn, rule, masks)[2]
        if isinstance(fn.op, keras.layers.Layer):
            op = _keras.clone_layer(fn.op, cut[0] if cut is not None else None)
        elif cut is None:
            op = _keras.clone_operation(fn.op)
        else:
            op = cut[0] if callable(cut[0]) else type(fn.op).from_config(cut[0])
        args, kwargs = fn.node.arguments.fill_in(_keras.input_values(fn, values.__getitem__))
        outputs = keras.tree.flatten(op(*args, **kwargs))
        values.update(zip(fn.outputs, outputs, strict=False))
    last = unit[-1][0]
    return keras.Model(inputs, [values[t] for t in last.outputs])


# --------------------------------------------------------------------------- conversion
def convert_micro(model: keras.Model, dtype: str) -> bytes:
    """A flatbuffer of a micro-model: float32, or full int8 calibrated on random inputs."""
    import tensorflow as tf

    shapes = [(1, *x.shape[1:]) for x in model.inputs]
    specs = [tf.TensorSpec(s, "float32", name=f"input_{i}") for i, s in enumerate(shapes)]
    function = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0]))
    concrete = function.get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if dtype == "int8":
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter.representative_dataset = lambda: (
            [rng.standard_normal(s).astype("float32") for s in shapes] for _ in range(8)
        )
    return converter.convert()


class MicroBench:
    """Times flatbuffers in interleaved rounds: the fastest invoke of each round, median over
    rounds. On a shared machine other processes only ever slow a run down, and they slow a
    long invoke (a whole model spans several scheduler slices) more than a short one (a
    layer), so a median per round would compare layers and models under different loads.

    Args:
        num_threads: LiteRT interpreter threads (XNNPACK delegate, batch 1).
        rounds: interleaved rounds over every model.
        budget_s: time spent on one model per round (at least ``min_runs`` invokes).
    """

    def __init__(self, num_threads: int = 1, rounds: int = 3, budget_s: float = 0.01,
                 min_runs: int = 5):  # fmt: skip
        self.Interpreter = require_litert()
        self.num_threads, self.rounds = num_threads, rounds
        self.budget_s, self.min_runs = budget_s, min_runs

    def _interpreter(self, flatbuffer: bytes):
        interpreter = self.Interpreter(model_content=flatbuffer, num_threads=self.num_threads)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            value = rng.standard_normal(detail["shape"])
            if np.issubdtype(detail["dtype"], np.integer):
                value = np.clip(value * 40, -128, 127)
            interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
        for _ in range(3):  # XNNPACK packs the weights on the first invoke
            interpreter.invoke()
        return interpreter

    def _round(self, interpreter) -> float:
        times, spent = [], 0.0
        while len(times) < self.min_runs or spent < self.budget_s:
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
            spent += times[-1]
            if len(times) >= 1000:
                break
        return float(np.min(times)) * 1e3

    def time(self, flatbuffers: list[bytes]) -> list[float]:
        """Latency in ms of each flatbuffer (fastest per round, median over rounds)."""
        interpreters = [self._interpreter(fb) for fb in flatbuffers]
        rounds = [[self._round(it) for it in interpreters] for _ in range(self.rounds)]
        return [float(v) for v in np.median(np.array(rounds), axis=0)]


class LatencyCache:
    """{unit key: ms} in one JSON file per runtime, dtype and thread count."""

    def __init__(self, cache_dir: str | os.PathLike | None, dtype: str, num_threads: int):
        self.dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        name = f"{machine_tag()}-{STATISTIC}-{dtype}-t{num_threads}.json".replace(os.sep, "_")
        self.path = os.path.join(self.dir, name)
        try:  # checked before any timing, not when the table is saved at the end
            os.makedirs(self.dir, exist_ok=True)
        except OSError as error:
            raise type(error)(
                f"The latency cache directory {self.dir!r} cannot be created "
                f"({error.strerror}). Pass a writable cache_dir. Received: cache_dir={cache_dir!r}"
            ) from None
        check_output_path(self.path, "cache_dir")
        self.values: dict[str, float] = {}
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.values = json.load(f)

    def save(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".latency")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.values, f)
        os.replace(tmp, self.path)


def exported_latency_ms(model, num_threads: int = 1, runs: int = 30) -> float:
    """Median LiteRT latency (ms, batch 1) of ``model`` exported to float32 as it stands."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        export_tflite(model, path)
        return benchmark_tflite(path, num_threads=num_threads, runs=runs).median_ms
