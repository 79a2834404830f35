"""Results: metric values per config, the comparison against a baseline, imports, learning curves.

Where a config's values come from:

- runs of the config's jobs that succeeded, with a finite `final_metrics[metric]`;
- imported rows (`ImportedResult`) of the config that carry the metric.

A seed stands for one training run, so each (config, seed) counts once: when a seed has several results
(a second job over the same seeds, an import of a run the server also trained) the most recent counts,
and the comparison says so in a note. With `tag`, only jobs and imported rows carrying that tag count;
that is how one study is told apart from another.

Rows are presets (`group_by="preset"`, with a note when a preset's values come from several settings)
or settings (`group_by="setting"`): a preset with overrides, identified by the resolved config's hash
and labelled `preset · key=value …` with the overrides that tell the selection's settings apart
(`ired_core.results_dir.setting_labels`, the labels `ired-dcd analyze --dir` prints). Imported rows
have no config hash: those of a preset are the setting `preset · imported`, and a custom config
(imported with `custom_configs`, e.g. a lab's `random mining`) is a row of its own in either grouping.

Runs that diverged or failed are counted per config (the most recent outcome of each seed decides) and
shown beside the values, never dropped silently. The default baseline (`auto`) is the config q100,
trained here under the same tag, when it has results; otherwise the plan's number, which was measured
elsewhere on another held-out set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, insert, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ired_core.configs import canonical_preset, list_presets
from ired_core.failures import FailedRuns, RunRecord, summarise_failures
from ired_core.input_rules import check_metric_name, check_tag, check_text
from ired_core.results_dir import (
    CONFIG_MAX_LENGTH,
    GROUP_BYS,
    SETTING_SEPARATOR,
    GroupBy,
    ResultRow,
    ResultRowsError,
    RowFormat,
    parse_result_rows,
    setting_labels,
)
from ired_core.stats import Baseline
from ired_core.verdict import (
    AUTO_BASELINE,
    BUILTIN_BASELINES,
    IN_HOUSE_BASELINE,
    MEASURED_HERE,
    PLAN_CONFIGS,
    Comparison,
    choose_baseline,
    compare,
)
from ired_dcd.db import session_scope
from ired_dcd.models import ImportedResult, Job, JobTag, Metric, Run, User
from ired_dcd.services.errors import Conflict, InvalidInput
from ired_dcd.services.users import Identity
from ired_dcd.states import State

TAG_BASELINE_PREFIX = "tag:"
IMPORTED_SETTING = "imported"
"""Grouped by setting, a preset's imported rows (no config hash) form the setting `preset · imported`."""
SOURCE_MAX_LENGTH = 255
"""Characters in an import's `source` (the `imported_results.source` column)."""
CURVE_METRICS = ("val_mse", "loss", "energy_pos", "energy_neg", "energy_gap", "grad_energy_norm")
"""The learning curves the dashboard draws: validation MSE, the total loss and the energy diagnostics."""
CURVE_STATES = (State.RUNNING, State.SUCCEEDED)
OUTCOME_STATES = (State.SUCCEEDED, State.DIVERGED, State.FAILED)
"""The states a finished run's outcome counts in: a value, or a failure (cancelled runs are neither)."""
"""Runs whose curves are averaged: live and finished ones (failed or diverged runs would skew the mean)."""
TRIVIAL_PREDICTORS = {
    "val_mse": {"predicting 0": 0.0208, "predicting the mean inverse": 0.0142},
    "val_mse_ood": {"predicting 0": 0.257, "predicting the mean inverse": 0.230},
}
"""MSE of predictors that learn nothing (SPEC §2, measured on 20k samples): every trained model must beat them."""


# ---------------------------------------------------------------------------------------------
# values per config


@dataclass(frozen=True, slots=True)
class SeedValue:
    """One counted result: a seed's final value of the metric and where it came from."""

    seed: int
    value: float
    source: str  # "job 12" or "import"
    config_hash: str | None  # None for imported rows
    at: datetime
    held_out_se: float | None = None  # the value's standard error over the held-out samples, when recorded


