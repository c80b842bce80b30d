"""Command line: ``tfchannelprune report|export|dead|apply-plan ...``.

Each sub-command lives in a module of this package; this file only dispatches. A module
registers itself by exposing ``register(subparsers)``, which adds a parser whose ``func``
attribute is called with the parsed args.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands. Imported lazily so that `--help` stays fast.
_COMMAND_MODULES = (
    "tfchannelprune.cli.report",
    "tfchannelprune.cli.export",
    "tfchannelprune.cli.dead",
    "tfchannelprune.cli.plan",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfchannelprune", description="Structured channel pruning for Keras 3."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, OSError) as e:
        print(f"tfchannelprune {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
