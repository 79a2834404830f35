"""The results API over HTTP on the real Postgres: compare in every format, import, and the page for browsers.

Each test seeds its own results under its own tag (`results_tag`) and compares with `tag=` that tag, so
tests sharing the session's database never see each other's rows.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from ired_core.stats import BUILTIN_BASELINES, compare
from ired_dcd.models import ImportedResult
from ired_dcd.services.results import config_curves, load_metric_values
from ired_dcd.states import State
from tests.conftest import Lab
from tests.utils.results_factories import (
    add_job,
    count_imported,
    seed_plan_study,
    seeded_values,
    unique_tag,
)

pytestmark = pytest.mark.services

PLAN = "q201_dcd_baseline,q202_dcd_cdloss,q203_dcd_replay,q204_dcd_full"


def get(lab: Lab, path: str = "/results/compare", **params: Any) -> Any:
    return lab.http.get(path, params={k: v for k, v in params.items() if v is not None})


def compare_json(lab: Lab, **params: Any) -> dict[str, Any]:
    response = get(lab, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def post_rows(lab: Lab, text: str, media_type: str = "text/csv", **params: str) -> Any:
    return lab.http.post("/results/import", content=text.encode(), headers={"content-type": media_type}, params=params)


def import_csv(tag: str, rows: list[tuple[str, int, float]]) -> str:
    """A CSV import document: config, seed, val_mse, tags (one tag each)."""
    return "config,seed,val_mse,tags\n" + "".join(f"{c},{s},{v!r},{tag}\n" for c, s, v in rows)


@pytest.fixture
def results_tag() -> str:
    return unique_tag()


@pytest.fixture
def plan_study(lab: Lab, results_tag: str) -> dict[str, dict[int, float]]:
    """The four plan configs over seeds 0–4 under this test's tag."""
    with lab.session() as session:
        return seed_plan_study(session, results_tag)


# ---------------------------------------------------------------------------------------------
# compare


def test_compare_json_is_the_statistics_of_the_stored_values(lab, results_tag, plan_study):
    body = compare_json(lab, configs="q201,q202,q203,q204", tag=results_tag)
    values = {config: [by_seed[s] for s in sorted(by_seed)] for config, by_seed in plan_study.items()}
    expected = compare(values, BUILTIN_BASELINES["plan"]).to_dict()
    assert body == expected  # the service adds nothing but the rows' values
    assert [row["name"] for row in body["rows"]] == PLAN.split(",")
    assert [row["n"] for row in body["rows"]] == [5, 5, 5, 5]
    assert body["rows"][3]["mean"] == pytest.approx(np.mean(values["q204_dcd_full"]))
    assert body["success"]["level"] == "moderate" and body["success"]["significant"] is True
    assert [step["component"] for step in body["ablation"]] == [
        "CD loss + Langevin",
        "replay buffer",
        "residual filter + energy schedule",
    ]


def test_compare_defaults_to_the_plan_configs_and_the_plan_baseline(lab, results_tag, plan_study):
    body = compare_json(lab, tag=results_tag)
    assert body["baseline"]["name"] == "plan" and body["baseline"]["mean"] == 0.0096761
    assert [row["name"] for row in body["rows"]] == PLAN.split(",")


