"""Results: metric values per config, the comparison against a baseline, imports, learning curves.

Where a config's values come from:

- runs of the config's jobs that succeeded, with a finite `final_metrics[metric]`;
- imported rows (`ImportedResult`) of the config that carry the metric.

A seed stands for one training run, so each (config, seed) counts once: when a seed has several results
(a second job over the same seeds, an import of a run the server also trained) the most recent counts,
and the comparison says so in a note. With `tag`, only jobs and imported rows carrying that tag count;
that is how one study or one setting is told apart from another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ired_core.configs import canonical_preset, list_presets
from ired_core.results_dir import METRIC_NAME, ResultRow, ResultRowsError, RowFormat, parse_result_rows
from ired_core.stats import BUILTIN_BASELINES, PLAN_CONFIGS, Baseline, Comparison, baseline_config, compare
from ired_dcd.db import session_scope
from ired_dcd.models import ImportedResult, Job, JobTag, Metric, Run, User
from ired_dcd.services.errors import Conflict, InvalidInput
from ired_dcd.states import State

TAG_BASELINE_PREFIX = "tag:"
CURVE_METRICS = ("val_mse", "loss", "energy_pos", "energy_neg", "energy_gap", "grad_energy_norm")
"""The learning curves the dashboard draws: validation MSE, the total loss and the energy diagnostics."""
CURVE_STATES = (State.RUNNING, State.SUCCEEDED)
"""Runs whose curves are averaged: live and finished ones (failed or diverged runs would skew the mean)."""
TRIVIAL_PREDICTORS = {
    "val_mse": {"predicting 0": 0.0208, "predicting the mean inverse": 0.0142},
    "val_mse_ood": {"predicting 0": 0.257, "predicting the mean inverse": 0.230},
}
"""MSE of predictors that learn nothing (SPEC §2, measured on 20k samples): every trained model must beat them."""


# ---------------------------------------------------------------------------------------------
# values per config


@dataclass(frozen=True)
class SeedValue:
    """One counted result: a seed's final value of the metric and where it came from."""

    seed: int
    value: float
    source: str  # "job 12" or "import"
    config_hash: str | None  # None for imported rows
    at: datetime


@dataclass(frozen=True)
class MetricValues:
    """Counted results per config (canonical preset stem), each list ordered by seed."""

    samples: dict[str, list[SeedValue]]
    notes: tuple[str, ...]

    @property
    def values(self) -> dict[str, list[float]]:
        return {config: [s.value for s in samples] for config, samples in self.samples.items()}


def canonical_configs(configs: Sequence[str] | None) -> list[str] | None:
    """Aliases (`q204`, `Q-204`) → canonical stems, duplicates dropped; InvalidInput naming the field."""
    if configs is None:
        return None
    names = [name.strip() for name in configs if name.strip()]
    if not names:
        raise InvalidInput("configs: no config given")
    try:
        return list(dict.fromkeys(canonical_preset(name) for name in names))
    except ValueError as exc:
        raise InvalidInput(f"configs: {exc}") from None


def check_metric(metric: str) -> str:
    """`metric` if it is a metric name, else InvalidInput."""
    if not METRIC_NAME.fullmatch(metric):
        raise InvalidInput(f"metric: {metric!r} is not a metric name (letters, digits and _)")
    return metric


def _run_results(
    session: Session, configs: Sequence[str] | None, metric: str, tag: str | None
) -> Iterator[tuple[str, int, SeedValue | None]]:
    """(config, seed, value) of every succeeded run in the selection; value None when not finite."""
    value = Run.final_metrics[metric].as_float()  # picked by the database: no run's whole metrics decoded here
    query = (
        select(Job.preset, Job.id, Job.config_hash, Run.seed, value, Run.finished_at)
        .join(Run.job)
        .where(Run.state == State.SUCCEEDED)
    )
    if configs is not None:
        query = query.where(Job.preset.in_(configs))
    if tag is not None:
        query = query.where(Job.tag_rows.any(JobTag.tag == tag))
    for preset, job_id, config_hash, seed, number, finished_at in session.execute(query):
        # None: not recorded, or stored as null because not finite
        result = None if number is None else SeedValue(seed, number, f"job {job_id}", config_hash, finished_at)
        yield preset, seed, result


def _imported_results(
    session: Session, configs: Sequence[str] | None, metric: str, tag: str | None
) -> Iterator[tuple[str, SeedValue]]:
    """(config, value) of every imported row in the selection that carries the metric."""
    query = select(ImportedResult)
    if configs is not None:
        query = query.where(ImportedResult.config.in_(configs))
    for row in session.scalars(query):  # tags are a JSON list: filtered here, portably
        if metric in row.metrics and (tag is None or tag in row.tags):
            yield row.config, SeedValue(row.seed, float(row.metrics[metric]), "import", None, row.imported_at)


def collect_values(
    *, session: Session, configs: Sequence[str] | None, metric: str, tag: str | None = None
) -> MetricValues:
    """The counted results of `metric` per config (None: every config with results), with notes.

    `configs` are canonical stems. One value per (config, seed): the most recent result.
    """
    by_seed: dict[str, dict[int, list[SeedValue]]] = {}
    not_finite: dict[str, set[int]] = {}
    for config, seed, result in _run_results(session, configs, metric, tag):
        if result is None:
            not_finite.setdefault(config, set()).add(seed)
        else:
            by_seed.setdefault(config, {}).setdefault(seed, []).append(result)
    for config, result in _imported_results(session, configs, metric, tag):
        by_seed.setdefault(config, {}).setdefault(result.seed, []).append(result)

    samples: dict[str, list[SeedValue]] = {}
    notes: list[str] = []
    for config in sorted(by_seed):
        seeds = by_seed[config]
        samples[config] = [max(seeds[seed], key=lambda s: s.at) for seed in sorted(seeds)]
        repeated = [str(seed) for seed in sorted(seeds) if len(seeds[seed]) > 1]
        if repeated:
            notes.append(
                f"{config}: seed(s) {', '.join(repeated)} have more than one result; the most recent of each counts"
            )
        hashes = sorted({s.config_hash for s in samples[config] if s.config_hash is not None})
        if len(hashes) > 1:
            notes.append(
                f"{config}: values from {len(hashes)} different settings (config hashes {', '.join(hashes)}); "
                "filter by tag to compare one setting"
            )
    for config in sorted(not_finite):
        seeds = ", ".join(map(str, sorted(not_finite[config])))
        notes.append(f"{config}: succeeded run(s) of seed(s) {seeds} have no finite {metric}; not counted")
    return MetricValues(samples=samples, notes=tuple(notes))


def load_metric_values(
    *, session: Session | None = None, configs: list[str] | None, metric: str, tag: str | None = None
) -> dict[str, list[float]]:
    """Values of `metric` per canonical preset stem (None: every config with results), ordered by seed.

    Opens its own session from the settings when none is given (`ired-dcd analyze` calls it that way).
    """
    if session is None:
        with session_scope() as own:
            return load_metric_values(session=own, configs=configs, metric=metric, tag=tag)
    return collect_values(
        session=session, configs=canonical_configs(configs), metric=check_metric(metric), tag=tag
    ).values


# ---------------------------------------------------------------------------------------------
# comparison


def trivial_predictors_line(metric: str) -> str | None:
    """The trivial predictors' values of `metric`, as one sentence to show beside results (None if unknown)."""
    if metric not in TRIVIAL_PREDICTORS:
        return None
    values = ", ".join(f"{name} gives {value:g}" for name, value in TRIVIAL_PREDICTORS[metric].items())
    return f"for scale on the full-size task (rank 20): {values}; a trained model must beat both"


@dataclass(frozen=True)
class ComparisonData:
    """A comparison with the per-seed results behind its rows (the dashboard plots them)."""

    comparison: Comparison
    samples: dict[str, list[SeedValue]]


def default_configs(found: Sequence[str]) -> list[str]:
    """The plan's four configs and every other config with results, in preset order."""
    wanted = set(PLAN_CONFIGS) | set(found)
    return [name for name in list_presets() if name in wanted]


def _baseline_config(name: str) -> str | None:
    """None for a built-in or tag baseline, else the canonical stem of the config used as the baseline."""
    if name.startswith(TAG_BASELINE_PREFIX):
        return None
    try:
        return baseline_config(name)
    except ValueError as error:
        raise InvalidInput(f"baseline: {error}, nor {TAG_BASELINE_PREFIX}NAME") from None


def _baseline(session: Session, name: str, config: str | None, found: MetricValues, metric: str) -> Baseline:
    """The built-in baseline, the values of a config (same selection as the rows), or of a tag."""
    if name in BUILTIN_BASELINES:
        return BUILTIN_BASELINES[name]
    if config is not None:
        if not found.samples.get(config):
            raise InvalidInput(f"baseline: config {config} has no succeeded {metric} results")
        return Baseline.from_values(config, found.values[config])
    tag = name.removeprefix(TAG_BASELINE_PREFIX)
    tagged = collect_values(session=session, configs=None, metric=metric, tag=tag).values
    values = [value for config_values in tagged.values() for value in config_values]
    if not values:
        raise InvalidInput(f"baseline: no succeeded {metric} results tagged {tag!r}")
    return Baseline.from_values(name, values)


def comparison_data(
    *,
    session: Session,
    configs: Sequence[str] | None = None,
    baseline: str = "plan",
    metric: str = "val_mse",
    tag: str | None = None,
) -> ComparisonData:
    """Compare configs (aliases accepted; None: `default_configs`) against `baseline`.

    `baseline`: a built-in name (plan, lab10, ired_published), a config (its values under the same
    `tag` filter), or `tag:NAME` (every result tagged NAME, whatever its config).
    """
    names = canonical_configs(configs)
    check_metric(metric)
    baseline_config = _baseline_config(baseline)
    wanted = names if names is None or baseline_config is None else [*names, baseline_config]
    found = collect_values(session=session, configs=wanted, metric=metric, tag=tag)
    reference = _baseline(session, baseline, baseline_config, found, metric)
    shown = names if names is not None else default_configs(list(found.samples))
    samples = {name: found.samples.get(name, []) for name in shown}
    comparison = compare(
        {name: [s.value for s in values] for name, values in samples.items()}, reference, metric=metric
    )
    return ComparisonData(comparison=replace(comparison, notes=comparison.notes + found.notes), samples=samples)


