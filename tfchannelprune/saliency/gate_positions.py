"""Where each prunable group sits on each gate of a wrapped model, and which accumulated
statistics every data signal needs there."""

from __future__ import annotations

import numpy as np

from tfchannelprune.core.gate import ChannelGate
from tfchannelprune.saliency.reductions import split_plan
from tfchannelprune.saliency.taxonomy import STATS_FOR


def gate_positions(graph) -> tuple[dict[int, str], dict[str, dict]]:
    """({id(gate layer): gate path}, {gate path: {"positions", "hw", "width"}}) for every gate
    that carries prunable channels; positions are {group: (gate positions, channels)}."""
    prunable = {g.name for g in graph.prunable_groups}
    layers = {fn.path: fn for fn in graph.flat.nodes if isinstance(fn.op, ChannelGate)}
    gate_of: dict[int, str] = {}
    gates: dict[str, dict] = {}  # path -> {"positions", "hw", "width"}
    for path in graph.gate_paths:
        layout = graph.gate_layout(path)
        positions: dict[str, tuple] = {}
        for p, (name, ch) in enumerate(layout):
            if name in prunable:
                idx, chs = positions.setdefault(name, ([], []))
                idx.append(p)
                chs.append(ch)
        if not positions:
            continue
        shape = layers[path].input_shapes[0]
        hw = int(np.prod(shape[1:-1])) if None not in shape[1:-1] else None
        gate_of[id(layers[path].op)] = path
        gates[path] = {
            "positions": {k: (np.array(i), np.array(c)) for k, (i, c) in positions.items()},
            "hw": hw,
            "width": len(layout),
        }
    return gate_of, gates


def plan_rows(signals, gates) -> dict[tuple, list]:
    """{(gate, family, "sum" or "max"): [(base, prefix tokens, statistic), ...]}."""
    rows: dict[tuple, list] = {}
    for signal in signals:
        if signal.kind != "data":
            continue
        family, prefix = split_plan(signal.parsed)
        stage = signal.parsed.stages[0 if family != "n" else 1]
        for gate, info in gates.items():
            if family == "n_hw" and info["hw"] is None:
                raise ValueError(
                    f"Signal {signal.id!r} reduces examples before space, which needs a "
                    f"fixed spatial size; gate {gate!r} has a variable one. Received: "
                    f"input shape with unknown spatial dimensions"
                )
            for stat in STATS_FOR[stage.op]:
                kind = "max" if stat == "max" else "sum"
                entries = rows.setdefault((gate, family, kind), [])
                if (signal.base, prefix, stat) not in entries:
                    entries.append((signal.base, prefix, stat))
    return rows