@dataclass(frozen=True)
class MetricValues:
    """Counted results per group (a canonical preset stem, a setting's label or a custom config's name),
    each list ordered by seed, and failed runs. `settings`: each setting label's config hash (grouped
    by setting; imported groups have none)."""

    samples: dict[str, list[SeedValue]]
    notes: tuple[str, ...]
    failures: dict[str, FailedRuns]
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, list[float]]:
        return {config: [s.value for s in samples] for config, samples in self.samples.items()}

    @property
    def seeds(self) -> dict[str, list[int]]:
        return {config: [s.seed for s in samples] for config, samples in self.samples.items()}

    @property
    def held_out_se(self) -> dict[str, list[float]]:
        return {
            config: [s.held_out_se for s in samples if s.held_out_se is not None]
            for config, samples in self.samples.items()
        }


def canonical_configs(configs: Sequence[str] | None) -> list[str] | None:
    """Aliases (`q204`, `Q-204`) → canonical stems, duplicates dropped; a name that is no preset is kept
    for `check_custom_configs` (an imported custom config). InvalidInput naming the field."""
    if configs is None:
        return None
    names = [" ".join(name.split()) for name in configs if name.strip()]
    if not names:
        raise InvalidInput("configs: no config given")
    try:
        return list(dict.fromkeys(_preset_or_custom(check_text(name, max_length=CONFIG_MAX_LENGTH)) for name in names))
    except ValueError as exc:
        raise InvalidInput(f"configs: {exc}") from None


def _preset_or_custom(name: str) -> str:
    try:
        return canonical_preset(name)
    except ValueError:
        return name


def check_custom_configs(session: Session, names: Sequence[str] | None) -> None:
    """InvalidInput for a name among `names` that is neither a preset nor an imported custom config:
    a mistyped preset is refused, as before custom configs existed."""
    custom = sorted(set(names or ()) - set(list_presets()))
    if not custom:
        return
    known = set(session.scalars(select(ImportedResult.config).where(ImportedResult.config.in_(custom)).distinct()))
    unknown = [name for name in custom if name not in known]
    if unknown:
        valid = ", ".join(list_presets())
        raise InvalidInput(
            f"configs: unknown preset {unknown[0]!r}; valid: {valid}, or the name of an imported custom config"
        )


def check_metric(metric: str) -> str:
    """`metric` if it is a metric name, else InvalidInput."""
    try:
        return check_metric_name(metric)
    except ValueError as error:
        raise InvalidInput(f"metric: {metric!r} is {error}") from None


def _run_results(
    session: Session, configs: Sequence[str] | None, metric: str, tag: str | None
) -> Iterator[tuple[str, int, SeedValue | None]]:
    """(config, seed, value) of every succeeded run in the selection; value None when not finite."""
    value = Run.final_metrics[metric].as_float()  # picked by the database: no run's whole metrics decoded here
    held_out_se = Run.final_metrics[f"{metric}_se"].as_float()
    query = (
        select(Job.preset, Job.id, Job.config_hash, Run.seed, value, held_out_se, Run.finished_at)
        .join(Run.job)
        .where(Run.state == State.SUCCEEDED)
    )
    for preset, job_id, config_hash, seed, number, se, finished_at in session.execute(_selected(query, configs, tag)):
        # None: not recorded, or stored as null because not finite
        result = None if number is None else SeedValue(seed, number, f"job {job_id}", config_hash, finished_at, se)
        yield preset, config_hash, seed, result


def _selected(query: Any, configs: Sequence[str] | None, tag: str | None) -> Any:
    """`query` (over jobs joined with runs) limited to the configs and the tag."""
    if configs is not None:
        query = query.where(Job.preset.in_(configs))
    if tag is not None:
        query = query.where(Job.tag_rows.any(JobTag.tag == tag))
    return query


def _failures(
    session: Session, configs: Sequence[str] | None, tag: str | None, group_by: GroupBy
) -> dict[str, FailedRuns]:
    """Per group (preset, or config hash), its failed runs among the finished ones: the most recent outcome
    of each seed decides."""
    group = Job.preset if group_by == "preset" else Job.config_hash
    query = select(group, Run.seed, Run.state, Run.step, Run.divergence, Run.error, Run.finished_at).join(Run.job)
    latest: dict[tuple[str, int], tuple[datetime, RunRecord]] = {}
    for key, seed, state, step, divergence, error, finished_at in session.execute(
        _selected(query.where(Run.state.in_(OUTCOME_STATES)), configs, tag)
    ):
        record = RunRecord.from_outcome(key, seed, state, step, divergence, error)
        if (key, seed) not in latest or finished_at > latest[key, seed][0]:
            latest[key, seed] = (finished_at, record)
    return summarise_failures(record for _, record in latest.values())


