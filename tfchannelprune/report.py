"""``summary(model)`` and the ``tfchannelprune report`` command: groups, widths, MACs, params."""

from __future__ import annotations

import io

from tfchannelprune.cost import count_macs, count_params
from tfchannelprune.graph import ChannelGraph
from tfchannelprune.surgery import keep_masks


def summary(model, print_fn=print, max_groups: int | None = None) -> dict:
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


def _report_command(args) -> int:
    import json

    import keras

    import tfchannelprune  # noqa: F401  (registers ChannelGate for loading)

    model = keras.saving.load_model(args.model, safe_mode=True, compile=False)
    result = summary(model, print_fn=(lambda s: None) if args.json else print)
    if args.data:  # the dead channels too, with the MACs their removal saves for free
        import numpy as np

        from tfchannelprune.dead import find_dead_channels

        dead = find_dead_channels(model, np.load(args.data))
        result["dead"] = dead.to_dict()
        if not args.json:
            print("\n" + dead.text())
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="print channel groups, widths, MACs and params")
    p.add_argument("model", help="a .keras model file (loaded with safe_mode=True)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--data", help="a .npy file of model inputs: also report dead channels")
    p.set_defaults(func=_report_command)
