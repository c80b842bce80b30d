"""The greedy procedure's defaults, and presets for the papers' settings.

Molchanov et al. 2017 ("Pruning Convolutional Neural Networks for Resource Efficient
Inference", arXiv:1611.06440) and Theis et al. 2018 ("Faster gaze prediction with dense
networks and Fisher pruning", arXiv:1801.05787) both remove ONE feature map every few
fine-tuning updates, from a criterion accumulated over those updates, ranked globally:
Molchanov's Taylor with layer-wise L2 normalisation (and optionally ``lam`` x normalised FLOPs),
Theis's unnormalised Fisher plus ``beta`` x the FLOPs saved (``beta*`` = "auto" when untuned).

``ChannelPruning`` follows them by default: a few channels per event
(``channels_per_step="auto"``: 5% of the prunable channels), Taylor with L2 and Fisher with
none + ``beta="auto"``; other criteria are normalised by their group mean (``"mean"``, as
Torch-Pruning's default), which measurement on a residual network preferred to L2 (L2 gives a
group of n similar channels about 1/sqrt(n) each, so the widest groups go first: see
benchmarks/results/pruning_resnet.md). One-shot pruning is an explicit choice:
``channels_per_step=None``.
"""

from __future__ import annotations

import math

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
    """{"normalize", "beta"} the procedure uses for ``importance`` when left to "auto"."""
    from tfchannelprune.saliency import signals

    sid = signal_id(importance)
    if sid == signals.get("taylor").id:
        return {"normalize": "l2", "beta": 0.0}
    if sid == signals.get("fisher").id:
        return {"normalize": "none", "beta": "auto"}
    return {"normalize": "mean", "beta": 0.0}


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
