"""The one module of input rules: seeds, numbers, tags and text that the database can store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ired_core.input_rules import (
    DB_INT_MAX,
    MAX_JSON_DEPTH,
    MAX_SEEDS,
    check_json_text,
    check_seeds,
    check_tags,
    check_text,
    finite_or_none,
    parse_finite,
    parse_seed,
)


@pytest.mark.parametrize(("value", "seed"), [("0", 0), (" 7 ", 7), (3, 3), (str(DB_INT_MAX), DB_INT_MAX)])
def test_seeds_are_ints_or_ascii_digits_within_the_database_integer(value, seed):
    assert parse_seed(value) == seed


@pytest.mark.parametrize("value", ["٣", "²", "3.0", "-1", "", True, 1.0, DB_INT_MAX + 1, -1, None])
def test_other_seeds_are_refused(value):
    with pytest.raises(ValueError):
        parse_seed(value)


@pytest.mark.parametrize(("value", "number"), [("0.0095", 0.0095), ("9.5e-3", 0.0095), (".5", 0.5), (2, 2.0)])
def test_finite_numbers(value, number):
    assert parse_finite(value) == number


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "1_0", "١", "0x10", 10**400, float("nan"), True, None, [1]])
def test_other_numbers_are_refused(value):
    with pytest.raises(ValueError, match="must be a finite number"):
        parse_finite(value)


def test_text_without_nul_or_lone_surrogates():
    assert check_text("ok ✓") == "ok ✓"
    with pytest.raises(ValueError, match="NUL character at position 1"):
        check_text("a\x00")
    with pytest.raises(ValueError, match="lone surrogate"):
        check_text("\udc80")
    with pytest.raises(ValueError, match="at most 3 characters"):
        check_text("abcd", max_length=3)


def test_json_text_names_the_place_and_bounds_the_nesting():
    with pytest.raises(ValueError, match=r"^a\.b\[1\]: contains a NUL"):
        check_json_text({"a": {"b": ["ok", "x\x00"]}})
    nested: object = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        nested = [nested]
    with pytest.raises(ValueError, match="nested deeper"):
        check_json_text(nested)


def test_tags_are_stripped_deduplicated_and_counted():
    assert check_tags([" a ", "b", "a"]) == ("a", "b")
    with pytest.raises(ValueError, match="at most 16 tags"):
        check_tags([f"t{i}" for i in range(17)])


def test_a_jobs_seeds_keep_their_order() -> None:
    """The trainer's ensemble axis follows the order given; the job service sorts them itself."""
    assert check_seeds([5, 0, DB_INT_MAX]) == [5, 0, DB_INT_MAX]


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([], "seeds: must not be empty"),
        (list(range(MAX_SEEDS + 1)), f"seeds: at most {MAX_SEEDS} per job, got {MAX_SEEDS + 1}"),
        ([0, True], "seeds: True is not an integer"),
        ([0, 1.0], "seeds: 1.0 is not an integer"),
        ([0, -1], f"seeds: -1 is out of range; seeds lie in [0, {DB_INT_MAX}]"),
        ([DB_INT_MAX + 1], f"seeds: {DB_INT_MAX + 1} is out of range"),
        ([3, 1, 3, 1], "seeds: duplicate seed(s) 1, 3"),
    ],
)
def test_bad_seeds_are_refused_with_the_rule_they_break(seeds, message) -> None:
    with pytest.raises(ValueError) as refused:
        check_seeds(seeds)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    ("value", "stored"),
    [(0.5, 0.5), (np.float32(0.25), 0.25), (3, 3.0), (None, None), (float("nan"), None), (-math.inf, None)],
)
def test_only_finite_numbers_are_stored_as_numbers(value, stored) -> None:
    result = finite_or_none(value)
    assert result == stored and (result is None or type(result) is float)