def test_compare_csv_markdown_and_text(lab, results_tag, plan_study):
    response = get(lab, tag=results_tag, format="csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["config"] for r in rows] == PLAN.split(",")
    assert {r["baseline"] for r in rows} == {"plan"} and rows[3]["significance"] == "***"

    markdown = get(lab, tag=results_tag, format="markdown")
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "| q204_dcd_full | 5 |" in markdown.text and "- level: moderate (Q-204 " in markdown.text

    text = get(lab, tag=results_tag, format="text").text
    assert text.startswith("val_mse vs baseline plan (constant 0.0096761)") and "level: moderate" in text


def test_config_baseline_uses_the_same_tag_and_its_raw_values(lab, results_tag, plan_study):
    body = compare_json(lab, configs="q204,q201", baseline="Q-201", tag=results_tag)
    rows = {row["name"]: row for row in body["rows"]}
    assert body["baseline"]["kind"] == "values" and body["baseline"]["n"] == 5
    assert rows["q201_dcd_baseline"]["is_baseline"] is True and rows["q201_dcd_baseline"]["welch_p"] is None
    assert rows["q204_dcd_full"]["mannwhitney_p"] is not None  # raw values allow the rank test


def test_summary_baseline(lab, results_tag, plan_study):
    body = compare_json(lab, configs="q204", baseline="lab10", tag=results_tag)
    assert body["baseline"] == {**body["baseline"], "kind": "summary", "n": 10, "mean": 0.00969245}
    assert body["rows"][0]["student_p"] is not None and body["rows"][0]["mannwhitney_p"] is None


def test_tag_baseline_pools_every_result_with_that_tag(lab, results_tag):
    reference_tag = f"{results_tag}-ref"
    reference = [0.00970, 0.00972, 0.00968]
    assert (
        post_rows(lab, import_csv(reference_tag, [("q100", s, v) for s, v in enumerate(reference)])).status_code == 200
    )
    with lab.session() as session:
        add_job(session, "q204", seeded_values(0.0094, [0, 1, 2]), tags=[results_tag])
    body = compare_json(lab, configs="q204", baseline=f"tag:{reference_tag}", tag=results_tag)
    assert body["baseline"]["name"] == f"tag:{reference_tag}" and body["baseline"]["values"] == reference
    assert body["rows"][0]["delta_pct"] < 0


def test_a_config_without_results_is_a_row_with_n_0(lab, results_tag):
    body = compare_json(lab, configs="q203", tag=results_tag)
    assert body["rows"][0]["n"] == 0 and body["rows"][0]["notes"] == ["no values"]
    assert body["success"]["level"] == "none"


def test_only_succeeded_runs_count_and_a_repeated_seed_counts_once(lab, results_tag):
    with lab.session() as session:
        add_job(session, "q204", {0: 0.0095, 1: 0.0096}, tags=[results_tag])
        add_job(session, "q204", {1: 0.0094, 2: 0.0093}, tags=[results_tag])  # seed 1 again, later
        add_job(session, "q204", {3: 0.5}, tags=[results_tag], state=State.DIVERGED)
        add_job(session, "q204", {4: 0.5}, tags=[results_tag], state=State.RUNNING)
        add_job(session, "q204", {5: None}, tags=[results_tag])  # succeeded, but val_mse was not finite
    body = compare_json(lab, configs="q204", tag=results_tag)
    row = body["rows"][0]
    assert row["n"] == 3 and row["mean"] == pytest.approx((0.0095 + 0.0094 + 0.0093) / 3)
    assert "q204_dcd_full: seed(s) 1 have more than one result; the most recent of each counts" in body["notes"]
    assert "q204_dcd_full: succeeded run(s) of seed(s) 5 have no finite val_mse; not counted" in body["notes"]


def test_different_settings_of_one_config_are_flagged(lab, results_tag):
    with lab.session() as session:
        add_job(session, "q204", {0: 0.0095}, tags=[results_tag])
        add_job(session, "q204", {1: 0.0094}, tags=[results_tag], overrides={"lr": 2e-4})
    notes = compare_json(lab, configs="q204", tag=results_tag)["notes"]
    assert any("q204_dcd_full: values from 2 different settings (config hashes" in note for note in notes)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"configs": "q201,q999"}, "configs: unknown preset 'q999'; valid: q100_denoise_only"),
        ({"configs": " , "}, "configs: no config given"),
        ({"baseline": "lab11"}, "baseline: 'lab11' is neither a built-in baseline (plan, lab10, ired_published)"),
        ({"baseline": "q203"}, "baseline: config q203_dcd_replay has no succeeded val_mse results"),
        ({"baseline": "tag:nobody-uses-this"}, "baseline: no succeeded val_mse results tagged 'nobody-uses-this'"),
        ({"metric": "val-mse"}, "metric: 'val-mse' is not a metric name"),
        ({"format": "xml"}, "format: Input should be 'json', 'csv', 'markdown' or 'text'"),
    ],
)
def test_bad_compare_parameters_are_422_naming_the_field(lab, results_tag, params, message):
    response = get(lab, tag=results_tag, **params)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_a_browser_gets_the_dashboard(lab, results_tag, plan_study):
    html = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    for path in ("/results/compare", "/"):
        response = lab.http.get(path, params={"tag": results_tag}, headers=html)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert '<tr data-config="q204_dcd_full"' in response.text and "<svg" in response.text
        assert f"/results/compare?tag={results_tag}&amp;format=csv" in response.text  # downloads of this view
    assert get(lab, tag=results_tag, format="json").headers["content-type"].startswith("application/json")
    assert lab.http.get("/static/dashboard.css").status_code == 200
    assert lab.http.get("/static/missing.css").status_code == 404


