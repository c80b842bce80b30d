"""FPGM: filters near the geometric median of their layer are the most replaceable.

He, Liu, Wang, Hu & Yang, "Filter Pruning via Geometric Median for Deep Convolutional Neural
Networks Acceleration" (CVPR 2019, arXiv:1811.00250), eq. (6)-(8): the filter that minimises
the sum of Euclidean distances to all other filters of its layer is (near) the geometric median,
and the information it carries is shared by the others; so the score of filter ``k`` is

    score_k = sum_j ||F_k - F_j||_2

and the lowest scores are pruned first. This is not the distance to the mean filter: a filter
can be close to the mean and far from most others (see tests/test_fpgm.py).

A filter is the producer kernel's slice along its output channel axis
(``ScoringContext.filters``, with the axes the layer rules declare). A group fed by several
producers (a residual add) concatenates the slices of every producer into one filter per
channel; a channel that a kernel holds at several positions (a depthwise multiplier)
contributes each of them.
"""

from __future__ import annotations

import numpy as np

from tfchannelprune.saliency.importance import Importance


class FPGM(Importance):
    """Sum of L2 distances of each channel's filter to the other filters of its group.

    Args:
        norm: the distance, ``"l2"`` (the paper's default) or ``"l1"``.

    Groups without a producer kernel (nothing to compare) are left out of the scores.

    Example:
        >>> scores = tcp.collect_saliency(model, None, None, signal="fpgm")
        >>> pruning = tcp.ChannelPruning(None, signal="fpgm", target_macs=0.5)
    """

    needs_data = False

    def __init__(self, norm: str = "l2"):
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2'. Received: norm={norm!r}")
        self.norm = norm

    @property
    def name(self) -> str:
        return "fpgm"

    def __call__(self, context) -> dict[str, np.ndarray]:
        """Distance sums among the channels kept (``context.masks``): a switched-off filter
        is no longer one of the layer's (it scores 0, and it is out of the ranking)."""
        out = {}
        for group, filters in context.filters().items():
            kept = np.asarray(context.masks.get(group, np.ones(len(filters), bool)), bool)
            scores = np.zeros(len(filters), np.float64)
            scores[kept] = self.distance_sums(filters[kept])
            out[group] = scores
        return out

    def distance_sums(self, filters: np.ndarray) -> np.ndarray:
        """``sum_j d(F_k, F_j)`` for every row ``k`` of ``filters`` (channels x weights)."""
        filters = np.asarray(filters, dtype=np.float64)
        if self.norm == "l1":
            return np.array([np.abs(filters - f).sum() for f in filters])
        squares = np.sum(np.square(filters), axis=1)
        gram = filters @ filters.T
        d2 = np.maximum(squares[:, None] + squares[None, :] - 2.0 * gram, 0.0)
        np.fill_diagonal(d2, 0.0)
        return np.sqrt(d2).sum(axis=1)

    def get_config(self) -> dict:
        return {"norm": self.norm}
