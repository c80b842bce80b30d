"""``ChannelBandit``: combinatorial UCB over the channels of each group (state in tf.Variables).

Every channel of a group is a base arm; each step the group plays a super-arm of ``k`` channels,
the top-k by the optimistic index (Chen, Wang & Yuan, ICML 2013, CUCB; used by Spasov & Lio 2019,
arXiv:1905.06435)::

    index_i = mu_i + c * sqrt(ln t / T_i)        (T_i = 0: +inf, so every arm is tried once)

with ``c = sqrt(3/2)`` by default. Ties (unplayed arms) are broken at random. The index is not
clipped to 1 as in the CUCB paper: with rewards normalised by the group maximum most arms would
tie at 1 and selection would be random for a long time.

Example:
    >>> bandit = ChannelBandit({"conv1": (32, 16)}, seed=0)
    >>> active = bandit.select()                  # {"conv1": int32 [16], sorted}
    >>> bandit.update(active, {"conv1": rewards})  # rewards in [0, 1], one per active arm
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

DEFAULT_EXPLORATION = math.sqrt(1.5)


class ChannelBandit(tf.Module):
    """Per group: play counts ``T``, mean rewards ``mu``; a shared clock ``t`` and random state.

    Args:
        groups: {group name: (number of arms, arms played per step k)}, 1 <= k <= arms.
        exploration_coef: ``c`` in the index above (sqrt(3/2) in CUCB).
        seed: seed of the tie-breaking random generator (its state is checkpointed too).

    All state is in ``tf.Variable``s (``self.variables``), so ``tf.train.Checkpoint(bandit=b)``
    saves and restores it, random state included: a restored bandit makes the same choices.

    Raises:
        ValueError: for an empty ``groups``, k outside [1, arms], or a negative coefficient.
    """

    def __init__(
        self,
        groups: Mapping[str, tuple[int, int]],
        exploration_coef: float = DEFAULT_EXPLORATION,
        seed: int = 0,
        name: str = "channel_bandit",
    ):
        super().__init__(name=name)
        if not groups:
            raise ValueError("A ChannelBandit needs at least one group. Received: groups={}")
        for group, (arms, k) in groups.items():
            if not 1 <= int(k) <= int(arms):
                raise ValueError(
                    f"Group {group!r} has {arms} arms; it must play between 1 and {arms} of "
                    f"them per step. Received: k={k}"
                )
        if not exploration_coef >= 0:
            raise ValueError(
                f"exploration_coef must be >= 0. Received: exploration_coef={exploration_coef}"
            )
        self.names = list(groups)
        self.sizes = {g: int(a) for g, (a, _) in groups.items()}
        self.ks = {g: int(k) for g, (_, k) in groups.items()}
        self.exploration_coef = float(exploration_coef)
        self.t = tf.Variable(0, dtype=tf.int64, trainable=False, name="t")
        self.counts = [self._vec(g, "counts", tf.float32) for g in self.names]
        self.means = [self._vec(g, "means", tf.float32) for g in self.names]
        self.last_active = [
            tf.Variable(tf.range(self.ks[g]), trainable=False, name=_safe(g) + "_active")
            for g in self.names
        ]
        self.generator = tf.random.Generator.from_seed(seed)

    def _vec(self, group, kind, dtype):
        return tf.Variable(
            tf.zeros(self.sizes[group], dtype), trainable=False, name=f"{_safe(group)}_{kind}"
        )

    # ------------------------------------------------------------------ the two steps
    def select(self) -> dict[str, tf.Tensor]:
        """The k arms of every group with the highest index, sorted ascending (int32).

        Also stored in ``last_active`` (what the last step executed)."""
        t = tf.cast(tf.maximum(self.t + 1, 1), tf.float32)  # the step about to be played
        chosen = {}
        for i, g in enumerate(self.names):
            counts, means = self.counts[i], self.means[i]
            bonus = self.exploration_coef * tf.sqrt(tf.math.log(t) / tf.maximum(counts, 1.0))
            index = tf.where(counts > 0, means + bonus, tf.float32.max)
            # a random permutation first, so that top_k breaks ties at random
            perm = tf.cast(tf.argsort(self.generator.uniform([self.sizes[g]])), tf.int32)
            top = tf.math.top_k(tf.gather(index, perm), k=self.ks[g], sorted=False).indices
            active = tf.sort(tf.gather(perm, top))
            self.last_active[i].assign(active)
            chosen[g] = active
        return chosen

    def update(self, active: Mapping[str, tf.Tensor], rewards: Mapping[str, tf.Tensor]) -> None:
        """Semi-bandit feedback: one reward in [0, 1] per played arm; advances the clock."""
        for i, g in enumerate(self.names):
            idx = tf.reshape(tf.cast(active[g], tf.int32), [-1, 1])
            reward = tf.reshape(tf.cast(rewards[g], tf.float32), [-1])
            count = tf.gather_nd(self.counts[i], idx) + 1.0
            mean = tf.gather_nd(self.means[i], idx)
            self.counts[i].scatter_nd_update(idx, count)
            self.means[i].scatter_nd_update(idx, mean + (reward - mean) / count)
        self.t.assign_add(1)

    # ------------------------------------------------------------------ reading
    def mean_rewards(self) -> dict[str, np.ndarray]:
        return {g: v.numpy() for g, v in zip(self.names, self.means)}

    def play_counts(self) -> dict[str, np.ndarray]:
        return {g: v.numpy() for g, v in zip(self.names, self.counts)}

    def best(self, fraction: float | None = None) -> dict[str, list[int]]:
        """{group: sorted indices} of the arms with the highest mean reward (ties: more plays).

        Args:
            fraction: share of each group to keep (at least one arm); None keeps k arms.
        """
        plan = {}
        for g, means, counts in zip(self.names, self.means, self.counts):
            size = self.sizes[g]
            keep = self.ks[g] if fraction is None else max(1, int(round(fraction * size)))
            order = np.lexsort((-counts.numpy(), -means.numpy()))  # last key is primary
            plan[g] = sorted(int(i) for i in order[: min(keep, size)])
        return plan


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)
