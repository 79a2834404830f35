"""Read finished runs: result directories written by `ired-dcd train`, and CSV/JSON import rows.

`ired-dcd train` writes `OUT/<preset_stem>/seed_<k>/result.json`: `{"config": stem, "seed": k,
"status": "succeeded" | "diverged" | "cancelled", "step": n, "metrics": {"val_mse": ..., ...},
"divergence": {...} | null, "error": ..., "tags": [...]}`, beside `config.json` (its overrides name
the run's setting).

Import rows (POST /results/import, `ired-dcd import FILE`) carry `config, seed, <metric columns...>, tags`:
a CSV with a header row (tags separated by ";"), or a JSON list of flat objects (tags a list of strings).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ired_core.configs import OBSERVATION_FIELDS, canonical_preset, list_presets
from ired_core.failures import FAILED_STATUSES, FailedRuns, RunRecord, summarise_failures
from ired_core.input_rules import (
    IMPORT_MAX_ROWS,
    MAX_METRICS,
    check_metric_name,
    check_tags,
    check_text,
    finite_or_none,
    parse_finite,
    parse_seed,
)
from ired_core.run_files import CONFIG_FILE, RESULT_FILE

SUCCEEDED = "succeeded"
ROW_KEYS = ("config", "seed", "tags")
CSV_TAG_SEPARATOR = ";"
CONFIG_MAX_LENGTH = 64
PRESET_LIKE = re.compile(r"[qQ]-?[0-9][0-9A-Za-z]{1,3}(_\w+)?")
"""What a preset name looks like (`q204`, `Q-204`, `q204_dcd_full`): refused as a custom config's name."""
RowFormat = Literal["csv", "json"]


def _read_result(path: Path) -> dict[str, Any]:
    """One result.json as a dict; ValueError naming the file if it is not a JSON object."""
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read result ({error})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return result


def _run_key(path: Path, result: Mapping[str, Any]) -> tuple[str, int]:
    """(config, seed) of a result; ValueError naming the file if either is missing or malformed."""
    config, seed = result.get("config"), result.get("seed")
    if not isinstance(config, str) or not config:
        raise ValueError(f"{path}: 'config' must be a non-empty string, got {config!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{path}: 'seed' must be a non-negative integer, got {seed!r}")
    return config, seed


def _metric_value(path: Path, result: Mapping[str, Any], metric: str) -> float:
    """The finite value of `metric` in a succeeded result; ValueError naming file and metric."""
    metrics = result.get("metrics")
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{path}: succeeded run has no finite metrics.{metric} (got {value!r})")
    return float(value)


GroupBy = Literal["preset", "setting"]
GROUP_BYS: tuple[GroupBy, ...] = ("preset", "setting")
SETTING_SEPARATOR = " · "
K = TypeVar("K")


@dataclass(frozen=True)
class DirResults:
    """What a results directory holds, per group (a preset, or a setting): ordered by seed.

    `values`, `seeds`, `held_out_se` and `steps` cover the succeeded runs; `failures` the runs that
    diverged or failed (ired_core.failures).
    """

    metric: str
    values: dict[str, list[float]]
    seeds: dict[str, list[int]]
    held_out_se: dict[str, list[float]]
    steps: dict[str, list[int]]
    failures: dict[str, FailedRuns]

    @property
    def groups(self) -> list[str]:
        """Every group with a succeeded or a failed run, sorted."""
        return sorted({*self.values, *self.failures})


def _overrides(result_path: Path) -> dict[str, Any]:
    """The overrides recorded in the run's config.json beside its result.json ({} when absent)."""
    config_path = result_path.with_name(CONFIG_FILE)
    try:
        overrides = json.loads(config_path.read_text()).get("overrides") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return overrides if isinstance(overrides, dict) else {}


