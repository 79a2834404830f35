"""`ired-dcd sweep | sweep-status | sweep-list | sweep-cancel`: a grid over settings as one job per point."""

from __future__ import annotations

import argparse
import time
from typing import Any

from pydantic import TypeAdapter

from ired_core.configs import format_seeds, parse_grid, parse_overrides
from ired_core.report import render
from ired_core.verdict import AUTO_BASELINE, Comparison
from ired_dcd.cli.options import add_overrides_option, add_server_options, reports_errors, seeds_argument
from ired_dcd.cli.service import percent_text, print_page
from ired_dcd.client import Client
from ired_dcd.states import TERMINAL, State


def register(subparsers: Any) -> None:
    """Add the sweep subcommands to the `ired-dcd` parser."""
    p = subparsers.add_parser(
        "sweep",
        help="submit a grid over settings of a preset: one job per point, each over every seed",
        description="Every combination of the --grid values becomes one job (a setting) over the seeds, tagged "
        "sweep-N; the server checks the whole grid before storing anything. Beyond grids, drive POST /sweeps "
        "from an optimiser's ask-and-tell loop (e.g. Optuna).",
    )
    p.add_argument("config", help="preset: q202, Q-202 or q202_dcd_cdloss")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2,…",
        help="a config field and its values (repeatable), e.g. --grid energy_reg_weight=0.1,1,10",
    )
    p.add_argument("--seeds", type=seeds_argument, default=[0], help="e.g. 0-2 or 0,1,5 (default 0)")
    add_overrides_option(p, " in every job of the sweep")
    p.add_argument("--priority", type=int, default=5, help="0–9, higher runs first among your jobs (default 5)")
    p.add_argument("--tag", dest="tags", action="append", default=[], help="label every job (repeatable)")
    p.add_argument("--wait", action="store_true", help="follow the sweep to its end and print its comparison")
    p.add_argument("--poll", type=float, default=2.0, help="with --wait: seconds between checks (default 2)")
    add_server_options(p)
    p.set_defaults(func=sweep)

    p = subparsers.add_parser("sweep-status", help="a sweep's progress and the comparison of its settings")
    p.add_argument("sweep", type=int)
    p.add_argument("--baseline", default=AUTO_BASELINE, help="as for `analyze`, or one of the sweep's settings")
    p.add_argument("--metric", default="val_mse")
    p.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    add_server_options(p)
    p.set_defaults(func=sweep_status)

    p = subparsers.add_parser("sweep-list", help="sweeps, newest first, with their progress")
    p.add_argument("--owner", help="only this user's sweeps")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    add_server_options(p)
    p.set_defaults(func=sweep_list)

    p = subparsers.add_parser("sweep-cancel", help="cancel every job of a sweep that has not ended")
    p.add_argument("sweep", type=int)
    add_server_options(p)
    p.set_defaults(func=sweep_cancel)


@reports_errors
def sweep(args: argparse.Namespace) -> int:
    """Submit the sweep and print what was queued; with --wait follow it and print its comparison."""
    client = Client(args.server, token=args.token)
    status = client.sweep(
        args.config,
        parse_grid(args.grid),
        args.seeds,
        overrides=parse_overrides(args.overrides),
        priority=args.priority,
        tags=args.tags,
    )
    points, seeds = len(status["points"]), len(status["seeds"])
    print(f"sweep {status['id']}: {status['config']}, {points} point(s) × {seeds} seed(s), jobs tagged {status['tag']}")
    if not args.wait:
        return 0
    while status["state"] not in TERMINAL:
        time.sleep(args.poll)
        status = client.sweep_status(status["id"])
    _print_status(status, "text")
    return 0 if status["state"] == State.SUCCEEDED else 1


@reports_errors
def sweep_status(args: argparse.Namespace) -> int:
    """Print a sweep's progress and its comparison."""
    status = Client(args.server, token=args.token).sweep_status(args.sweep, baseline=args.baseline, metric=args.metric)
    _print_status(status, args.format)
    return 0


@reports_errors
def sweep_list(args: argparse.Namespace) -> int:
    """Print the latest sweeps, one row each."""
    page = Client(args.server, token=args.token).sweeps(owner=args.owner, limit=args.limit)
    header = ("SWEEP", "STATE", "CONFIG", "GRID", "SEEDS", "PROGRESS", "OWNER", "CREATED")
    rows = [
        (
            str(sweep["id"]),
            sweep["state"] or "-",
            sweep["config"],
            ", ".join(f"{name}={len(values)}" for name, values in sweep["grid"].items()),
            format_seeds(sweep["seeds"]),
            percent_text(sweep["steps_done"], sweep["steps_total"]),
            sweep["owner"],
            sweep["created_at"][:19],
        )
        for sweep in page["data"]
    ]
    print_page(header, rows, page, "sweep")
    return 0


@reports_errors
def sweep_cancel(args: argparse.Namespace) -> int:
    """Cancel a sweep's jobs."""
    status = Client(args.server, token=args.token).cancel_sweep(args.sweep)
    print(f"sweep {status['id']} {status['state']}: {_runs_text(status['runs'])}")
    return 0


def _runs_text(runs: dict[str, int]) -> str:
    return ", ".join(f"{count} {state}" for state, count in sorted(runs.items())) or "no runs"


def _print_status(status: dict[str, Any], fmt: str) -> None:
    progress = percent_text(status["steps_done"], status["steps_total"])
    print(f"sweep {status['id']} {status['state']} ({progress}): runs {_runs_text(status['runs'])}")
    print(render(TypeAdapter(Comparison).validate_python(status["comparison"]), fmt), end="")
