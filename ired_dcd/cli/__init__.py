"""`ired-dcd`: one entry point, one module per area, each adding its subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# each module exposes register(subparsers); its subcommands set func=(Namespace) -> exit code
SUBCOMMAND_MODULES = ("train", "analyze", "slurm", "service", "sweeps", "results", "users")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ired-dcd", description="IRED-DCD ablation study: train, serve, compare.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"ired_dcd.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as error:  # bad input found past argparse: say what, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
