"""ired_core.results_dir: result directories from `ired-dcd train` and CSV/JSON import rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ired_core.results_dir import ResultRow, ResultRowsError, load_results, parse_result_rows


def write_result(root: Path, config: str, seed: int, status: str = "succeeded", **metrics: float) -> Path:
    path = root / config / f"seed_{seed}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = metrics or {"val_mse": 0.0095 + seed * 1e-6, "val_mse_ood": 0.2 + seed * 1e-3}
    path.write_text(
        json.dumps({"config": config, "seed": seed, "status": status, "metrics": metrics, "tags": []})
    )
    return path


# --- result directories --------------------------------------------------------------------------


def test_load_results_groups_succeeded_runs_by_config_in_seed_order(tmp_path):
    for seed in (10, 2, 0):  # seed_10 sorts before seed_2 as text
        write_result(tmp_path, "q204_dcd_full", seed)
    write_result(tmp_path, "q204_dcd_full", 3, status="diverged")
    write_result(tmp_path, "q201_dcd_baseline", 1, status="cancelled")
    write_result(tmp_path, "q201_dcd_baseline", 0)
    values = load_results(tmp_path)
    assert values == {
        "q201_dcd_baseline": [0.0095],
        "q204_dcd_full": [0.0095, 0.0095 + 2e-6, 0.0095 + 10e-6],
    }
    assert load_results(tmp_path, metric="val_mse_ood")["q204_dcd_full"] == pytest.approx([0.2, 0.202, 0.21])


def test_load_results_finds_results_at_any_depth(tmp_path):
    write_result(tmp_path / "study_a" / "out", "q202_dcd_cdloss", 0)
    assert list(load_results(tmp_path)) == ["q202_dcd_cdloss"]


def test_load_results_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_results(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no result\.json found"):
        load_results(tmp_path)
    write_result(tmp_path, "q204_dcd_full", 0, status="diverged")
    with pytest.raises(ValueError, match=r"1 result\.json found, none with status 'succeeded'"):
        load_results(tmp_path)


def test_a_succeeded_run_without_the_metric_is_an_error(tmp_path):
    path = write_result(tmp_path, "q204_dcd_full", 0, val_mse_ood=0.2)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*metrics\.val_mse"):
        load_results(tmp_path)


def test_a_non_finite_metric_is_an_error(tmp_path):
    write_result(tmp_path, "q204_dcd_full", 0, val_mse=float("nan"))
    with pytest.raises(ValueError, match=r"no finite metrics\.val_mse"):
        load_results(tmp_path)


def test_the_same_run_twice_is_an_error(tmp_path):
    write_result(tmp_path / "a", "q204_dcd_full", 0)
    write_result(tmp_path / "b", "q204_dcd_full", 0)
    with pytest.raises(ValueError, match="config q204_dcd_full seed 0: results in both"):
        load_results(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read result"),
        ("[1, 2]", "expected a JSON object"),
        ('{"config": "q204_dcd_full", "seed": "0", "status": "succeeded"}', "'seed' must be"),
    ],
)
def test_malformed_result_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "q204_dcd_full" / "seed_0" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_results(tmp_path)
    assert str(path) in str(error.value)


# --- import rows -------------------------------------------------------------------------------------


def test_csv_rows_are_parsed_with_aliases_tags_and_empty_cells():
    text = "config,seed,val_mse,val_mse_ood,tags\nq204,0,0.0095,0.21,lab-b;slurm\nQ-201, 3 ,9.7e-3,,\n"
    assert parse_result_rows(text, "csv") == [
        ResultRow("q204_dcd_full", 0, {"val_mse": 0.0095, "val_mse_ood": 0.21}, ("lab-b", "slurm")),
        ResultRow("q201_dcd_baseline", 3, {"val_mse": 0.0097}, ()),
    ]


def test_json_rows_are_parsed():
    text = json.dumps(
        [
            {"config": "q202_dcd_cdloss", "seed": 1, "val_mse": 0.0096, "tags": ["x"]},
            {"config": "q203", "seed": 2, "val_mse": 0.0096, "val_mse_ood": None},
        ]
    )
    assert parse_result_rows(text, "json") == [
        ResultRow("q202_dcd_cdloss", 1, {"val_mse": 0.0096}, ("x",)),
        ResultRow("q203_dcd_replay", 2, {"val_mse": 0.0096}, ()),
    ]


def errors_of(text: str, fmt: str) -> list[tuple[int, str]]:
    with pytest.raises(ResultRowsError) as caught:
        parse_result_rows(text, fmt)
    assert isinstance(caught.value, ValueError)
    return [(e.row, e.field) for e in caught.value.errors]


def test_csv_errors_name_every_row_and_field():
    text = (
        "config,seed,val_mse,tags\n"
        "q204,0,0.0095,\n"  # fine, but nothing is returned when any row is bad
        "q999,-1,nan,\n"  # three bad fields
        "q204,1.0,inf,\n"  # seed not an integer, metric infinite
        "q204,2,,\n"  # no metric at all
        "q204,0,0.0096,\n"  # same config, seed and tags as row 1
    )
    assert errors_of(text, "csv") == [
        (2, "config"),
        (2, "seed"),
        (2, "val_mse"),
        (3, "seed"),
        (3, "val_mse"),
        (4, "metrics"),
        (5, "seed"),
    ]


def test_json_errors_name_every_row_and_field():
    text = json.dumps(
        [
            {"config": "q204", "seed": True, "val_mse": 0.0095},
            "not an object",
            {"config": 204, "seed": 0, "val_mse": "x", "tags": [""]},
            {"config": "q204", "seed": -2, "val mse": 0.0095},
        ]
    )
    assert errors_of(text, "json") == [
        (1, "seed"),
        (2, "row"),
        (3, "config"),
        (3, "tags"),
        (3, "val_mse"),
        (4, "seed"),
        (4, "val mse"),
    ]


def test_the_same_seed_under_different_tags_is_two_runs():
    text = "config,seed,val_mse,tags\nq204,0,0.0095,a\nq204,0,0.0096,b\n"
    assert [row.tags for row in parse_result_rows(text, "csv")] == [("a",), ("b",)]


@pytest.mark.parametrize(
    ("text", "fmt", "error"),
    [
        ("", "csv", (0, "document")),
        ("config,seed,val_mse\n", "csv", (0, "document")),
        ("[]", "json", (0, "document")),
        ("{", "json", (0, "document")),
        ('{"rows": []}', "json", (0, "document")),
        ("config,,val_mse\nq204,0,1\n", "csv", (0, "header")),
        ("config,seed\nq204,0,1,2\n", "csv", (1, "row")),
    ],
)
def test_document_level_errors(text, fmt, error):
    assert errors_of(text, fmt) == [error]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="csv, json"):
        parse_result_rows("[]", "xml")
