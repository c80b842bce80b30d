"""Replayable plans: ``save_plan(model, path)`` / ``apply_plan(model, path)``.

A plan found once (by ``ChannelPruning``, ``prune()`` or by hand) is stored as JSON: the kept
channel indices of every prunable group, with each group's size and producer layers so that
applying it to another model checks that the architecture is the same. Applying it to a fresh
instance of the architecture gives the same compact model (the same outputs with the same
weights). Groups are matched by name: a group of the plan that the model does not have is an
error naming it. Only a plan that says ``"match": "position"`` is matched by position (sizes
and producer types still checked): ``save_plan`` writes it when every producer of the model
has an automatic Keras name (``conv2d_7``), which a fresh instance numbers otherwise.

File format (version 1)::

    {"format": "tfchannelprune.plan", "version": 1, "model": "resnet50", "match": "name",
     "groups": [{"name": "conv1_conv", "size": 64, "producers": ["conv1_conv"],
                 "producer_types": ["Conv2D"], "kept": [0, 2, 3, ...]}, ...]}
"""

from __future__ import annotations

import json
import os
import re

from tfchannelprune.core.checks import check_output_path
from tfchannelprune.core.gate import is_wrapped
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import get_kept_channels, set_kept_channels
from tfchannelprune.core.surgery import compact

FORMAT = "tfchannelprune.plan"


def _layer_types(graph, paths) -> list[str]:
    types = {fn.path: type(fn.op).__name__ for fn in graph.flat.nodes}
    return [types.get(p, "?") for p in paths]


def plan_document(model) -> dict:
    """The JSON-ready plan of a wrapped model as its gates stand."""
    graph = ChannelGraph(model)
    kept = get_kept_channels(graph)
    groups = [
        {"name": g.name, "size": g.size, "producers": list(g.producers),
         "producer_types": _layer_types(graph, g.producers), "kept": kept[g.name]}
        for g in graph.prunable_groups
    ]  # fmt: skip
    match = "position" if _automatic_names(graph) else "name"
    return {"format": FORMAT, "version": 1, "model": model.name, "match": match,
            "groups": groups}  # fmt: skip


def _automatic_names(graph) -> bool:
    """Whether every producer of a prunable group has a name Keras made up (class name in
    snake case, maybe ``_N``): such names are not stable across instances."""
    from keras.src.utils.naming import to_snake_case

    ops = {fn.path: fn.op for fn in graph.flat.nodes}
    paths = [p for g in graph.prunable_groups for p in g.producers]
    return bool(paths) and all(
        re.fullmatch(re.escape(to_snake_case(type(ops[p]).__name__)) + r"(_\d+)?",
                     p.split("/")[-1]) for p in paths if p in ops
    )  # fmt: skip


def save_plan(model, path: str) -> dict:
    """Write the kept channels of a wrapped model to ``path`` (JSON); returns the document.

    Raises:
        ValueError: for a model without gates (there is no plan to read).
        FileNotFoundError / PermissionError: ``path`` cannot be written (checked first).
    """
    path = check_output_path(path, "path")
    if not is_wrapped(model):
        raise ValueError(
            f"Model {model.name!r} has no ChannelGate layers, so it holds no plan. Save the "
            "wrapped model's plan (the one ChannelPruning pruned)."
        )
    doc = plan_document(model)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)
    return doc


def load_plan(path: str) -> dict:
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise ValueError(
            f"{path!r} is not a tfchannelprune plan file (version 1). Received: "
            f"format={doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}"
        )
    return doc


def match_plan(graph, doc: dict) -> dict[str, list[int]]:
    """{group of ``graph``: kept indices} from a plan document.

    Raises:
        ValueError: when the groups of the model and of the plan differ, naming the first
        difference.
    """
    groups = graph.prunable_groups
    saved = doc["groups"]
    names = {g.name for g in groups}
    unknown = [s["name"] for s in saved if s["name"] not in names]
    match = doc.get("match", "name")
    if match not in ("name", "position"):
        raise ValueError(f"A plan's \"match\" is 'name' or 'position'. Received: match={match!r}")
    if not unknown:
        by_name = {g.name: g for g in groups}
        pairs = [(by_name[s["name"]], s) for s in saved]
    elif match == "position" and len(saved) == len(groups):
        pairs = list(zip(groups, saved))
    else:
        raise ValueError(
            f"The plan names {len(unknown)} group(s) that model {graph.model.name!r} does not "
            f"have: {unknown[:4]} (the model's groups include {sorted(names)[:4]}). Apply a "
            "plan to the architecture it was made for; a plan for a fresh instance with other "
            'automatic layer names needs "match": "position" in its file. Received: '
            f"{len(saved)} plan groups, {len(groups)} model groups, match={match!r}"
        )
    for group, s in pairs:
        types = _layer_types(graph, group.producers)
        if group.size != s["size"] or types != s["producer_types"]:
            raise ValueError(
                f"Group {group.name!r} of the model ({group.size} channels from {types}) does "
                f"not match group {s['name']!r} of the plan ({s['size']} channels from "
                f"{s['producer_types']}): not the same architecture. Received: model "
                f"{graph.model.name!r}, plan for {doc['model']!r}"
            )
    return {group.name: s["kept"] for group, s in pairs}


def apply_plan(model, path: str):
    """The compact model of ``model`` (wrapped or not) pruned as the plan at ``path`` says.

    Raises:
        ValueError: not a plan file, or a model of another architecture.
    """
    from tfchannelprune.core.wrap import wrap

    doc = load_plan(path)
    gated = model if is_wrapped(model) else wrap(model)
    graph = ChannelGraph(gated)
    set_kept_channels(gated, match_plan(graph, doc), graph=graph)
    return compact(gated, graph=graph)
