"""`ired-dcd analyze`: the per-config statistics against a baseline, printed in the terminal.

Values come from a results directory written by `ired-dcd train` (`--dir`, grouped by preset or by
setting) or, without `--dir`, from the database through the same service as `GET /results/compare`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ired_core.configs import canonical_preset
from ired_core.report import render
from ired_core.results_dir import SETTING_SEPARATOR, read_results
from ired_core.verdict import AUTO_BASELINE, BUILTIN_BASELINES, Comparison, choose_baseline, compare

EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `analyze` subcommand to the `ired-dcd` parser."""
    parser = subparsers.add_parser(
        "analyze",
        help="statistics of a metric per config against a baseline",
        description="Compare configs against a baseline: mean, CI, Δ%, Welch/Mann-Whitney p, Hedges g, "
        "Holm-adjusted p, the ablation steps and the plan's success level.",
    )
    parser.add_argument(
        "--dir", type=Path, help="results directory written by `ired-dcd train` (default: the database)"
    )
    parser.add_argument(
        "--baseline",
        default=AUTO_BASELINE,
        help=f"{AUTO_BASELINE} | {' | '.join(BUILTIN_BASELINES)} | a config such as q201 (default: {AUTO_BASELINE}: "
        "q100 trained here when it has results, else plan)",
    )
    parser.add_argument("--configs", help="comma-separated configs, e.g. q201,q202,q203,q204 (default: all)")
    parser.add_argument("--metric", default="val_mse", help="metric to compare, lower is better (default: val_mse)")
    parser.add_argument(
        "--group-by",
        choices=("preset", "setting"),
        default="preset",
        help="one row per preset, or per setting (preset · the overrides that tell runs apart)",
    )
    parser.add_argument("--tag", help="without --dir: only jobs and imported results with this tag")
    parser.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    parser.set_defaults(func=run_analyze)


def _parse_configs(text: str | None) -> list[str] | None:
    """`q201,Q-202,q204_dcd_full` → canonical preset stems (None: every config found); a setting label
    (`q202_dcd_cdloss · energy_reg_weight=0.01`) is kept as it is."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--configs: no config given")
    return list(dict.fromkeys(name if SETTING_SEPARATOR.strip() in name else canonical_preset(name) for name in names))


def _compare_directory(args: argparse.Namespace, configs: list[str] | None) -> Comparison:
    """The comparison of a results directory: grouped by preset or setting, failures included."""
    found = read_results(args.dir, args.metric, group_by=args.group_by)
    try:
        baseline = choose_baseline(args.baseline, found.values, found.seeds, args.metric)
    except ValueError as error:
        raise ValueError(f"--baseline: {error}") from None
    groups = found.groups if configs is None else configs
    return compare(
        {name: found.values.get(name, []) for name in groups},
        baseline,
        metric=args.metric,
        seeds=found.seeds,
        held_out_se=found.held_out_se,
        failures=found.failures,
    )


def _compare_database(args: argparse.Namespace, configs: list[str] | None) -> Comparison:
    """The comparison the server shows, from the settings' database (the same service)."""
    from ired_dcd.db import session_scope
    from ired_dcd.services.errors import ServiceError
    from ired_dcd.services.results import comparison_data
    from ired_dcd.settings import get_settings

    settings = get_settings()
    if settings.embedded and not settings.sqlite_path.exists():
        raise ValueError(f"no results database at {settings.sqlite_path}: pass --dir, or train or import first")
    try:
        with session_scope() as session:
            return comparison_data(
                session=session,
                configs=configs,
                baseline=args.baseline,
                metric=args.metric,
                tag=args.tag,
                group_by=args.group_by,
            ).comparison
    except ServiceError as error:
        raise ValueError(str(error)) from None
    except Exception as error:  # the CLI boundary: any database failure becomes a message, not a traceback
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"reading results from the database failed: {first_line}") from None


def _analyze(args: argparse.Namespace) -> str:
    """Build and render the comparison; ValueError on any input the user can fix.

    Without --configs every group found is compared (a config baseline shows as its own row); a
    requested config without results shows as a row with n = 0.
    """
    if args.dir is None:  # the service reads preset aliases and imported custom configs' names
        configs = None if args.configs is None else args.configs.split(",")
        return render(_compare_database(args, configs), args.format)
    configs = _parse_configs(args.configs)
    if args.tag is not None:
        raise ValueError("--tag: needs the database (without --dir); a results directory is already a selection")
    return render(_compare_directory(args, configs), args.format)


def run_analyze(args: argparse.Namespace) -> int:
    """Print the comparison; exit code 2 with a message on stderr for any user-fixable error."""
    try:
        output = _analyze(args)
    except (ValueError, OSError) as error:
        print(f"ired-dcd analyze: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(output)
    return 0