def _tagged(session: Session, tag: str) -> ColumnElement[bool]:
    """Imported rows whose JSON list of tags holds `tag`, tested by the database (JSONB containment on
    Postgres, json_each on SQLite): no row's tags are decoded in Python."""
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(ImportedResult.tags, JSONB).contains([tag])
    each = func.json_each(ImportedResult.tags).table_valued("value")
    return exists(select(1).select_from(each).where(each.c.value == tag))


def _imported_results(
    session: Session, configs: Sequence[str] | None, metric: str, tag: str | None
) -> Iterator[tuple[str, SeedValue]]:
    """(config, value) of every imported row in the selection that carries the metric."""
    value = ImportedResult.metrics[metric].as_float()  # picked by the database, like a run's final value
    held_out_se = ImportedResult.metrics[f"{metric}_se"].as_float()
    query = select(ImportedResult.config, ImportedResult.seed, value, held_out_se, ImportedResult.imported_at).where(
        value.is_not(None)
    )
    if configs is not None:
        query = query.where(ImportedResult.config.in_(configs))
    if tag is not None:
        query = query.where(_tagged(session, tag))
    for config, seed, number, se, imported_at in session.execute(query):
        yield config, SeedValue(seed, number, "import", None, imported_at, se)


NOTE_ITEMS = 10
"""Seeds or hashes named in one note; more are counted (a note stays one line however many results there are)."""


def _listed(items: Sequence[object]) -> str:
    """`1, 2, 3` or, for many, `1, 2, …, 10 and 65 more`."""
    shown = ", ".join(map(str, items[:NOTE_ITEMS]))
    return shown if len(items) <= NOTE_ITEMS else f"{shown} and {len(items) - NOTE_ITEMS} more"


def _setting_names(session: Session, configs: Sequence[str] | None, tag: str | None) -> dict[str, str]:
    """Config hash → the setting's label (`ired_core.results_dir.setting_labels`) for every job in the
    selection, finished or not (so a setting keeps its label while others train), from the overrides of
    the first job of each hash; two settings whose labels would be equal (a preset changed between
    them) get their hash appended."""
    first = _selected(select(func.min(Job.id)).group_by(Job.config_hash), configs, tag)
    jobs = session.execute(select(Job.config_hash, Job.preset, Job.overrides).where(Job.id.in_(first)))
    labels = setting_labels({config_hash: (preset, overrides) for config_hash, preset, overrides in jobs})
    taken = list(labels.values())
    return {h: label if taken.count(label) == 1 else f"{label}{SETTING_SEPARATOR}{h}" for h, label in labels.items()}


def sorted_groups(names: Iterable[str]) -> list[str]:
    """Groups in preset order (a setting by its preset), then custom configs by name."""
    order = {preset: index for index, preset in enumerate(list_presets())}  # one read of the configs folder
    return sorted(names, key=lambda name: (order.get(name.split(SETTING_SEPARATOR)[0], len(order)), name))


