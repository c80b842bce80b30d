"""``tfchannelprune report``: channel groups, widths, MACs and params of a saved model."""

from __future__ import annotations

import dataclasses
import json

from tfchannelprune.cli.files import load_array, load_model_file
from tfchannelprune.core.summary import summary
from tfchannelprune.dead.detect import (
    find_dead_channels,
    measure_output_change,
    remove_dead_channels,
)


def _report_command(args) -> int:
    model = load_model_file(args.model)
    result = summary(model, print_fn=(lambda s: None) if args.json else print)
    if args.data:  # the dead channels too, with the MACs their removal saves for free
        x = load_array(args.data)
        dead = find_dead_channels(model, x)
        small = remove_dead_channels(model, report=dead)
        dead = dataclasses.replace(dead, output_change=measure_output_change(model, small, x))
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
