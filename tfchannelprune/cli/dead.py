"""``tfchannelprune dead``: dead channels and the MACs their removal saves."""

from __future__ import annotations

import dataclasses
import json

from tfchannelprune.cli.files import load_array, load_model_file
from tfchannelprune.core.checks import check_output_path
from tfchannelprune.dead.detect import (
    find_dead_channels,
    measure_output_change,
    remove_dead_channels,
)


def _dead_command(args) -> int:
    if args.output:  # before the work, with the user's path in the message
        check_output_path(args.output, "output")
    model = load_model_file(args.model)
    x = load_array(args.data)
    if args.max_examples:
        x = x[: args.max_examples]
    report = find_dead_channels(model, x, tol=args.tol, batch_size=args.batch_size)
    small = remove_dead_channels(model, tol=args.tol, report=report)
    change = measure_output_change(model, small, x, batch_size=args.batch_size)
    report = dataclasses.replace(report, output_change=change)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
    if args.output:
        small.save(args.output)
        if not args.json:
            print(f"saved the model without its dead channels to {args.output}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dead", help="find dead (constant) channels and the MACs their removal saves"
    )
    p.add_argument("model", help="a .keras model file (loaded with safe_mode=True)")
    p.add_argument("--data", required=True, help="a .npy file of model inputs (N, ...)")
    p.add_argument("--tol", type=float, default=1e-6, help="variance threshold (1e-6)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-examples", type=int, default=None, help="use the first N inputs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--output", help="save the model with dead channels removed (.keras)")
    p.set_defaults(func=_dead_command)
