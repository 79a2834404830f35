"""ired_core.results_dir: result directories from `ired-dcd train` and CSV/JSON import rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ired_core.results_dir import ResultRow, ResultRowsError, parse_result_rows, read_results


def write_result(
    root: Path,
    config: str,
    seed: int,
    status: str = "succeeded",
    overrides: dict | None = None,
    step: int = 100,
    divergence: dict | None = None,
    **metrics: float,
) -> Path:
    path = root / config / f"seed_{seed}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if status == "succeeded":
        metrics = metrics or {"val_mse": 0.0095 + seed * 1e-6, "val_mse_ood": 0.2 + seed * 1e-3}
    result = {"config": config, "seed": seed, "status": status, "step": step, "metrics": metrics, "tags": []}
    if divergence is not None:
        result["divergence"] = divergence
    path.write_text(json.dumps(result))
    if overrides is not None:
        path.with_name("config.json").write_text(json.dumps({"preset": config, "overrides": overrides}))
    return path


# --- result directories --------------------------------------------------------------------------


def test_succeeded_runs_are_grouped_by_config_in_seed_order(tmp_path):
    for seed in (10, 2, 0):  # seed_10 sorts before seed_2 as text
        write_result(tmp_path, "q204_dcd_full", seed)
    write_result(tmp_path, "q201_dcd_baseline", 1, status="cancelled")
    write_result(tmp_path, "q201_dcd_baseline", 0)
    found = read_results(tmp_path)
    assert found.values == {
        "q201_dcd_baseline": [0.0095],
        "q204_dcd_full": [0.0095, 0.0095 + 2e-6, 0.0095 + 10e-6],
    }
    assert found.seeds == {"q201_dcd_baseline": [0], "q204_dcd_full": [0, 2, 10]}
    assert read_results(tmp_path, metric="val_mse_ood").values["q204_dcd_full"] == pytest.approx([0.2, 0.202, 0.21])


def test_diverged_and_failed_runs_are_counted_with_their_steps_and_reasons(tmp_path):
    write_result(tmp_path, "q204_dcd_full", 0)
    blow_up = {"step": 250, "rule": "denoiser blow-up", "diagnostic": "loss_denoise", "value": 5e6, "threshold": 10}
    write_result(tmp_path, "q204_dcd_full", 1, status="diverged", step=250, divergence=blow_up)
    write_result(tmp_path, "q204_dcd_full", 2, status="diverged", step=500, divergence={**blow_up, "step": 500})
    failures = read_results(tmp_path).failures["q204_dcd_full"]
    assert (failures.runs, failures.diverged, failures.failed) == (3, 2, 0)
    assert failures.describe() == "2 diverged of 3 runs at steps 250–500 (denoiser blow-up: loss_denoise)"


def test_a_directory_where_every_run_diverged_still_reads(tmp_path):
    write_result(tmp_path, "q202_dcd_cdloss", 0, status="diverged")
    found = read_results(tmp_path)
    assert found.values == {} and found.groups == ["q202_dcd_cdloss"]


def test_held_out_standard_errors_come_with_the_values(tmp_path):
    write_result(tmp_path, "q100_denoise_only", 0, val_mse=0.0097, val_mse_se=2e-5)
    write_result(tmp_path, "q100_denoise_only", 1, val_mse=0.0098, val_mse_se=3e-5)
    assert read_results(tmp_path).held_out_se == {"q100_denoise_only": [2e-5, 3e-5]}


def test_settings_are_labelled_by_the_overrides_that_tell_them_apart(tmp_path):
    base = {"batch_size": 128, "lr": 0.001}
    write_result(tmp_path / "a", "q202_dcd_cdloss", 0, overrides={**base, "energy_reg_weight": 0.01})
    write_result(tmp_path / "b", "q202_dcd_cdloss", 0, overrides={**base, "energy_reg_weight": 0.001})
    write_result(tmp_path / "c", "q201_dcd_baseline", 0, overrides=base)
    found = read_results(tmp_path, group_by="setting")
    assert sorted(found.values) == [
        "q201_dcd_baseline",
        "q202_dcd_cdloss · energy_reg_weight=0.001",
        "q202_dcd_cdloss · energy_reg_weight=0.01",
    ]
    with pytest.raises(ValueError, match="q202_dcd_cdloss seed 0: results in both"):
        read_results(tmp_path)  # by preset, the two settings would count seed 0 twice


def test_fields_that_only_change_how_a_run_is_observed_do_not_make_a_setting(tmp_path):
    write_result(tmp_path / "a", "q204_dcd_full", 0, overrides={"lr": 0.001, "eval_batch_size": 1024})
    write_result(tmp_path / "b", "q204_dcd_full", 1, overrides={"lr": 0.001, "log_every": 25})
    write_result(tmp_path / "c", "q204_dcd_full", 2, overrides={"lr": 0.01})
    found = read_results(tmp_path, group_by="setting")
    assert {label: len(values) for label, values in found.values.items()} == {
        "q204_dcd_full · lr=0.001": 2,
        "q204_dcd_full · lr=0.01": 1,
    }


def test_result_directory_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        read_results(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no result\.json found"):
        read_results(tmp_path)


def test_a_succeeded_run_without_the_metric_is_an_error(tmp_path):
    path = write_result(tmp_path, "q204_dcd_full", 0, val_mse_ood=0.2)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*metrics\.val_mse"):
        read_results(tmp_path)


def test_a_non_finite_metric_is_an_error(tmp_path):
    write_result(tmp_path, "q204_dcd_full", 0, val_mse=float("nan"))
    with pytest.raises(ValueError, match=r"no finite metrics\.val_mse"):
        read_results(tmp_path)


def test_the_same_run_twice_is_an_error(tmp_path):
    write_result(tmp_path / "a", "q204_dcd_full", 0)
    write_result(tmp_path / "b", "q204_dcd_full", 0)
    with pytest.raises(ValueError, match="q204_dcd_full seed 0: results in both"):
        read_results(tmp_path)


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
        read_results(tmp_path)
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