def test_a_bad_parameter_on_the_page_is_shown_with_the_form(lab):
    response = lab.http.get("/", params={"baseline": "lab11"})
    assert response.status_code == 422 and 'role="alert"' in response.text and "baseline: " in response.text
    assert '<form class="controls"' in response.text


# ---------------------------------------------------------------------------------------------
# service functions the CLI and the dashboard call


def test_load_metric_values_opens_its_own_session(lab, results_tag, plan_study):
    values = load_metric_values(configs=["Q-204", "q201"], metric="val_mse", tag=results_tag)
    assert values == {
        config: [plan_study[config][s] for s in sorted(plan_study[config])]
        for config in ("q201_dcd_baseline", "q204_dcd_full")
    }


def test_config_curves_average_the_seeds_per_step(lab, results_tag):
    with lab.session() as session:
        add_job(session, "q202", {0: 0.0095, 1: 0.0097}, tags=[results_tag])
        add_job(session, "q202", {2: 0.0099}, tags=[results_tag], state=State.FAILED)  # not averaged
        curves = config_curves(session=session, configs=["q202_dcd_cdloss"], tag=results_tag)
    points = curves["val_mse"]["q202_dcd_cdloss"]
    assert [p.step for p in points] == [100, 200, 300, 400] and {p.n for p in points} == {2}
    assert points[-1].mean == pytest.approx(0.0096) and (points[-1].low, points[-1].high) == (0.0095, 0.0097)
    assert set(curves) == {"val_mse", "loss", "energy_pos", "energy_neg", "energy_gap", "grad_energy_norm"}


# ---------------------------------------------------------------------------------------------
# import


def test_import_csv_then_compare_round_trip(lab, results_tag):
    values = {0: 0.00951, 1: 0.00949, 2: 0.00955}
    document = import_csv(results_tag, [("Q-204", s, v) for s, v in values.items()])
    response = post_rows(lab, document, source="slurm-2024.csv")
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": 3, "skipped": 0}
    body = compare_json(lab, configs="q204", tag=results_tag)
    assert body["rows"][0]["n"] == 3 and body["rows"][0]["mean"] == pytest.approx(np.mean(list(values.values())))
    with lab.session() as session:
        stored = session.scalars(select(ImportedResult).where(ImportedResult.source == "slurm-2024.csv")).all()
    assert {(r.config, r.seed, tuple(r.tags)) for r in stored} >= {("q204_dcd_full", s, (results_tag,)) for s in values}


def test_import_json_rows_with_several_metrics(lab, results_tag):
    rows = [
        {"config": "q203", "seed": 0, "val_mse": 0.0096, "val_mse_ood": 0.23, "tags": [results_tag, "extra"]},
        {"config": "q203_dcd_replay", "seed": 1, "val_mse": 0.0097, "tags": [results_tag]},
    ]
    response = post_rows(lab, json.dumps(rows), "application/json")
    assert response.json() == {"inserted": 2, "skipped": 0}
    ood = compare_json(lab, configs="q203", metric="val_mse_ood", tag=results_tag)
    assert ood["rows"][0]["n"] == 1 and ood["rows"][0]["mean"] == 0.23  # only the row that has the metric


def test_imported_rows_and_runs_of_one_config_count_together(lab, results_tag):
    with lab.session() as session:
        add_job(session, "q204", {0: 0.0095, 1: 0.0096}, tags=[results_tag])
    post_rows(lab, import_csv(results_tag, [("q204", 2, 0.0094)]))
    assert compare_json(lab, configs="q204", tag=results_tag)["rows"][0]["n"] == 3


