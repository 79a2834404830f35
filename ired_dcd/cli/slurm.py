"""`ired-dcd sbatch`: print a ready-to-submit sbatch script for a preset and seeds."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ired_core.configs import ENGINES, parse_overrides, parse_seeds
from ired_dcd.cli.options import add_overrides_option
from ired_dcd.slurm.sbatch import render_sbatch
from ired_dcd.slurm.settings import SlurmSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sbatch` subcommand."""
    parser = subparsers.add_parser(
        "sbatch",
        help="print an sbatch script (array over seeds) for submitting by hand",
        description="Print a ready-to-submit sbatch script that runs `ired-dcd train` on a SLURM cluster "
        "(the same script the lab server submits). Tasks requeue on preemption and before the time limit "
        "and resume from their checkpoint.",
    )
    parser.add_argument("config", help="preset (q204, Q-204 or q204_dcd_full) or a config file (FILE.json)")
    parser.add_argument("--seeds", default="0", help="seeds, e.g. 0-9 or 0,1,5 (default: 0)")
    parser.add_argument("--partition", help="partition(s), comma-separated (default: the cluster's)")
    parser.add_argument("--account", help="account to charge")
    parser.add_argument("--qos", help="quality of service")
    parser.add_argument("--time", type=int, dest="time_minutes", metavar="MIN", help="time limit per task")
    parser.add_argument("--gpus", type=int, dest="gpus_per_task", metavar="N", help="GPUs per task (0: CPU)")
    parser.add_argument("--cpus", type=int, dest="cpus_per_task", metavar="N", help="CPUs per task")
    parser.add_argument("--mem", type=float, dest="mem_gb", metavar="GB", help="memory per task")
    parser.add_argument(
        "--array-mode",
        choices=["per_seed", "all_seeds_one_task"],
        help="one array task per seed (default) or one task training all seeds together",
    )
    parser.add_argument("--max-parallel", type=int, metavar="N", help="array tasks running at once")
    parser.add_argument("--out", default="runs", metavar="DIR", help="output directory (default: runs)")
    parser.add_argument("--log-dir", metavar="DIR", help="SLURM log directory (default: OUT/slurm)")
    parser.add_argument(
        "--python",
        metavar="CMD",
        help=f"command starting Python with ired-dcd installed, on the nodes (default: {sys.executable})",
    )
    parser.add_argument("--engine", choices=ENGINES, help="how tasks compute a step (default: ired-dcd train's)")
    add_overrides_option(parser)
    parser.set_defaults(func=run_sbatch)


def run_sbatch(args: argparse.Namespace) -> int:
    """Print the script; bad input → message on stderr, exit 2."""
    fields = ("partition", "account", "qos", "time_minutes", "gpus_per_task", "cpus_per_task", "mem_gb")
    values: dict[str, Any] = {name: getattr(args, name) for name in fields}
    values["array_mode"] = args.array_mode
    values["max_parallel"] = args.max_parallel
    values["log_dir"] = os.path.abspath(args.log_dir) if args.log_dir else None
    values["python"] = args.python
    try:
        seeds = parse_seeds(args.seeds)
        overrides = parse_overrides(args.overrides)
        settings = SlurmSettings.from_mapping({k: v for k, v in values.items() if v is not None})
        script = render_sbatch(args.config, seeds, settings, os.path.abspath(args.out), overrides, engine=args.engine)
    except ValueError as error:
        print(f"ired-dcd sbatch: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(script.text)
    return 0
