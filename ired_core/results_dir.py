"""Read finished runs: result directories written by `ired-dcd train`, and CSV/JSON import rows.

`ired-dcd train` writes `OUT/<preset_stem>/seed_<k>/result.json`: `{"config": stem, "seed": k,
"status": "succeeded" | "diverged" | "cancelled", "metrics": {"val_mse": ..., ...}, "tags": [...]}`.

Import rows (POST /results/import, `ired-dcd import FILE`) carry `config, seed, <metric columns...>, tags`:
a CSV with a header row (tags separated by ";"), or a JSON list of flat objects (tags a list of strings).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ired_core.configs import canonical_preset

RESULT_FILE = "result.json"
SUCCEEDED = "succeeded"
ROW_KEYS = ("config", "seed", "tags")
CSV_TAG_SEPARATOR = ";"
METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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


def load_results(root: Path, metric: str = "val_mse") -> dict[str, list[float]]:
    """`metric` of every succeeded run under `root` (any depth), grouped by config, ordered by seed.

    Diverged and cancelled runs are skipped. ValueError when `root` holds no result.json, none of them
    succeeded, a succeeded run lacks a finite value of `metric`, or two files hold the same config and
    seed (which would count one seed twice).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    paths = sorted(root.glob(f"**/{RESULT_FILE}"))
    if not paths:
        raise ValueError(f"{root}: no {RESULT_FILE} found (expected <config>/seed_<k>/{RESULT_FILE})")
    by_run: dict[tuple[str, int], tuple[Path, float]] = {}
    for path in paths:
        result = _read_result(path)
        if result.get("status") != SUCCEEDED:
            continue
        key = _run_key(path, result)
        if key in by_run:
            raise ValueError(f"config {key[0]} seed {key[1]}: results in both {by_run[key][0]} and {path}")
        by_run[key] = (path, _metric_value(path, result, metric))
    if not by_run:
        raise ValueError(f"{root}: {len(paths)} {RESULT_FILE} found, none with status {SUCCEEDED!r}")
    grouped: dict[str, list[float]] = {}
    for (config, _seed), (_path, value) in sorted(by_run.items()):
        grouped.setdefault(config, []).append(value)
    return grouped


# ---------------------------------------------------------------------------------------------
# import rows


@dataclass(frozen=True)
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


class ResultRowsError(ValueError):
    """Every problem found in an import, in row order; `errors` for structured (422) answers."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def _parse_config(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a preset name such as q204")
    return canonical_preset(value)


def _parse_seed(value: Any) -> int:
    """A non-negative int; from CSV the text of one ("3", not "3.0")."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"must be a non-negative integer, got {value!r}")


def _parse_metric(value: Any) -> float:
    """A finite float; from CSV its text."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a finite number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _parse_tags(value: Any) -> tuple[str, ...]:
    """A list of non-empty strings, or (from CSV) one string of tags separated by ';'."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [tag.strip() for tag in value.split(CSV_TAG_SEPARATOR) if tag.strip()]
    if not isinstance(value, list) or not all(isinstance(tag, str) and tag.strip() for tag in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(tag.strip() for tag in value)


def _parse_row(number: int, raw: Mapping[str, Any]) -> tuple[ResultRow | None, list[RowError]]:
    """Validate one row; every bad field is reported, not only the first."""
    errors: list[RowError] = []

    def field(name: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(raw.get(name))
        except ValueError as error:
            errors.append(RowError(number, name, str(error)))
            return None

    config = field("config", _parse_config)
    seed = field("seed", _parse_seed)
    tags = field("tags", _parse_tags)
    # a CSV row leaves a metric cell empty when that run did not record the metric
    metric_names = [k for k, v in raw.items() if k not in ROW_KEYS and v not in ("", None)]
    metrics = {name: field(name, _parse_metric) for name in metric_names}
    errors += [
        RowError(number, name, "not a metric name (letters, digits and _, not starting with a digit)")
        for name in metric_names
        if not METRIC_NAME.fullmatch(name)
    ]
    if not metric_names:
        errors.append(RowError(number, "metrics", "no metric value (e.g. a val_mse column)"))
    if errors:
        return None, errors
    return ResultRow(config=config, seed=seed, metrics=metrics, tags=tags), []


def _csv_records(text: str) -> list[dict[str, Any]]:
    """CSV rows as dicts keyed by the header; a header column without a name is an error."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    if any(not (name or "").strip() for name in reader.fieldnames):
        raise ResultRowsError([RowError(0, "header", "every column needs a name")])
    records = []
    for number, record in enumerate(reader, start=1):
        if None in record:
            raise ResultRowsError([RowError(number, "row", "more cells than header columns")])
        records.append({name.strip(): (v or "").strip() for name, v in record.items()})
    return records


def _json_records(text: str) -> list[Any]:
    """A JSON list of row objects."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultRowsError([RowError(0, "document", f"invalid JSON ({error})")]) from None
    if not isinstance(records, list):
        raise ResultRowsError([RowError(0, "document", "expected a JSON list of row objects")])
    return records


def parse_result_rows(text: str, fmt: RowFormat) -> list[ResultRow]:
    """Validate import rows (`config, seed, <metric columns...>, tags`); all or nothing.

    config: a known preset (any alias, stored as its canonical stem); seed: a non-negative integer;
    every other column: a finite float metric value (empty CSV cells are skipped; at least one metric
    per row); tags: optional. A row repeating the config, seed and tags of an earlier row is an error.
    Raises ResultRowsError (a ValueError) listing every problem with its row number and field;
    row 0 means the document or the header.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown format {fmt!r}; valid: csv, json")
    records = _csv_records(text) if fmt == "csv" else _json_records(text)
    if not records:
        raise ResultRowsError([RowError(0, "document", "no rows")])
    rows: list[ResultRow] = []
    errors: list[RowError] = []
    first_row_of: dict[tuple[str, int, tuple[str, ...]], int] = {}
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            errors.append(RowError(number, "row", "expected an object"))
            continue
        row, row_errors = _parse_row(number, record)
        errors += row_errors
        if row is None:
            continue
        key = (row.config, row.seed, row.tags)
        if key in first_row_of:
            message = f"duplicates row {first_row_of[key]} (same config, seed and tags)"
            errors.append(RowError(number, "seed", message))
        first_row_of.setdefault(key, number)
        rows.append(row)
    if errors:
        raise ResultRowsError(errors)
    return rows
