"""Coverage of the channel graph on the models Keras 3 users load (issue 12).

For each model of the keras_hub zoo (tests/hub_zoo.py: small explicit configs, no presets),
plus the subclassed, composite-layer and grouped-conv models of tests/test_coverage.py and
the keras.applications models: groups prunable / total, the share of channels in prunable
groups among the groups that are neither model inputs nor model outputs, the remaining
reasons, and gated == compact (worst relative difference over all outputs, random BN
statistics, half of every prunable group switched off).

Usage: python benchmarks/coverage.py
Writes benchmarks/results/coverage.json and coverage.md.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests")]

import coverage_check as cc  # noqa: E402
import hub_zoo  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import test_coverage as own  # noqa: E402


def _subclassed():
    model = own.SubclassedNet(name="subclassed")
    model(np.zeros((1, 10, 10, 3), "float32"))
    return model


def _applications(name):
    def build():
        return getattr(keras.applications, name)(
            weights=None, input_shape=(64, 64, 3), classes=4
        )

    return build


MODELS = {
    **hub_zoo.HUB_MODELS,
    "subclassed (own)": _subclassed,
    "composite layer (own)": own.composite_model,
    "grouped conv (own)": own.grouped_model,
    "keras.applications MobileNetV3Small": _applications("MobileNetV3Small"),
    "keras.applications EfficientNetB0": _applications("EfficientNetB0"),
}
SHAPES = {"subclassed (own)": (10, 10, 3)}


def measure(name, build) -> dict:
    start = time.time()
    model = build()
    row = {"model": name, **cc.coverage(model)}
    _, _, plan, diff = cc.check_gated_equals_compact(model, shape=SHAPES.get(name))
    row.update(max_rel_diff=diff, groups_cut=len(plan), seconds=round(time.time() - start, 1))
    return row


def markdown(rows) -> str:
    lines = [
        "| model | prunable groups / total | channel share (inner groups) | gated vs compact "
        "| remaining reasons (channels) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        reasons = "; ".join(f"{k[:90]} ({v})" for k, v in list(r["reasons"].items())[:3])
        lines.append(
            f"| {r['model']} | {r['groups_prunable']}/{r['groups_total']} | "
            f"{r['share']:.1%} ({r['channels_prunable']}/{r['channels_inner']}) | "
            f"{r['max_rel_diff']:.1e} | {reasons or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    rows = []
    for name, build in MODELS.items():
        rows.append(measure(name, build))
        print(markdown(rows[-1:]).splitlines()[-1], f"{rows[-1]['seconds']} s", flush=True)
    out = os.path.join(HERE, "results")
    meta = {"keras": keras.__version__, "python": platform.python_version()}
    with open(os.path.join(out, "coverage.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(out, "coverage.md"), "w") as f:
        f.write("Coverage of the channel graph (`python benchmarks/coverage.py`); channel "
                "share: channels in prunable groups among groups that are neither model "
                "inputs nor outputs.\n\n" + markdown(rows))  # fmt: skip
    print(markdown(rows))


if __name__ == "__main__":
    main()
