"""The rules every input of the service follows, in one place: tags, free text, seeds, metric names, numbers.

Jobs (`POST /jobs`, the CLI), imports (`POST /results/import`, `ired-dcd import`) and any future way in
(sweeps) check their input with these functions, so the same value is accepted or refused the same way
everywhere. Each check raises ValueError with a message that the caller prefixes with the field's name.

Why these rules: what passes them must also fit the database. Postgres stores neither a NUL character
(in text or JSON) nor a lone surrogate (a string that is not UTF-8), and its INTEGER column is 32-bit;
a value beyond them used to pass validation and fail at the database as a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DB_INT_MAX = 2**31 - 1
"""The largest value of the database's INTEGER columns (ids, seeds, steps): seeds lie in [0, DB_INT_MAX]."""
MAX_SEEDS = 64
"""Seeds in one job: the width of one ensemble."""

TAG_MAX_LENGTH = 64
"""Characters in one tag (the `job_tags.tag` column)."""
MAX_TAGS = 16
"""Tags on one job or one imported row."""
TAG_PATTERN = r"^[\w.:-]+$"
"""Letters, digits, `_ . : -`: no spaces, separators or control characters (also as a JSON-schema pattern)."""
_TAG = re.compile(TAG_PATTERN)

METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A metric name: ASCII letters, digits and `_`, not starting with a digit."""
METRIC_NAME_MAX_LENGTH = 64
"""Characters in a metric name (the `metrics.name` column)."""
MAX_METRICS = 64
"""Metric values in one imported row."""

IMPORT_MAX_ROWS = 100_000
"""Rows in one import request: bounds what parsing and storing one document costs (split larger files)."""
MAX_JSON_DEPTH = 32
"""Nesting of a JSON value in job overrides or SLURM options (a row of an import nests 3 deep at most)."""
SWEEP_MAX_POINTS = 64
"""Grid points (jobs) of one sweep: with 64 seeds each, 4,096 runs, the most one request may queue."""

_ASCII_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_STORABLE = re.compile(r"[\x00\ud800-\udfff]")


def check_text(value: str, *, max_length: int | None = None) -> str:
    """`value` unchanged, or ValueError for a NUL, a lone surrogate or more than `max_length` characters."""
    bad = _NOT_STORABLE.search(value)
    if bad is not None:
        what = "a NUL character" if bad[0] == "\x00" else f"a lone surrogate {bad[0]!r}"
        raise ValueError(f"contains {what} at position {bad.start()}; only text that UTF-8 can encode, without NUL")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"at most {max_length} characters, got {len(value)}")
    return value


def check_json_text(value: Any, *, path: str = "", depth: int = 0) -> Any:
    """`value` unchanged when every string in it (keys too) passes `check_text` and it nests at most
    MAX_JSON_DEPTH deep; else ValueError naming the place inside it (`slurm.extra_sbatch_lines[2]: …`)."""
    where = f"{path}: " if path else ""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where[:80]}nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        try:
            check_text(value)
        except ValueError as error:
            raise ValueError(f"{where}{error}") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            try:
                check_text(str(key))
            except ValueError as error:
                raise ValueError(f"{where}key {str(key)!r} {error}") from None
            check_json_text(item, path=f"{path}.{key}" if path else str(key), depth=depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json_text(item, path=f"{path}[{i}]", depth=depth + 1)
    return value


def check_tag(value: Any) -> str:
    """A tag, surrounding spaces removed, or ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"a tag is a string, got {value!r}")
    tag = value.strip()
    if not tag:
        raise ValueError("a tag must not be empty")
    if len(tag) > TAG_MAX_LENGTH:
        raise ValueError(f"tag {tag[:20]!r}…: at most {TAG_MAX_LENGTH} characters, got {len(tag)}")
    if not _TAG.match(tag):
        raise ValueError(f"tag {tag!r}: letters, digits and _ . : - only")
    return tag


def check_tags(values: Iterable[Any]) -> tuple[str, ...]:
    """Distinct tags in their first order, each checked; ValueError for a bad one or more than MAX_TAGS."""
    tags = tuple(dict.fromkeys(check_tag(value) for value in values))
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags, got {len(tags)}")
    return tags


def parse_seed(value: Any) -> int:
    """A seed in [0, DB_INT_MAX]: an int (not a bool), or the text of one in ASCII digits ("3", not "3.0" or "٣")."""
    if isinstance(value, str) and _ASCII_DIGITS.fullmatch(value.strip()):
        seed = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        seed = value
    else:
        raise ValueError(f"must be a non-negative integer, got {value!r}")
    if not 0 <= seed <= DB_INT_MAX:
        raise ValueError(f"must lie in [0, {DB_INT_MAX}], got {seed}")
    return seed


def check_seeds(seeds: Sequence[Any]) -> list[int]:
    """The seeds of one job, in the order given: 1 to MAX_SEEDS distinct integers in [0, DB_INT_MAX]."""
    if not seeds:
        raise ValueError("seeds: must not be empty")
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"seeds: at most {MAX_SEEDS} per job, got {len(seeds)}")
    not_int = [seed for seed in seeds if not isinstance(seed, int) or isinstance(seed, bool)]
    if not_int:
        raise ValueError(f"seeds: {not_int[0]!r} is not an integer")
    bad = [seed for seed in seeds if not 0 <= seed <= DB_INT_MAX]
    if bad:
        raise ValueError(f"seeds: {bad[0]} is out of range; seeds lie in [0, {DB_INT_MAX}]")
    duplicates = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if duplicates:
        raise ValueError(f"seeds: duplicate seed(s) {', '.join(map(str, duplicates))}")
    return list(seeds)


def parse_finite(value: Any) -> float:
    """A finite float: a JSON number, or the text of one in ASCII (`0.0095`, `9.5e-3`); ValueError else."""
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value.strip()):
            raise ValueError(f"must be a finite number, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a finite number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise ValueError("must be a finite number, got an integer too large for a float") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def finite_or_none(value: float | None) -> float | None:
    """`value` as a plain float, or None for None, NaN and ±inf: neither JSON nor the database holds them."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_metric_name(name: str) -> str:
    """`name` if it is a metric name of at most METRIC_NAME_MAX_LENGTH characters, else ValueError."""
    if len(name) > METRIC_NAME_MAX_LENGTH:
        raise ValueError(f"not a metric name: at most {METRIC_NAME_MAX_LENGTH} characters, got {len(name)}")
    if not METRIC_NAME.fullmatch(name):
        raise ValueError("not a metric name (letters, digits and _, not starting with a digit)")
    return name