def collect_values(
    *,
    session: Session,
    configs: Sequence[str] | None,
    metric: str,
    tag: str | None = None,
    group_by: GroupBy = "preset",
) -> MetricValues:
    """The counted results of `metric` per preset or setting (None: every config with results), with notes.

    `configs` are canonical stems or custom configs' names. One value per (group, seed): the most recent
    result. Memory is a few hundred bytes per result: one value per seed is kept, and repeats are only
    counted.
    """
    latest: dict[str, dict[int, SeedValue]] = {}
    repeated: dict[str, set[int]] = {}
    not_finite: dict[str, set[int]] = {}

    def count(group: str, result: SeedValue) -> None:
        seeds = latest.setdefault(group, {})
        kept = seeds.get(result.seed)
        if kept is not None:
            repeated.setdefault(group, set()).add(result.seed)
        if kept is None or result.at > kept.at:
            seeds[result.seed] = result

    # grouped by setting, runs are first keyed by their config hash and named once all hashes are known
    for preset, config_hash, seed, result in _run_results(session, configs, metric, tag):
        key = preset if group_by == "preset" else config_hash
        if result is None:
            not_finite.setdefault(key, set()).add(seed)
        else:
            count(key, result)
    failures = _failures(session, configs, tag, group_by)
    names: dict[str, str] = {}
    if group_by == "setting":
        names = _setting_names(session, configs, tag)
        latest = {names[key]: seeds for key, seeds in latest.items()}
        repeated = {names[key]: seeds for key, seeds in repeated.items()}
        not_finite = {names[key]: seeds for key, seeds in not_finite.items()}
        failures = {names[key]: replace(runs, config=names[key]) for key, runs in failures.items()}
    presets = set(list_presets())
    for config, result in _imported_results(session, configs, metric, tag):
        # a preset's imported rows have no config hash: grouped by setting, they are a setting of their own
        imported_setting = group_by == "setting" and config in presets
        count(f"{config}{SETTING_SEPARATOR}{IMPORTED_SETTING}" if imported_setting else config, result)

    samples: dict[str, list[SeedValue]] = {}
    notes: list[str] = []
    for group in sorted_groups(latest):
        seeds = latest[group]
        samples[group] = [seeds[seed] for seed in sorted(seeds)]
        if group.split(SETTING_SEPARATOR)[0] not in presets:
            notes.append(f"{group}: imported results of a config that is not a preset here")
        if group in repeated:
            notes.append(
                f"{group}: seed(s) {_listed(sorted(repeated[group]))} have more than one result; "
                "the most recent of each counts"
            )
        hashes = sorted({s.config_hash for s in samples[group] if s.config_hash is not None})
        if len(hashes) > 1:
            notes.append(
                f"{group}: values from {len(hashes)} different settings (config hashes {_listed(hashes)}); "
                "group by setting, or filter by tag, to compare one setting"
            )
    for group in sorted_groups(not_finite):
        seeds = _listed(sorted(not_finite[group]))
        notes.append(f"{group}: succeeded run(s) of seed(s) {seeds} have no finite {metric}; not counted")
    settings = {label: config_hash for config_hash, label in names.items()}
    return MetricValues(samples=samples, notes=tuple(notes), failures=failures, settings=settings)


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
    settings: dict[str, str] = field(default_factory=dict)  # setting label → config hash, grouped by setting


def default_configs(found: Sequence[str]) -> list[str]:
    """The plan's four configs and every other config with results or failed runs, in preset order,
    then custom configs by name."""
    return sorted_groups(set(PLAN_CONFIGS) | set(found))


def _reference_config(name: str) -> str | None:
    """The config whose values the baseline `name` needs (q100 for `auto`, a setting's preset, a custom
    config's name); None for built-ins and tags."""
    if name == AUTO_BASELINE:
        return IN_HOUSE_BASELINE
    if name in BUILTIN_BASELINES or name.startswith(TAG_BASELINE_PREFIX):
        return None
    return name.split(SETTING_SEPARATOR)[0]


def _canonical_group(name: str) -> str:
    """A preset alias as its stem, a setting label with its preset's stem (`q202 · energy_reg_weight=1` →
    `q202_dcd_cdloss · energy_reg_weight=1`), anything else (a custom config's name) as it is: whether
    it names a group is known once the values are (`choose_baseline`)."""
    preset, separator, rest = name.partition(SETTING_SEPARATOR)
    try:
        return canonical_preset(preset) + separator + rest
    except ValueError:
        return check_text(" ".join(name.split()), max_length=CONFIG_MAX_LENGTH)


def canonical_tag(tag: str | None, field: str = "tag") -> str | None:
    """A tag filter by the one tag rule (spaces around it dropped); None for none; InvalidInput naming `field`."""
    if tag is None or not tag.strip():
        return None
    try:
        return check_tag(tag)
    except ValueError as error:
        raise InvalidInput(f"{field}: {error}") from None


def canonical_baseline(name: str) -> str:
    """A built-in name as it is, a config or setting label by its canonical stem, `tag:NAME` with NAME
    by the tag rule."""
    name = name.strip()
    if name in BUILTIN_BASELINES or name == AUTO_BASELINE:
        return name
    if name.startswith(TAG_BASELINE_PREFIX):
        return TAG_BASELINE_PREFIX + (canonical_tag(name.removeprefix(TAG_BASELINE_PREFIX), "baseline") or "")
    try:
        return _canonical_group(name)
    except ValueError as error:
        raise InvalidInput(f"baseline: {error}") from None


def check_group_by(group_by: str) -> GroupBy:
    """`preset` or `setting`, else InvalidInput naming the field."""
    for valid in GROUP_BYS:
        if group_by == valid:
            return valid
    raise InvalidInput(f"group_by: {group_by!r} is not one of {', '.join(GROUP_BYS)}")