def setting_labels(runs: Mapping[K, tuple[str, Mapping[str, Any]]]) -> dict[K, str]:
    """`preset · key=value …` per run (or per setting), naming only the overrides that not all share.

    runs: any key (a result path, a config hash) → (preset, overrides). Overrides common to all runs (a
    reduced scale, say) say nothing about which setting a run is, so they are left out of every label, and
    so are the fields that only change how a run is observed (`OBSERVATION_FIELDS`: evaluation chunk, log
    interval).
    """
    items = [set(_hashable_items(overrides)) for _, overrides in runs.values()]
    shared = set.intersection(*items) if items else set()
    labels = {}
    for path, (preset, overrides) in runs.items():
        own = sorted(item for item in _hashable_items(overrides) if item not in shared)
        labels[path] = SETTING_SEPARATOR.join([preset, *(f"{key}={value}" for key, value in own)])
    return labels


def _hashable_items(overrides: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, value as text): strings as they are, anything else as JSON."""
    return [
        (key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
        for key, value in overrides.items()
        if key not in OBSERVATION_FIELDS
    ]


def read_results(root: Path, metric: str = "val_mse", group_by: GroupBy = "preset") -> DirResults:
    """Every result.json under `root` (any depth), grouped by preset or by setting, ordered by seed.

    Succeeded runs give their `metric` (and its held-out standard error `<metric>_se` when recorded);
    diverged and failed runs are counted in `failures`; cancelled runs are skipped. ValueError when
    `root` holds no result.json, a succeeded run lacks a finite value of `metric`, or two files hold the
    same group and seed (which would count one seed twice).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    paths = sorted(root.glob(f"**/{RESULT_FILE}"))
    if not paths:
        raise ValueError(f"{root}: no {RESULT_FILE} found (expected <config>/seed_<k>/{RESULT_FILE})")
    results = {path: _read_result(path) for path in paths}
    keys = {path: _run_key(path, result) for path, result in results.items()}
    labels = (
        setting_labels({path: (keys[path][0], _overrides(path)) for path in paths})
        if group_by == "setting"
        else {path: keys[path][0] for path in paths}
    )
    seen: dict[tuple[str, int], Path] = {}
    succeeded: list[tuple[str, int, float, float | None, int]] = []
    records: list[RunRecord] = []
    for path, result in results.items():
        status, group, seed = result.get("status"), labels[path], keys[path][1]
        if status not in (SUCCEEDED, *FAILED_STATUSES):
            continue
        if (group, seed) in seen:
            raise ValueError(f"{group} seed {seed}: results in both {seen[group, seed]} and {path}")
        seen[group, seed] = path
        records.append(
            RunRecord.from_outcome(
                group, seed, status, result.get("step"), result.get("divergence"), result.get("error")
            )
        )
        if status == SUCCEEDED:
            se = (result.get("metrics") or {}).get(f"{metric}_se")
            se = finite_or_none(se) if isinstance(se, int | float) else None
            succeeded.append((group, seed, _metric_value(path, result, metric), se, int(result.get("step") or 0)))
    grouped = DirResults(metric, {}, {}, {}, {}, summarise_failures(records))
    for group, seed, value, se, step in sorted(succeeded):
        grouped.values.setdefault(group, []).append(value)
        grouped.seeds.setdefault(group, []).append(seed)
        grouped.steps.setdefault(group, []).append(step)
        if se is not None:
            grouped.held_out_se.setdefault(group, []).append(se)
    return grouped


# ---------------------------------------------------------------------------------------------
# import rows


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One imported run: canonical preset stem, seed, metric values, tags."""

    config: str
    seed: int
    metrics: Mapping[str, float]
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowError:
    """What is wrong with one field of one row (rows count from 1, the CSV header excluded)."""

    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, field {self.field!r}: {self.message}"


MAX_REPORTED_ERRORS = 100
"""Problems listed in one answer; the rest are counted (a 100,000-row file with a bad column would
otherwise answer megabytes)."""


class ResultRowsError(ValueError):
    """Every problem found in an import, in row order; `errors` for structured (422) answers.

    At most MAX_REPORTED_ERRORS are kept; `more` counts the others.
    """

    def __init__(self, errors: list[RowError], more: int = 0) -> None:
        shown = errors[:MAX_REPORTED_ERRORS]
        more += len(errors) - len(shown)
        tail = f"; and {more} more problem(s)" if more else ""
        super().__init__("; ".join(str(e) for e in shown) + tail)
        self.errors, self.more = shown, more


def _parse_config(value: Any, known: dict[str, str], custom: bool) -> str:
    """The canonical stem of a preset alias or, with `custom`, a name of the importer's own for a config
    that is not a preset (`random mining`). `known` remembers the names seen (a lookup reads the configs
    folder, and a large file repeats a handful of names)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a preset name such as q204")
    if value not in known:
        known[value] = _config_name(check_text(value, max_length=CONFIG_MAX_LENGTH), custom)
    return known[value]


def _config_name(value: str, custom: bool) -> str:
    """A preset's stem; a custom name only when asked for, so that a mistyped preset is still refused."""
    try:
        return canonical_preset(value)
    except ValueError as error:
        if not custom:
            raise ValueError(f"{error}; a config that is not a preset needs custom_configs=true") from None
    name = " ".join(value.split())
    if PRESET_LIKE.fullmatch(name):  # `q205`, `Q-2O4`: a preset's id mistyped, not a name of one's own
        raise ValueError(f"{name!r} looks like a preset id but is none; valid: {', '.join(list_presets())}")
    if SETTING_SEPARATOR.strip() in name:
        raise ValueError(f"must not contain {SETTING_SEPARATOR.strip()!r} (it separates a setting's label)")
    return name


def _parse_tags(value: Any) -> tuple[str, ...]:
    """A list of tags, or (from CSV) one string of tags separated by ';'; the rules of job tags."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [tag for tag in value.split(CSV_TAG_SEPARATOR) if tag.strip()]
    if not isinstance(value, list):
        raise ValueError("must be a list of tags")
    return check_tags(value)


def _parse_row(
    number: int, raw: Mapping[str, Any], known: dict[str, str], custom: bool
) -> tuple[ResultRow | None, list[RowError]]:
    """Validate one row; every bad field is reported, not only the first."""
    errors: list[RowError] = []

    def field(name: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(raw.get(name))
        except ValueError as error:
            errors.append(RowError(number, name, str(error)))
            return None

    config = field("config", lambda value: _parse_config(value, known, custom))
    seed = field("seed", parse_seed)
    tags = field("tags", _parse_tags)
    # a CSV row leaves a metric cell empty when that run did not record the metric
    metric_names = [k for k, v in raw.items() if k not in ROW_KEYS and v not in ("", None)]
    metrics = {}
    if len(metric_names) > MAX_METRICS:
        message = f"at most {MAX_METRICS} metric values per row, got {len(metric_names)}"
        errors.append(RowError(number, "metrics", message))
    elif not metric_names:
        errors.append(RowError(number, "metrics", "no metric value (e.g. a val_mse column)"))
    for name in metric_names[:MAX_METRICS]:
        try:
            check_metric_name(name)
        except ValueError as error:
            errors.append(RowError(number, name, str(error)))
            continue
        metrics[name] = field(name, parse_finite)
    if errors:
        return None, errors
    return ResultRow(config=config, seed=seed, metrics=metrics, tags=tags), []


def _csv_records(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, cells by header name) of each CSV row; blank lines are skipped.

    The header's names must be present and distinct: a repeated column would silently keep one of its
    cells. ResultRowsError for the header, a row with more cells than the header, or text that the
    CSV reader refuses (a cell over its size limit).
    """
    reader = csv.reader(io.StringIO(text))
    number = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        names = [name.strip() for name in header]
        if any(not name for name in names):
            raise ResultRowsError([RowError(0, "header", "every column needs a name")])
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            columns = ", ".join(map(repr, repeated))
            raise ResultRowsError([RowError(0, "header", f"column(s) {columns} appear more than once")])
        for cells in reader:
            if not cells:
                continue
            number += 1
            if len(cells) > len(names):
                raise ResultRowsError([RowError(number, "row", "more cells than header columns")])
            yield number, {name: cell.strip() for name, cell in zip(names, cells, strict=False)}
    except csv.Error as error:
        raise ResultRowsError([RowError(number + 1, "row", f"not readable as CSV ({error})")]) from None


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _json_records(text: str) -> Iterator[tuple[int, Any]]:
    """(row number, value) of each element of a JSON list, decoded one element at a time.

    One element at a time: a document is never held as Python objects all at once, and the row limit
    stops reading early. A value nested deeper than Python's parser allows is refused, naming its row.
    """
    decoder = json.JSONDecoder()
    position = _JSON_SPACE.match(text).end()
    if not text.startswith("[", position):
        try:  # JSON of another kind, or no JSON at all (a CSV sent as JSON)?
            decoder.raw_decode(text, position)
        except ValueError as error:
            raise ResultRowsError([RowError(0, "document", f"invalid JSON ({error})")]) from None
        except RecursionError:
            pass
        raise ResultRowsError([RowError(0, "document", "expected a JSON list of row objects")])
    position = _JSON_SPACE.match(text, position + 1).end()
    number = 0
    closed = text.startswith("]", position)
    while not closed:
        number += 1
        try:
            record, position = decoder.raw_decode(text, position)
        except RecursionError:
            raise ResultRowsError([RowError(number, "row", "nested too deeply; a row is a flat object")]) from None
        except ValueError as error:  # JSONDecodeError, or an integer with more digits than Python reads
            raise ResultRowsError([RowError(0, "document", f"invalid JSON ({error})")]) from None
        yield number, record
        position = _JSON_SPACE.match(text, position).end()
        closed = text.startswith("]", position)
        if not closed and not text.startswith(",", position):
            raise ResultRowsError([RowError(0, "document", f"invalid JSON (expected ',' or ']' at char {position})")])
        position = _JSON_SPACE.match(text, position + 1).end()
    if position < len(text):
        raise ResultRowsError([RowError(0, "document", f"invalid JSON (extra data at char {position})")])


