"""Shared checks for the coverage tests and benchmarks/coverage.py: gated == compact on every
output, and the share of channels in prunable groups."""

from __future__ import annotations

import numpy as np
import zoo
from keras import tree

import tfchannelprune as tcp

EDGE_REASONS = ("model input", "model output")


def outputs(model, x) -> list[np.ndarray]:
    return [np.asarray(y) for y in tree.flatten(model(x, training=False))]


def worst_rel_diff(a, b) -> float:
    """max over outputs of max|a - b| / max|a| (the issue's 1e-5 criterion)."""
    return max(
        float(np.max(np.abs(p - q)) / max(float(np.max(np.abs(p))), 1e-12)) for p, q in zip(a, b)
    )


def randomize(model, seed=0):
    """Random BatchNorm statistics, biases and scales in every layer, also the layers inside
    custom layers (``zoo.randomize`` only sees the model's own layers)."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        own = layer._flatten_layers(include_self=False)
        if next(iter(own), None) is not None:
            continue
        for v in layer.weights:
            if v.name in ("moving_variance", "gamma", "scale"):
                v.assign(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
            elif v.name in ("moving_mean", "beta", "bias"):
                v.assign(rng.normal(0, 0.5, v.shape).astype(v.dtype))
    return model


def sample_input(model, batch=2, seed=1, shape=None):
    rng = np.random.default_rng(seed)
    shapes = [shape] if shape is not None else [tuple(t.shape[1:]) for t in model.inputs]
    xs = [rng.normal(size=(batch, *s)).astype("float32") for s in shapes]
    return xs[0] if len(xs) == 1 else xs


def check_gated_equals_compact(model, seed=0, fraction=0.5, shape=None):
    """Wrap, switch off a random ``fraction`` of every prunable group, compact; returns
    (gated, compact, plan, worst relative difference over all outputs)."""
    randomize(model, seed)
    x = sample_input(model, shape=shape)
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    plan = zoo.random_plan(graph, seed, fraction)
    tcp.set_kept_channels(gated, plan, graph=graph)
    small = tcp.compact(gated, graph=graph)
    y_gated = outputs(gated, x)
    y_small = outputs(small, x)
    assert [y.shape for y in y_gated] == [y.shape for y in y_small]
    if plan:  # the switched-off channels mattered, so the comparison is not vacuous
        assert worst_rel_diff(outputs(model, x), y_gated) > 1e-4
        assert tcp.count_macs(gated) == tcp.count_macs(small)
    return gated, small, plan, worst_rel_diff(y_gated, y_small)


def coverage(model) -> dict:
    """Groups prunable / total and the share of channels in prunable groups, over the groups
    that are neither model inputs nor model outputs; the remaining reasons by channels."""
    graph = tcp.ChannelGraph(model)
    inner = [g for g in graph.groups if g.reason not in EDGE_REASONS]
    channels = sum(g.size for g in inner)
    prunable = sum(g.size for g in inner if g.prunable)
    reasons: dict[str, int] = {}
    for g in inner:
        if not g.prunable:
            reasons[g.reason] = reasons.get(g.reason, 0) + g.size
    return {
        "groups_prunable": len(graph.prunable_groups),
        "groups_total": len(graph.groups),
        "channels_inner": channels,
        "channels_prunable": prunable,
        "share": prunable / channels if channels else 1.0,
        "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }
