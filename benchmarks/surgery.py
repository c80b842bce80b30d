"""Time of ChannelGraph + compact beside Keras's own rebuild (from_config + set_weights).

Usage: python benchmarks/surgery.py [--repeats 3]
Writes benchmarks/results/surgery.json and surgery.md. Target: ratio <= 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfchannelprune as tcp  # noqa: E402

MODELS = {
    "ResNet50": lambda: keras.applications.ResNet50(weights=None),
    "MobileNetV2": lambda: keras.applications.MobileNetV2(weights=None),
}


def keras_rebuild(model):
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def half_plan(graph, seed=0):
    rng = np.random.default_rng(seed)
    return {
        g.name: np.sort(rng.choice(g.size, max(1, g.size // 2), replace=False))
        for g in graph.prunable_groups
    }


def ours(model, plan):
    graph = tcp.ChannelGraph(model)
    return tcp.compact(model, plan, graph=graph)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, build in MODELS.items():
        model = build()
        plan = half_plan(tcp.ChannelGraph(model))
        keras_rebuild(model), ours(model, plan)  # warm-up: first calls trace and allocate
        # interleave the two measurements so machine noise hits both alike
        t_keras = timed(lambda: keras_rebuild(model), args.repeats)  # noqa: B023
        t_ours = timed(lambda: ours(model, plan), args.repeats)  # noqa: B023
        t_graph = timed(lambda: tcp.ChannelGraph(model), args.repeats)  # noqa: B023
        rows.append(
            {
                "model": name,
                "params": model.count_params(),
                "keras_from_config_set_weights_s": round(t_keras, 3),
                "channelgraph_s": round(t_graph, 3),
                "channelgraph_plus_compact_s": round(t_ours, 3),
                "ratio": round(t_ours / t_keras, 2),
            }
        )
        print(
            f"{name:<12} keras rebuild {t_keras:.2f}s | ChannelGraph {t_graph:.3f}s | "
            f"ChannelGraph+compact {t_ours:.2f}s | ratio {t_ours / t_keras:.2f} (target <= 2)"
        )
    out_dir = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "keras": keras.__version__}
    with open(os.path.join(out_dir, "surgery.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(out_dir, "surgery.md"), "w") as f:
        f.write("| model | params | Keras from_config+set_weights (s) | ChannelGraph (s) "
                "| ChannelGraph+compact (s) | ratio |\n|---|---|---|---|---|---|\n")  # fmt: skip
        for r in rows:
            f.write(
                f"| {r['model']} | {r['params']:,} | {r['keras_from_config_set_weights_s']} | "
                f"{r['channelgraph_s']} | {r['channelgraph_plus_compact_s']} | {r['ratio']} |\n"
            )


if __name__ == "__main__":
    main()
