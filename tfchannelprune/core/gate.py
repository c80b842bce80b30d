"""``ChannelGate``: the layer that switches channels on and off in a wrapped model.

A gate multiplies a tensor's channels by a non-trainable 0/1 vector. ``wrap`` (``core.wrap``)
puts one on every tensor that may carry a switched-off channel into a layer that reads channels
jointly, so that a gate at 0 is exactly equivalent to removing the channel.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import keras

_RECORDER: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "tfchannelprune_gate_recorder", default=None
)


@keras.saving.register_keras_serializable(package="tfchannelprune")
class ChannelGate(keras.layers.Layer):
    """Multiplies the last axis by a non-trainable per-channel 0/1 gate.

    Args:
        units: number of channels (the last axis of the input).

    The gate state is a weight named ``gate``, so it is saved in ``.keras`` files and
    checkpoints. Inside ``record_gate_inputs(fn)``, ``fn(gate_layer, x)`` is called with the
    gate's input and may return a replacement for it (saliency collection hooks in here).
    """

    def __init__(self, units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True

    def build(self, input_shape):
        units = input_shape[-1]
        if self.units is not None and units != self.units:
            raise ValueError(
                f"ChannelGate {self.name!r} was made for {self.units} channels. "
                f"Received: input_shape={input_shape}"
            )
        self.units = units
        self.gate = self.add_weight(
            name="gate", shape=(units,), initializer="ones", trainable=False
        )

    def call(self, inputs):
        recorder = _RECORDER.get()
        if recorder is not None:
            inputs = recorder(self, inputs)
        return inputs * keras.ops.cast(self.gate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@contextlib.contextmanager
def record_gate_inputs(fn: Callable):
    """Call ``fn(gate, x)`` on every gate input while the context is open (also when a
    ``tf.function`` is traced inside it). Contexts stack: inside another one, ``fn`` receives
    what the outer callback returned, so two features can record the same pass."""
    outer = _RECORDER.get()
    if outer is None:
        recorder = fn
    else:

        def recorder(gate, x):
            return fn(gate, outer(gate, x))

    token = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def is_wrapped(model) -> bool:
    return any(isinstance(layer, ChannelGate) for layer in leaf_layers(model))


def leaf_layers(model):
    """Every layer of ``model``, nested models opened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def gate_layers(model) -> dict[str, ChannelGate]:
    found = {}

    def walk(m, prefix):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer, prefix + layer.name + "/")
            elif isinstance(layer, ChannelGate):
                found[prefix + layer.name] = layer

    walk(model, "")
    return found
