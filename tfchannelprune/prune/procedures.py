"""The greedy procedure's defaults, and presets for the papers' settings.

Molchanov et al. 2017 ("Pruning Convolutional Neural Networks for Resource Efficient
Inference", arXiv:1611.06440) and Theis et al. 2018 ("Faster gaze prediction with dense
networks and Fisher pruning", arXiv:1801.05787) both remove ONE feature map every few
fine-tuning updates, from a criterion accumulated over those updates, ranked globally:
Molchanov's Taylor with layer-wise L2 normalisation (and optionally ``lam`` x normalised FLOPs),
Theis's unnormalised Fisher plus ``beta`` x the FLOPs saved (``beta*`` = "auto" when untuned).
``ChannelPruning.from_paper`` gives either procedure as published.

``ChannelPruning`` and ``prune()`` follow them by default in the procedure (a few channels per
event, ``channels_per_step="auto"``: 5% of the prunable channels; Taylor, ``signal="taylor"``,
the calling convention's one default) but rank every criterion the same way: scores divided by
their group's mean (``normalize="mean"``), no cost term (``beta=0``). Measured in issue 18
(benchmarks/defaults.py, results/defaults.md: ResNet-8 and a plain CNN at 25% and 50% of the
MACs), the papers' rankings lose for two opposite reasons:

* Layer-wise L2 gives a group of n similar channels about 1/sqrt(n) each, so the widest groups
  go first whatever their scores: on ResNet-8 it cut the 64-channel last stage to 20.
* Ranking by score per FLOP saved (Theis's ``beta*``, Fisher's former default), or ``lam``
  large enough to act, takes the group whose channels cost the most MACs (the 28x28 stem
  group) down to one channel.

The mean makes a group's values independent of its width, so two groups with the same score
distribution lose the same fraction (tests/test_select.py). On the issue's protocol (15 dense
epochs, 5 after pruning, 3 seeds per cell) the global ranking still collapsed on a depthwise
CNN (76.2% on one seed at 50% of the MACs) and the rule fixed before the runs, applied to all
three architectures measured, chose ``mode="local"`` (the same fraction from every group) on
validation, 95.15 against 94.34 (docs/pruning.md). ``mode="auto"`` resolves to
``DEFAULT_SELECTION["mode"]`` unless a cost term or a named normalisation asks for a global
ranking (``resolve_selection``).
"""

from __future__ import annotations

import math

from tfchannelprune.saliency.importance import SignalImportance

# name -> ChannelPruning keyword arguments
PAPERS = {
    "molchanov2017": {
        "signal": "taylor", "normalize": "l2", "lam": 1e-3, "beta": 0.0,
        "frequency": "step", "prune_every": 10, "channels_per_step": 1,
    },
    "theis2018": {
        "signal": "fisher", "normalize": "none", "lam": 0.0, "beta": "auto",
        "frequency": "step", "prune_every": 10, "channels_per_step": 1,
    },
}  # fmt: skip

# issue 18: chosen on the validation split of benchmarks/defaults.py (results/defaults.md)
DEFAULT_SELECTION = {"mode": "local", "normalize": "mean", "beta": 0.0}

# issue 18: how prune()'s rounds 2.. score a mask signal when fine-tuning runs ("auto")
DEFAULT_SCORING = "calibration"

AUTO_FRACTION = 0.05  # of the prunable channels, removed at most per event by default


def paper(name: str) -> dict:
    """The ``ChannelPruning`` settings of a paper's procedure.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in PAPERS:
        raise ValueError(f"Unknown paper {name!r}; choose one of {sorted(PAPERS)}. "
                         f"Received: paper={name!r}")  # fmt: skip
    return dict(PAPERS[name])


def signal_id(importance) -> str | None:
    signal = getattr(importance, "signal", None)
    return getattr(signal, "id", None)


def default_selection(importance) -> dict:
    """{"mode", "normalize", "beta"} the procedure uses for ``importance`` when left to
    "auto".

    The same for every criterion (see the module docstring): group-mean normalisation, no
    cost term. The papers' rankings stay one argument away (``normalize="l2"``,
    ``beta="auto"``) or come whole with ``ChannelPruning.from_paper``.
    """
    del importance  # kept in the signature: a criterion may get its own default again
    return dict(DEFAULT_SELECTION)


def resolve_selection(importance, mode="auto", normalize="auto", beta=None, lam=0.0) -> dict:
    """``mode``, ``normalize``, ``beta`` and ``lam`` as given, "auto" (``beta=None``)
    replaced by ``default_selection(importance)``. A cost term (``lam`` or ``beta``) or a
    normalisation given by name compares channels across groups, so either makes
    ``mode="auto"`` global."""
    auto = default_selection(importance)
    beta = auto["beta"] if beta is None else beta
    if mode == "auto":
        mode = "global" if (lam or beta or normalize != "auto") else auto["mode"]
    normalize = auto["normalize"] if normalize == "auto" else normalize
    return {"mode": mode, "normalize": normalize, "beta": beta, "lam": lam}


def resolve_scoring(scoring, importance, fine_tunes: bool, gated_rounds: bool) -> str:
    """``prune()``'s ``scoring``: "calibration" (every round scores ``data``) or
    "fine_tuning" (round 1 scores ``data``; each later round reads its mask signal as the
    previous round's fine-tuning steps accumulated it, Molchanov's procedure). "auto" is
    ``DEFAULT_SCORING`` where "fine_tuning" can run, else "calibration".

    Raises:
        ValueError: for an unknown value, or "fine_tuning" where it cannot run (a signal that
            is not a mask_delta one, no fine-tuning, or rounds that compact every round).
    """
    if scoring not in ("auto", "calibration", "fine_tuning"):
        raise ValueError("scoring must be 'auto', 'calibration' or 'fine_tuning'. "
                         f"Received: scoring={scoring!r}")  # fmt: skip
    possible = (isinstance(importance, SignalImportance) and importance.signal.kind == "mask"
                and fine_tunes and gated_rounds)  # fmt: skip
    if scoring == "auto":
        return DEFAULT_SCORING if possible else "calibration"
    if scoring == "fine_tuning" and not possible:
        raise ValueError(
            "scoring='fine_tuning' reads a mask_delta signal ('taylor', 'fisher' ...) from "
            "the fine-tuning steps of the rounds on one gated model: it needs such a signal, "
            "fine_tune_data with fine_tune_epochs >= 1, and neither compact_every_round nor "
            f"mean_replacement. Received: signal={getattr(importance, 'name', importance)!r}, "
            f"fine-tuning={fine_tunes}, gated rounds={gated_rounds}"
        )
    return scoring


def channels_per_event(spec, prunable_channels: int, schedule="constant") -> int | None:
    """The cap on channels removed per event: an int, None (no cap) or "auto" (5% of the
    prunable channels with the "constant" schedule; no cap when a polynomial or tfmot-style
    schedule sets the pace)."""
    if spec == "auto":
        if schedule != "constant":
            return None
        return max(1, math.ceil(AUTO_FRACTION * prunable_channels))
    if spec is None:
        return None
    if not isinstance(spec, int) or spec < 1:
        raise ValueError(
            "channels_per_step is a positive int, 'auto' (5% of the prunable channels) or "
            f"None (no cap: one-shot). Received: channels_per_step={spec!r}"
        )
    return spec