@dataclass(frozen=True)
class CompareQuery:
    """A comparison request in canonical form: `q203`, `Q-203`, `q203_dcd_replay`, `q203 ` and
    `q203,q203` give equal queries, so equivalent requests share one cache entry and one computation.

    Build it with `of`, which checks every field (InvalidInput naming it).
    """

    configs: tuple[str, ...] | None = None
    baseline: str = AUTO_BASELINE
    metric: str = "val_mse"
    tag: str | None = None
    group_by: GroupBy = "preset"

    @classmethod
    def of(
        cls,
        *,
        configs: Sequence[str] | None = None,
        baseline: str = AUTO_BASELINE,
        metric: str = "val_mse",
        tag: str | None = None,
        group_by: str = "preset",
    ) -> CompareQuery:
        names = canonical_configs(configs)
        return cls(
            configs=None if names is None else tuple(names),
            baseline=canonical_baseline(baseline),
            metric=check_metric(metric.strip()),
            tag=canonical_tag(tag),
            group_by=check_group_by(group_by),
        )

    def query_string(self) -> dict[str, str]:
        """The parameters that differ from the defaults, for links to this comparison."""
        values = {"configs": ",".join(self.configs or ()), "baseline": self.baseline, "metric": self.metric}
        values |= {"tag": self.tag or "", "group_by": self.group_by}
        defaults = {"baseline": AUTO_BASELINE, "metric": "val_mse", "group_by": "preset"}
        return {name: value for name, value in values.items() if value and value != defaults.get(name)}


def _baseline(session: Session, name: str, found: MetricValues, metric: str) -> Baseline:
    """The built-in baseline, the values of a config (same selection as the rows), or of a tag."""
    if not name.startswith(TAG_BASELINE_PREFIX):
        try:
            return choose_baseline(name, found.values, found.seeds, metric)
        except ValueError as error:
            raise InvalidInput(f"baseline: {error}") from None
    tag = name.removeprefix(TAG_BASELINE_PREFIX)
    tagged = collect_values(session=session, configs=None, metric=metric, tag=tag).values
    values = [value for config_values in tagged.values() for value in config_values]
    if not values:
        raise InvalidInput(f"baseline: no succeeded {metric} results tagged {tag!r}")
    return Baseline.from_values(name, values, origin=MEASURED_HERE)


def comparison_data(
    *,
    session: Session,
    configs: Sequence[str] | None = None,
    baseline: str = AUTO_BASELINE,
    metric: str = "val_mse",
    tag: str | None = None,
    group_by: str = "preset",
) -> ComparisonData:
    """Compare configs (aliases accepted; None: `default_configs`) against `baseline`, one row per preset
    or, with `group_by="setting"`, one row per setting of the selected configs.

    `baseline`: `auto` (q100 under the same tag when it has results, else plan), a built-in name (plan,
    lab10, ired_published), a config (its values under the same `tag` filter), a setting's label or a
    custom config's name (a group of the comparison), or `tag:NAME` (every result tagged NAME, whatever
    its config).
    """
    query = CompareQuery.of(configs=configs, baseline=baseline, metric=metric, tag=tag, group_by=group_by)
    names = None if query.configs is None else list(query.configs)
    check_custom_configs(session, names)
    reference_config = _reference_config(query.baseline)
    wanted = names if names is None or reference_config is None else [*names, reference_config]
    found = collect_values(session=session, configs=wanted, metric=query.metric, tag=query.tag, group_by=query.group_by)
    reference = _baseline(session, query.baseline, found, query.metric)
    if query.group_by == "setting":  # the settings found of the selected configs (and the baseline's)
        shown = sorted_groups({*found.samples, *found.failures})
    else:
        shown = names if names is not None else default_configs([*found.samples, *found.failures])
    samples = {name: found.samples.get(name, []) for name in shown}
    comparison = compare(
        {name: [s.value for s in values] for name, values in samples.items()},
        reference,
        metric=query.metric,
        seeds={name: [s.seed for s in values] for name, values in samples.items()},
        held_out_se=found.held_out_se,
        failures=found.failures,
    )
    notes = comparison.notes + found.notes
    if query.baseline == AUTO_BASELINE and reference.name != IN_HOUSE_BASELINE:
        notes += (f"no {IN_HOUSE_BASELINE} results in this selection: the baseline is the plan's number",)
    return ComparisonData(comparison=replace(comparison, notes=notes), samples=samples, settings=found.settings)


