"""`ired-dcd analyze`: the per-config statistics against a baseline, printed in the terminal.

Values come from a results directory written by `ired-dcd train` (`--dir`) or, without `--dir`, from
the database through `ired_dcd.services.results.load_metric_values`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ired_core.configs import canonical_preset
from ired_core.report import render
from ired_core.results_dir import load_results
from ired_core.stats import BUILTIN_BASELINES, Baseline, baseline_config, compare

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
        default="plan",
        help=f"{' | '.join(BUILTIN_BASELINES)} | a config such as q201 (default: plan)",
    )
    parser.add_argument("--configs", help="comma-separated configs, e.g. q201,q202,q203,q204 (default: all)")
    parser.add_argument(
        "--metric", default="val_mse", help="metric to compare, lower is better (default: val_mse)"
    )
    parser.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    parser.set_defaults(func=run_analyze)


def _parse_configs(text: str | None) -> list[str] | None:
    """`q201,Q-202,q204_dcd_full` → canonical preset stems (None: every config found)."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--configs: no config given")
    return list(dict.fromkeys(canonical_preset(name) for name in names))


def _baseline_config(name: str) -> str | None:
    """None for a built-in baseline, else the canonical stem of the config used as the baseline."""
    try:
        return baseline_config(name)
    except ValueError as error:
        raise ValueError(f"--baseline: {error}") from None


def _load_from_database(configs: Sequence[str] | None, metric: str) -> dict[str, list[float]]:
    """Values per config from the database; ValueError with the reason when that is not possible."""
    try:
        from ired_dcd.services.results import load_metric_values
    except ImportError as error:
        raise ValueError(
            f"reading results from the database is not available ({error}); "
            "pass --dir with a results directory from `ired-dcd train`"
        ) from None
    try:
        return load_metric_values(configs=configs, metric=metric)
    except Exception as error:  # the CLI boundary: any database failure becomes a message, not a traceback
        raise ValueError(f"reading results from the database failed: {error}") from None


def _load(args: argparse.Namespace, wanted: list[str] | None) -> dict[str, list[float]]:
    """Values of `args.metric` per config, from `--dir` or the database (None: every config)."""
    if args.dir is not None:
        return load_results(args.dir, args.metric)
    return _load_from_database(wanted, args.metric)


def _baseline(name: str, baseline_config: str | None, found: dict[str, list[float]], metric: str) -> Baseline:
    """The built-in baseline `name`, or the raw values of `baseline_config`."""
    if baseline_config is None:
        return BUILTIN_BASELINES[name]
    if not found.get(baseline_config):
        raise ValueError(f"--baseline: config {baseline_config} has no succeeded {metric} results")
    return Baseline.from_values(baseline_config, found[baseline_config])


def _analyze(args: argparse.Namespace) -> str:
    """Build and render the comparison; ValueError on any input the user can fix.

    Without --configs every config found is compared (a config baseline shows as its own row); a
    requested config without results shows as a row with n = 0.
    """
    configs = _parse_configs(args.configs)
    baseline_config = _baseline_config(args.baseline)
    wanted = configs
    if configs is not None and baseline_config is not None:
        wanted = list(dict.fromkeys([*configs, baseline_config]))
    found = _load(args, wanted)
    baseline = _baseline(args.baseline, baseline_config, found, args.metric)
    values = dict(sorted(found.items())) if configs is None else {name: found.get(name, []) for name in configs}
    return render(compare(values, baseline, metric=args.metric), args.format)


def run_analyze(args: argparse.Namespace) -> int:
    """Print the comparison; exit code 2 with a message on stderr for any user-fixable error."""
    try:
        output = _analyze(args)
    except (ValueError, OSError) as error:
        print(f"ired-dcd analyze: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(output)
    return 0
