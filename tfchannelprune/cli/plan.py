"""``tfchannelprune apply-plan MODEL PLAN -o OUT``: re-apply a saved plan to a model file."""

from __future__ import annotations

from tfchannelprune.cli.files import load_model_file
from tfchannelprune.core.checks import check_output_path
from tfchannelprune.core.cost import count_macs
from tfchannelprune.core.plan_files import apply_plan


def _apply_plan_command(args) -> int:
    check_output_path(args.output, "output")  # before the work, naming the user's path
    model = load_model_file(args.model)
    small = apply_plan(model, args.plan)
    small.save(args.output)
    before, after = count_macs(model), count_macs(small)
    print(f"{args.output}: MACs {after:,} ({after / max(before, 1):.1%} of {before:,}), "
          f"params {small.count_params():,}")  # fmt: skip
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("apply-plan", help="prune a model file as a saved plan says")
    p.add_argument("model", help="a .keras model file of the plan's architecture")
    p.add_argument("plan", help="a plan .json written by tfchannelprune.save_plan")
    p.add_argument("-o", "--output", required=True, help="where to save the compact .keras")
    p.set_defaults(func=_apply_plan_command)