def compare_results(
    *,
    session: Session,
    configs: Sequence[str] | None = None,
    baseline: str = "plan",
    metric: str = "val_mse",
    tag: str | None = None,
) -> Comparison:
    """The statistics table of `comparison_data`, for the API, the CLI and the dashboard."""
    return comparison_data(session=session, configs=configs, baseline=baseline, metric=metric, tag=tag).comparison


# ---------------------------------------------------------------------------------------------
# import


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: rows stored now, rows that were already stored."""

    inserted: int
    skipped: int


def row_key(row: ResultRow) -> str:
    """The identity of an imported run: config, seed and the set of its tags (metric values excluded)."""
    identity = {"config": row.config, "seed": row.seed, "tags": sorted(set(row.tags))}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _difference(number: int, row: ResultRow, stored: dict[str, float]) -> str | None:
    """None when `row` repeats what is stored, else why it conflicts (naming the row and the field)."""
    if dict(row.metrics) == stored:
        return None
    changed = sorted(name for name in {*row.metrics, *stored} if row.metrics.get(name) != stored.get(name))
    field = changed[0]
    tags = f", tags {', '.join(sorted(set(row.tags)))}" if row.tags else ""
    return (
        f"row {number}, field {field!r}: {row.config} seed {row.seed}{tags} was imported before with "
        f"{field}={stored.get(field)!r}, this row has {row.metrics.get(field)!r}; nothing was stored"
    )


def _store_rows(session: Session, rows: list[ResultRow], owner: User, source: str | None) -> ImportSummary:
    """Insert the rows not stored yet; Conflict (nothing stored) when a stored run has other values."""
    keys = [row_key(row) for row in rows]
    seen: dict[str, dict[str, float]] = {
        stored.row_key: stored.metrics
        for stored in session.scalars(select(ImportedResult).where(ImportedResult.row_key.in_(keys)))
    }
    new: list[ImportedResult] = []
    for number, (row, key) in enumerate(zip(rows, keys, strict=True), start=1):
        if key in seen:
            conflict = _difference(number, row, seen[key])
            if conflict is not None:
                raise Conflict(conflict)
            continue
        seen[key] = dict(row.metrics)
        new.append(
            ImportedResult(
                row_key=key,
                config=row.config,
                seed=row.seed,
                tags=sorted(set(row.tags)),
                metrics=dict(row.metrics),
                source=source,
                owner_id=owner.id,
            )
        )
    session.add_all(new)
    session.commit()
    return ImportSummary(inserted=len(new), skipped=len(rows) - len(new))


def import_rows(
    *, session: Session, text: str, fmt: RowFormat, owner: User, source: str | None = None
) -> ImportSummary:
    """Validate and store import rows (`config, seed, <metrics...>, tags`); all or nothing, idempotent.

    A row whose config, seed and tags are already stored is skipped when its values are the same, and
    refused (Conflict) when they differ. Any bad row → InvalidInput naming every bad row and field.
    """
    try:
        rows = parse_result_rows(text, fmt)
    except ResultRowsError as exc:
        raise InvalidInput(str(exc)) from None
    except ValueError as exc:  # an unknown format
        raise InvalidInput(f"format: {exc}") from None
    try:
        return _store_rows(session, rows, owner, source)
    except IntegrityError:  # a concurrent import of the same rows committed first: compare against it
        session.rollback()
        return _store_rows(session, rows, owner, source)


# ---------------------------------------------------------------------------------------------
# learning curves


@dataclass(frozen=True)
class CurvePoint:
    """One step of a config's curve over its runs: mean, min and max across seeds, and how many."""

    step: int
    mean: float
    low: float
    high: float
    n: int


def config_curves(
    *, session: Session, configs: Sequence[str], names: Sequence[str] = CURVE_METRICS, tag: str | None = None
) -> dict[str, dict[str, list[CurvePoint]]]:
    """metric name → config → points in step order, over the configs' running and succeeded runs."""
    value = Metric.value
    aggregates = (func.avg(value), func.min(value), func.max(value), func.count(value))
    query = (
        select(Job.preset, Metric.name, Metric.step, *aggregates)
        .join(Run, Run.id == Metric.run_id)
        .join(Job, Job.id == Run.job_id)
        .where(Job.preset.in_(configs), Metric.name.in_(names), Run.state.in_(CURVE_STATES))
        .group_by(Job.preset, Metric.name, Metric.step)
        .order_by(Metric.step)
    )
    if tag is not None:
        query = query.where(Job.tag_rows.any(JobTag.tag == tag))
    curves: dict[str, dict[str, list[CurvePoint]]] = {name: {} for name in names}
    for preset, name, step, mean, low, high, count in session.execute(query):
        if count:  # every seed's value at this step was non-finite (stored as NULL)
            curves[name].setdefault(preset, []).append(CurvePoint(step, float(mean), float(low), float(high), count))
    return curves
