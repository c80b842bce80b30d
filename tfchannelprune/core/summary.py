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
        "producers", "consumers"}]}. On the tensors of a ``channels_first`` call (a barrier:
        nothing there is prunable) "size" and "kept" are its channels (axis 1).
    """
    graph = ChannelGraph(model)
    masks = keep_masks(graph, None)
    macs, params = count_macs(graph), count_params(graph)
    channels_first = _channels_first_widths(graph)
    groups = []
    for g in graph.groups:
        size = channels_first.get(g.name, g.size)
        whole = g.name in channels_first or g.name not in masks
        kept = size if whole else int(masks[g.name].sum())
        groups.append(
            {
                "name": g.name,
                "size": size,
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


def _channels_first_widths(graph) -> dict[str, int]:
    """{group: channels} for the groups on a ``channels_first`` call's tensors. The graph
    reads the last axis of every tensor as its channel axis, which there is W; those groups
    are barriers (never pruned), so their channels are the whole of axis 1."""
    out = {}
    for fn in graph.flat.nodes:
        if getattr(fn.op, "data_format", None) != "channels_first":
            continue
        tensors = [*zip(fn.inputs, fn.input_shapes), *zip(fn.outputs, fn.output_shapes)]
        for tensor, shape in tensors:
            if len(shape) >= 3 and shape[1] is not None:
                for name, _, _ in graph.segments(graph.layout(tensor)):
                    if not graph.group(name).prunable:
                        out[name] = int(shape[1])
    return out