def test_the_same_rows_twice_are_stored_once(lab, results_tag):
    document = import_csv(results_tag, [("q201", 0, 0.0097), ("q201", 1, 0.00971)])
    with lab.session() as session:
        before = count_imported(session)
    assert post_rows(lab, document).json() == {"inserted": 2, "skipped": 0}
    assert post_rows(lab, document).json() == {"inserted": 0, "skipped": 2}
    same_run_tags_reordered = [{"config": "q201", "seed": 0, "val_mse": 0.0097, "tags": [results_tag]}]
    assert post_rows(lab, json.dumps(same_run_tags_reordered), "application/json").json() == {
        "inserted": 0,
        "skipped": 1,
    }
    with lab.session() as session:
        assert count_imported(session) == before + 2
    assert compare_json(lab, configs="q201", tag=results_tag)["rows"][0]["n"] == 2


BAD_DOCUMENTS = [
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095\nq999,1,0.0095\n", "row 2, field 'config': unknown preset 'q999'"),
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095\nq204,-1,0.0095\n", "row 2, field 'seed': must be a non-negative"),
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095\nq204,1.5,0.0095\n", "row 2, field 'seed'"),
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095\nq204,1,abc\n", "row 2, field 'val_mse': must be a finite number"),
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095\nq204,1,nan\n", "row 2, field 'val_mse': must be a finite number"),
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095\nq204,0,0.0096\n", "row 2, field 'seed': duplicates row 1"),
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095\nq204,1,\n", "row 2, field 'metrics': no metric value"),
    ("text/csv", "config,seed,val mse\nq204,0,0.0095\n", "row 1, field 'val mse': not a metric name"),
    ("text/csv", "config,seed,val_mse\nq204,0,0.0095,extra\n", "row 1, field 'row': more cells than header columns"),
    ("text/csv", "", "row 0, field 'document': no rows"),
    ("application/json", '[{"config": "q204", "seed": 0, "val_mse": 0.0095}, 7]', "row 2, field 'row': expected an"),
    ("application/json", '[{"config": "q204", "seed": "0", "val_mse": true}]', "row 1, field 'val_mse'"),
    ("application/json", '[{"config": "q204", "seed": 0, "val_mse": 0.01, "tags": [1]}]', "row 1, field 'tags'"),
    ("application/json", '{"config": "q204"}', "row 0, field 'document': expected a JSON list"),
    ("application/json", "[{", "row 0, field 'document': invalid JSON"),
]


@pytest.mark.parametrize(("media_type", "document", "message"), BAD_DOCUMENTS)
def test_bad_rows_are_422_naming_row_and_field_and_store_nothing(lab, media_type, document, message):
    with lab.session() as session:
        before = count_imported(session)
    response = post_rows(lab, document, media_type)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    with lab.session() as session:
        assert count_imported(session) == before


def test_every_bad_field_of_every_row_is_named(lab):
    document = "config,seed,val_mse\nq999,0,0.0095\nq204,x,y\n"
    detail = post_rows(lab, document).json()["detail"]
    assert "row 1, field 'config'" in detail and "row 2, field 'seed'" in detail and "row 2, field 'val_mse'" in detail


def test_a_stored_run_with_other_values_is_409_and_nothing_is_stored(lab, results_tag):
    post_rows(lab, import_csv(results_tag, [("q202", 0, 0.0096)]))
    with lab.session() as session:
        before = count_imported(session)
    response = post_rows(lab, import_csv(results_tag, [("q202", 1, 0.0097), ("q202", 0, 0.0099)]))
    assert response.status_code == 409
    assert response.json()["detail"].startswith("row 2, field 'val_mse': q202_dcd_cdloss seed 0")
    with lab.session() as session:
        assert count_imported(session) == before  # row 1 was new, and is not stored either


def test_import_needs_csv_or_json(lab):
    response = post_rows(lab, "config,seed\n", "text/plain")
    assert response.status_code == 415
    assert response.json()["detail"].startswith("content-type: text/plain is not accepted")
