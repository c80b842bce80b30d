"""Greedy selection: targets, floors, rounding, ignored layers, cost terms."""

import numpy as np
import pytest
import zoo

import tfchannelprune as tcp
from tfchannelprune.core.cost import macs_for
from tfchannelprune.prune import select


@pytest.fixture
def graph():
    return tcp.ChannelGraph(tcp.wrap(zoo.resnet_style()))


def full_masks(graph):
    return {g.name: np.ones(g.size, bool) for g in graph.prunable_groups}


def rand_scores(graph, seed=0):
    rng = np.random.default_rng(seed)
    return {g.name: rng.random(g.size) for g in graph.prunable_groups}


@pytest.mark.parametrize("mode", ["global", "local"])
def test_reaches_macs_target(graph, mode):
    config = select.SelectionConfig(mode=mode)
    original = macs_for(graph, full_masks(graph))
    masks = select.select_channels(graph, rand_scores(graph), {}, config,
                                   target_macs=0.5 * original)  # fmt: skip
    macs = macs_for(graph, masks)
    assert macs <= 0.5 * original
    assert macs > 0.3 * original  # greedy stops as soon as it gets there


def test_lowest_scores_go_first(graph):
    scores = rand_scores(graph)
    config = select.SelectionConfig(normalize="none")
    masks = select.select_channels(graph, scores, {}, config, max_channels=5)
    removed = [(n, c) for n, m in masks.items() for c in np.flatnonzero(~m)]
    assert len(removed) == 5
    all_scores = sorted(s for n in scores for s in scores[n])
    assert sorted(scores[n][c] for n, c in removed) == all_scores[:5]


def test_floor_round_to_and_ignored(graph):
    stem = graph.prunable_groups[0].producers[0]
    config = select.SelectionConfig(min_channels=3, round_to=4, ignored_layers=(stem,))
    masks = select.select_channels(graph, rand_scores(graph), {}, config, target_macs=1)
    ignored = [g.name for g in graph.prunable_groups if stem in g.producers]
    assert ignored and all(n not in masks for n in ignored)
    for name, mask in masks.items():
        kept = int(mask.sum())
        assert kept >= 3 and kept % 4 == 0, (name, kept)


def test_switched_off_channels_stay_off(graph):
    first = select.select_channels(graph, rand_scores(graph, 1), {}, select.SelectionConfig(),
                                   max_channels=4)  # fmt: skip
    second = select.select_channels(graph, rand_scores(graph, 2), first,
                                    select.SelectionConfig(), max_channels=4)  # fmt: skip
    for name in first:
        assert not np.any(second[name] & ~first[name])
    assert sum((~m).sum() for m in second.values()) == 8


def test_cost_term_prefers_expensive_channels(graph):
    # equal scores everywhere: with beta the channel that saves the most MACs goes first
    scores = {g.name: np.ones(g.size) for g in graph.prunable_groups}
    config = select.SelectionConfig(normalize="none", beta=1.0)
    masks = select.select_channels(graph, scores, {}, config, max_channels=1)
    marginal = tcp.marginal_macs(graph)
    chosen = next(n for n, m in masks.items() if not m.all())
    assert marginal[chosen] == max(marginal.values())
    auto = select.select_channels(graph, scores, {}, select.SelectionConfig(
        normalize="none", beta="auto"), max_channels=1)  # fmt: skip
    assert next(n for n, m in auto.items() if not m.all()) == chosen


def test_bad_config():
    with pytest.raises(ValueError, match="mode"):
        select.SelectionConfig(mode="everywhere")
    with pytest.raises(ValueError, match="beta"):
        select.SelectionConfig(beta="sometimes")
    with pytest.raises(ValueError, match="min_channels"):
        select.SelectionConfig(min_channels=0)