def compare_query(*, session: Session, query: CompareQuery) -> ComparisonData:
    """`comparison_data` of a canonical query (the cached answers' key)."""
    return comparison_data(
        session=session,
        configs=query.configs,
        baseline=query.baseline,
        metric=query.metric,
        tag=query.tag,
        group_by=query.group_by,
    )


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


STORE_CHUNK_ROWS = 1000
"""Rows looked up and inserted per statement: 1,000 keys or 1,000 × 8 columns stay far below the
65,535 bind parameters a Postgres statement may carry, whatever the size of the import."""


def _store_rows(session: Session, rows: list[ResultRow], owner: User | Identity, source: str | None) -> ImportSummary:
    """Insert the rows not stored yet, STORE_CHUNK_ROWS at a time in one transaction; Conflict (nothing
    stored) when a stored run has other values."""
    inserted = 0
    for first in range(0, len(rows), STORE_CHUNK_ROWS):
        chunk = rows[first : first + STORE_CHUNK_ROWS]
        keys = [row_key(row) for row in chunk]
        found = session.execute(
            select(ImportedResult.row_key, ImportedResult.metrics).where(ImportedResult.row_key.in_(keys))
        )
        stored: dict[str, dict[str, float]] = {key: metrics for key, metrics in found}
        new = []
        for number, (row, key) in enumerate(zip(chunk, keys, strict=True), start=first + 1):
            if key in stored:
                conflict = _difference(number, row, stored[key])
                if conflict is not None:
                    session.rollback()
                    raise Conflict(conflict)
                continue
            new.append(
                {
                    "row_key": key,
                    "config": row.config,
                    "seed": row.seed,
                    "tags": sorted(set(row.tags)),
                    "metrics": dict(row.metrics),
                    "source": source,
                    "owner_id": owner.id,
                }
            )
        if new:  # a Core insert of plain dicts: no ORM object per row
            session.execute(insert(ImportedResult), new)
        inserted += len(new)
    session.commit()
    return ImportSummary(inserted=inserted, skipped=len(rows) - inserted)


def import_rows(
    *,
    session: Session,
    text: str,
    fmt: RowFormat,
    owner: User | Identity,
    source: str | None = None,
    custom_configs: bool = False,
) -> ImportSummary:
    """Validate and store import rows (`config, seed, <metrics...>, tags`); all or nothing, idempotent.

    `custom_configs`: a config that is not a preset is stored under its own name (a lab's `random
    mining`); without it such a row is refused, so a mistyped preset never becomes a row of its own.

    A row whose config, seed and tags are already stored is skipped when its values are the same, and
    refused (Conflict) when they differ. Any bad row → InvalidInput naming the bad rows and fields.
    """
    if source is not None:
        try:
            check_text(source, max_length=SOURCE_MAX_LENGTH)
        except ValueError as exc:
            raise InvalidInput(f"source: {exc}") from None
    try:
        rows = parse_result_rows(text, fmt, custom_configs=custom_configs)
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
    *,
    session: Session,
    configs: Sequence[str],
    names: Sequence[str] = CURVE_METRICS,
    tag: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> dict[str, dict[str, list[CurvePoint]]]:
    """metric name → config → points in step order, over the configs' running and succeeded runs.

    With `settings` (label → config hash, from a comparison grouped by setting) the configs are setting
    labels and each curve is over the runs of that setting's hash.
    """
    value = Metric.value
    aggregates = (func.avg(value), func.min(value), func.max(value), func.count(value))
    if settings is None:
        group, keys, label = Job.preset, list(configs), {name: name for name in configs}
    else:
        label = {settings[name]: name for name in configs if name in settings}
        group, keys = Job.config_hash, list(label)
    query = (
        select(group, Metric.name, Metric.step, *aggregates)
        .join(Run, Run.id == Metric.run_id)
        .join(Job, Job.id == Run.job_id)
        .where(group.in_(keys), Metric.name.in_(names), Run.state.in_(CURVE_STATES))
        .group_by(group, Metric.name, Metric.step)
        .order_by(Metric.step)
    )
    if tag is not None:
        query = query.where(Job.tag_rows.any(JobTag.tag == tag))
    curves: dict[str, dict[str, list[CurvePoint]]] = {name: {} for name in names}
    for key, name, step, mean, low, high, count in session.execute(query):
        if count:  # every seed's value at this step was non-finite (stored as NULL)
            point = CurvePoint(step, float(mean), float(low), float(high), count)
            curves[name].setdefault(label[key], []).append(point)
    return curves