def parse_result_rows(text: str, fmt: RowFormat, *, custom_configs: bool = False) -> list[ResultRow]:
    """Validate import rows (`config, seed, <metric columns...>, tags`); all or nothing.

    config: a known preset (any alias, stored as its canonical stem), or with `custom_configs` also a
    name for a config that is not a preset (a lab's `random mining`; not one shaped like a preset id,
    which is a typo); seed: an integer in
    [0, DB_INT_MAX], from CSV in ASCII digits; every other column: a finite float metric value (empty CSV
    cells are skipped; 1 to MAX_METRICS per row); tags: optional, the rules of job tags
    (`ired_core.input_rules`). A row repeating the config, seed and tags of an earlier row is an error,
    and so are more than IMPORT_MAX_ROWS rows. Raises ResultRowsError (a ValueError) listing the
    problems with their row number and field; row 0 means the document or the header.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown format {fmt!r}; valid: csv, json")
    records = _csv_records(text) if fmt == "csv" else _json_records(text)
    rows: list[ResultRow] = []
    errors: list[RowError] = []
    first_row_of: dict[tuple[str, int, tuple[str, ...]], int] = {}
    known: dict[str, str] = {}
    for number, record in records:
        if number > IMPORT_MAX_ROWS:
            errors.append(RowError(number, "document", f"at most {IMPORT_MAX_ROWS} rows per import; split the file"))
            break
        if not isinstance(record, dict):
            errors.append(RowError(number, "row", "expected an object"))
            continue
        row, row_errors = _parse_row(number, record, known, custom_configs)
        errors += row_errors
        if row is None:
            continue
        key = (row.config, row.seed, tuple(sorted(row.tags)))
        if key in first_row_of:
            message = f"duplicates row {first_row_of[key]} (same config, seed and tags)"
            errors.append(RowError(number, "seed", message))
        first_row_of.setdefault(key, number)
        if not errors:  # once anything is wrong nothing is returned: stop keeping rows
            rows.append(row)
    if errors:
        raise ResultRowsError(errors)
    if not rows:
        raise ResultRowsError([RowError(0, "document", "no rows")])
    return rows
