"""Writing a benchmark's Markdown table and JSON payload to benchmarks/results/."""

from __future__ import annotations

import json
import os

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_results(name: str, text: str, payload: dict, out_dir: str = RESULTS_DIR) -> None:
    """Write ``{name}.md`` (``text``) and ``{name}.json`` (``payload``) into ``out_dir``."""
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=2)
