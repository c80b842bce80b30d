"""The core in a few lines: channel groups, gates, compact surgery, cost.

Usage: python examples/core_usage.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfchannelprune as tcp  # noqa: E402


def main():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
    graph = tcp.ChannelGraph(model)
    print(f"{len(graph.groups)} channel groups, {len(graph.prunable_groups)} prunable")

    gated = tcp.wrap(model)  # ChannelGates after BN + activation
    rng = np.random.default_rng(0)
    plan = {  # keep a random half of every prunable group
        g.name: np.sort(rng.choice(g.size, max(1, g.size // 2), replace=False))
        for g in graph.prunable_groups
    }
    tcp.set_kept_channels(gated, plan)
    small = tcp.compact(gated)  # channels physically removed

    x = rng.normal(size=(2, 96, 96, 3)).astype("float32")
    diff = float(np.max(np.abs(gated(x) - small(x))))
    print(f"max |gated - compact| = {diff:.2e}")
    print(f"MACs   {tcp.count_macs(model):>12,} -> {tcp.count_macs(small):>12,}")
    print(f"params {model.count_params():>12,} -> {small.count_params():>12,}")
    tcp.summary(small, max_groups=8)
    return diff


if __name__ == "__main__":
    main()
