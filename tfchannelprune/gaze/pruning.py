"""Fisher pruning of a distilled gaze student with the computational-cost term (Theis et al. 2018).

Theis, Korshunova, Tejani & Huszár, "Faster gaze prediction with dense networks and Fisher
pruning" (arXiv:1801.05787, sections on Fisher pruning): train the student by distillation, then
repeatedly train N steps and remove the one feature map with the smallest

    Delta_k + beta * Delta C_k,   Delta_k = 1/(2N) sum_n (sum_hw a * dl_n/da)^2

(the Fisher estimate of the loss increase, `signal="fisher"`) where `Delta C_k < 0` is the
change in MACs, recomputed after every removal. `beta="auto"` ranks by loss increase per MAC
saved (the hyperparameter-free beta* of the paper; twml's `flops_weight="AUTO"`).

Here the library does the work: `tfchannelprune.wrap` gates the backbone and the readout,
`ChannelPruning(signal="fisher", beta=..., channels_per_step=1, frequency="step")` removes one
channel every `steps_per_event` training steps, and the training between removals uses the
distillation targets `0.1 * fixations + 0.9 * teacher` (`train.distillation_targets`), as in
the paper. The signal's per-example loss is the per-image cross-entropy to that target
(`FixationNLL(weighting="image")`), so it does not depend on the batch. Scores are compared
across layers as they are (`normalize="none"`): all are loss changes in nats, which is what
makes `beta` a price in loss per MAC.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras
import numpy as np

from tfchannelprune.core.cost import count_macs
from tfchannelprune.core.surgery import compact
from tfchannelprune.core.wrap import wrap
from tfchannelprune.gaze import data as gaze_data
from tfchannelprune.gaze.train import FixationNLL, distillation_targets
from tfchannelprune.prune.callback import ChannelPruning

__all__ = ["PrunedStudent", "fine_tune", "fisher_prune", "prune_student", "pruning_path"]


@dataclasses.dataclass
class PrunedStudent:
    """One pruned student.

    Attributes:
        model: the compact model (gates removed, channels sliced), fine-tuned when asked.
        gated: the wrapped model at the end of pruning, before compaction and fine-tuning
            (`compact(gated)` computes the same log-density).
        macs: MACs of `model`.
        history: one record per removal event from `ChannelPruning` (macs, channels, ...).
    """

    model: keras.Model
    gated: keras.Model
    macs: int
    history: list[dict]


class _StopWhenPruned(keras.callbacks.Callback):
    """Ends `fit` as soon as the pruning callback has reached its target."""

    def __init__(self, pruning: ChannelPruning):
        super().__init__()
        self.pruning = pruning

    def on_train_batch_end(self, batch, logs=None):
        if self.pruning.done:
            self.model.stop_training = True


def fisher_prune(
    model: keras.Model,
    dataset: gaze_data.GazeDataset,
    targets: np.ndarray,
    *,
    target_macs: float,
    beta: float | str = "auto",
    steps_per_event: int = 10,
    channels_per_step: int = 1,
    calibration_size: int = 64,
    batch_size: int = 16,
    learning_rate: float = 5e-4,
    min_channels: int = 1,
    augment: bool = True,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[keras.Model, list[dict]]:
    """Fisher-prune `model` to `target_macs` while training on `targets`; returns the gated model.

    Args:
        model: a gaze model (not wrapped), already trained (distilled).
        dataset: training images; `targets` are its (N, H, W) training targets, e.g.
            `distillation_targets(teacher, dataset)`.
        target_macs: final MACs as a fraction of `model`'s, in (0, 1].
        beta: cost weight: a float, Theis's fixed price in nats per FLOP saved (per image,
            2 x the marginal MACs; `score - beta * FLOPs saved`), or "auto" (beta*: rank by
            nats per FLOP saved).
        steps_per_event: training steps between removals (the paper's N = 10).
        channels_per_step: channels removed per event (the paper removes one).
        calibration_size: images of `dataset` (the first ones) on which the Fisher signal is
            measured at each event.
        batch_size, learning_rate: Adam fine-tuning between removals.
        min_channels: floor of channels kept in every layer.
        augment: left-right flips during training.

    Returns:
        (gated model with the pruned channels switched off, `ChannelPruning.history`).

    Raises:
        ValueError: `targets` of the wrong shape, or a target that the floors make
            unreachable (from `ChannelPruning`).
    """
    targets = np.asarray(targets, np.float32)
    if targets.shape != (dataset.n_images, *dataset.size):
        raise ValueError(
            f"`targets` must have shape {(dataset.n_images, *dataset.size)}, one map per "
            f"training image. Received: targets.shape={targets.shape}"
        )
    gated = wrap(model)
    gated.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=FixationNLL())
    n_cal = min(calibration_size, dataset.n_images)
    pruning = ChannelPruning(
        (dataset.images[:n_cal], targets[:n_cal]), loss=FixationNLL(weighting="image"),
        signal="fisher", target_macs=target_macs, frequency="step", prune_every=steps_per_event,
        channels_per_step=channels_per_step, normalize="none", beta=beta,
        min_channels=min_channels, verbose=verbose,
    )  # fmt: skip
    train = gaze_data.as_tf_dataset(
        dataset, batch_size, targets, shuffle=True, seed=seed, augment=augment
    )
    steps_per_epoch = math.ceil(dataset.n_images / batch_size)
    channels = sum(layer.units for layer in gated.layers if hasattr(layer, "gate"))
    events = math.ceil(channels / channels_per_step) + 1  # an upper bound
    epochs = math.ceil(events * steps_per_event / steps_per_epoch) + 1
    gated.fit(
        train.repeat(), steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=0, shuffle=False,
        callbacks=[pruning, _StopWhenPruned(pruning)],
    )  # fmt: skip
    if not pruning.done:
        raise RuntimeError(
            f"Pruning stopped before reaching target_macs={target_macs}; this is a bug. "
            f"Received: history={pruning.history[-1:]}"
        )
    return gated, pruning.history


def fine_tune(
    model: keras.Model,
    dataset: gaze_data.GazeDataset,
    targets: np.ndarray,
    epochs: int,
    batch_size: int = 16,
    learning_rate: float = 5e-4,
    augment: bool = True,
    seed: int = 0,
) -> keras.Model:
    """Train a (compact) gaze model on `targets` with Adam; returns the model."""
    if epochs > 0:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=FixationNLL())
        train = gaze_data.as_tf_dataset(
            dataset, batch_size, targets, shuffle=True, seed=seed, augment=augment
        )
        model.fit(train, epochs=epochs, shuffle=False, verbose=0)
    return model


def prune_student(
    student: keras.Model,
    teacher: keras.Model,
    dataset: gaze_data.GazeDataset,
    *,
    target_macs: float,
    fixation_weight: float = 0.1,
    fine_tune_epochs: int = 5,
    targets: np.ndarray | None = None,
    **prune_kwargs,
) -> PrunedStudent:
    """Distillation-guided Fisher pruning, compaction and fine-tuning of a student.

    Args:
        student: the distilled student (left unchanged).
        teacher: the teacher whose densities make the distillation targets.
        dataset: training images and fixations.
        target_macs: final MACs as a fraction of the student's, in (0, 1].
        fixation_weight: weight of the human fixations in the targets (the paper's 0.1).
        fine_tune_epochs: epochs of fine-tuning of the compact model on the same targets.
        targets: precomputed distillation targets (skips running the teacher).
        **prune_kwargs: see `fisher_prune` (beta, steps_per_event, ...).

    Returns:
        A `PrunedStudent`.
    """
    if targets is None:
        targets = distillation_targets(teacher, dataset, fixation_weight)
    gated, history = fisher_prune(
        student, dataset, targets, target_macs=target_macs, **prune_kwargs
    )
    model = compact(gated)
    lr = prune_kwargs.get("learning_rate", 5e-4)
    fine_tune(model, dataset, targets, fine_tune_epochs, learning_rate=lr)
    return PrunedStudent(model, gated, count_macs(model), history)


def pruning_path(
    student: keras.Model,
    teacher: keras.Model,
    dataset: gaze_data.GazeDataset,
    macs_levels: Sequence[float],
    **kwargs,
) -> list[PrunedStudent]:
    """Pruned students at decreasing MACs, each pruned further from the previous one.

    Args:
        macs_levels: absolute MACs to reach, e.g. `[teacher_macs / 10, teacher_macs / 20]`;
            sorted from the largest. Each level starts from the previous fine-tuned model, so
            the path costs about as much as pruning once to the smallest level.
        **kwargs: see `prune_student`.
    """
    levels = sorted((float(m) for m in macs_levels), reverse=True)
    start = count_macs(student)
    if not levels or levels[0] > start or levels[-1] <= 0:
        raise ValueError(
            f"`macs_levels` must be in (0, {start}] (the student's MACs). "
            f"Received: macs_levels={list(macs_levels)}"
        )
    if kwargs.get("targets") is None:
        kwargs["targets"] = distillation_targets(
            teacher, dataset, kwargs.pop("fixation_weight", 0.1)
        )
    results, current = [], student
    for level in levels:
        fraction = min(1.0, level / count_macs(current))
        result = prune_student(current, teacher, dataset, target_macs=fraction, **kwargs)
        results.append(result)
        current = result.model
    return results
