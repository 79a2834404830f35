"""Options shared by the subcommands that take a preset's overrides."""

from __future__ import annotations

import argparse


def add_overrides_option(parser: argparse.ArgumentParser, scope: str = "") -> None:
    """`--set KEY=VALUE` (repeatable) into `args.overrides`; read with `ired_core.configs.parse_overrides`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field{scope}; repeatable, values read as JSON (e.g. --set train_steps=20000)",
    )
