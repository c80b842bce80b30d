"""Targets over pruning steps.

A schedule follows the protocol of tensorflow-model-optimization's pruning schedules:
``schedule(step) -> (should_prune, sparsity)``, where ``sparsity`` is the fraction of the cost
removed so far (1 - target fraction). tfmot's own ``PolynomialDecay`` and ``ConstantSparsity``
objects satisfy it as they are, so they can be passed to ``ChannelPruning``; this module never
imports tensorflow_model_optimization (importing it switches ``tf.keras`` to Keras 2).
"""

from __future__ import annotations

import dataclasses


def _to_python(value):
    return value.numpy().item() if hasattr(value, "numpy") else value


@dataclasses.dataclass(frozen=True)
class PolynomialSchedule:
    """Cost removed grows from ``initial_sparsity`` to ``final_sparsity`` between
    ``begin_step`` and ``end_step`` as ``final + (initial - final) * (1 - t)^power``; pruning
    happens every ``frequency`` steps (the same formula as tfmot's ``PolynomialDecay``)."""

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float = 3.0
    frequency: int = 1

    def __call__(self, step: int):
        step = int(_to_python(step))
        span = max(self.end_step - self.begin_step, 1)
        t = min(max((step - self.begin_step) / span, 0.0), 1.0)
        sparsity = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1 - t
        ) ** self.power
        in_range = self.begin_step <= step <= self.end_step
        on_beat = (step - self.begin_step) % max(self.frequency, 1) == 0
        return bool(in_range and on_beat), float(sparsity)


@dataclasses.dataclass(frozen=True)
class ConstantSchedule:
    """The final cost reduction from ``begin_step`` on, pruning every ``frequency`` steps."""

    target_sparsity: float
    begin_step: int = 0
    end_step: int = -1
    frequency: int = 1

    def __call__(self, step: int):
        step = int(_to_python(step))
        in_range = step >= self.begin_step and (self.end_step < 0 or step <= self.end_step)
        on_beat = (step - self.begin_step) % max(self.frequency, 1) == 0
        return bool(in_range and on_beat), float(self.target_sparsity)


def target_fraction(schedule, step: int) -> tuple[bool, float]:
    """(prune now?, fraction of the original cost to get down to) from any schedule."""
    should_prune, sparsity = schedule(step)
    return bool(_to_python(should_prune)), 1.0 - float(_to_python(sparsity))
