"""``summary(model)`` and the ``tfchannelprune report`` command: groups, widths, MACs, params."""

from __future__ import annotations

import io

from tfchannelprune.core.convention import keyword_only
from tfchannelprune.core.cost import count_macs, count_params
from tfchannelprune.core.graph import ChannelGraph
from tfchannelprune.core.plans import keep_masks


@keyword_only("print_fn", "max_groups")
def summary(model, *, print_fn=print, max_groups: int | None = None) -> dict:
    """Print the channel groups with their widths, and MACs / params; return them as a dict.

    Returns:
        {"model", "macs", "params", "groups": [{"name", "size", "kept", "prunable", "reason",
        "producers", "consumers"}]}.
    """
    graph = ChannelGraph(model)
    masks = keep_masks(graph, None)
    macs, params = count_macs(graph), count_params(graph)
    groups = []
    for g in graph.groups:
        kept = int(masks[g.name].sum()) if g.name in masks else g.size
        groups.append(
            {
                "name": g.name,
                "size": g.size,
                "kept": kept,
                "prunable": g.prunable,
                "reason": g.reason,
                "producers": list(g.producers),
                "consumers": list(g.consumers),
            }
        )
    out = io.StringIO()
    n_prunable = sum(g["prunable"] for g in groups)
    out.write(f"Model {model.name!r}: {len(groups)} channel groups, {n_prunable} prunable\n")
    out.write(f"MACs: {macs:,}   params: {params:,}\n")
    out.write(f"{'group':<40} {'kept/size':>10}  {'prunable':<8} note\n")
    shown = groups if max_groups is None else groups[:max_groups]
    for g in shown:
        note = g["reason"] if not g["prunable"] else ", ".join(g["consumers"][:3])
        width = f"{g['kept']}/{g['size']}"
        yes = "yes" if g["prunable"] else "no"
        out.write(f"{g['name'][:40]:<40} {width:>10}  {yes:<8} {note[:70]}\n")
    if len(shown) < len(groups):
        out.write(f"... {len(groups) - len(shown)} more groups\n")
    print_fn(out.getvalue().rstrip("\n"))
    return {"model": model.name, "macs": macs, "params": params, "groups": groups}
