"""Options and error handling shared by the subcommands (overrides, seeds, the server to talk to)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from ired_core.configs import parse_seeds
from ired_dcd.client import ClientError

Command = Callable[[argparse.Namespace], int]


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


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """`--server URL` and `--token TOKEN`, for the subcommands that talk to a server."""
    parser.add_argument("--server", help="API URL (default $IRED_SERVER or http://127.0.0.1:8000)")
    parser.add_argument("--token", help="API token (default $IRED_TOKEN); a lab server asks for one")


def seeds_argument(text: str) -> list[int]:
    """`--seeds 0-9` or `0,1,5` as an argparse type: a bad value is a usage error (exit 2)."""
    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def reports_errors(command: Command) -> Command:
    """Print a refused request or bad input as one line and exit 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (ClientError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapper
