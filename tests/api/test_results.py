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

from ired_core.stats import Baseline
from ired_core.verdict import BUILTIN_BASELINES, MEASURED_HERE, compare
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
    body = compare_json(lab, configs="q201,q202,q203,q204", tag=results_tag, baseline="plan")
    values = {config: [by_seed[s] for s in sorted(by_seed)] for config, by_seed in plan_study.items()}
    seeds = {config: sorted(by_seed) for config, by_seed in plan_study.items()}
    expected = compare(values, BUILTIN_BASELINES["plan"], seeds=seeds).to_dict()
    assert body == expected  # the service adds nothing but the rows' values and their seeds
    assert [row["name"] for row in body["rows"]] == PLAN.split(",")
    assert [row["n"] for row in body["rows"]] == [5, 5, 5, 5]
    assert body["rows"][3]["mean"] == pytest.approx(np.mean(values["q204_dcd_full"]))
    assert body["success"]["level"] == "moderate" and body["success"]["significant"] is True
    assert [step["component"] for step in body["ablation"]] == [
        "CD loss + Langevin",
        "replay buffer",
        "residual filter + energy schedule",
    ]


def test_compare_defaults_to_the_plan_configs_and_without_q100_to_the_plan_baseline(lab, results_tag, plan_study):
    body = compare_json(lab, tag=results_tag)
    assert body["baseline"]["name"] == "plan" and body["baseline"]["mean"] == 0.0096761
    assert body["baseline"]["origin"] == "measured elsewhere, on another held-out set"
    assert [row["name"] for row in body["rows"]] == PLAN.split(",")
    assert "no q100_denoise_only results in this selection: the baseline is the plan's number" in body["notes"]


def test_the_default_baseline_is_the_q100_runs_of_the_same_tag(lab, results_tag, plan_study):
    with lab.session() as session:
        in_house = seeded_values(0.00970, range(5), seed=9)
        add_job(session, "q100", in_house, tags=[results_tag])
        add_job(session, "q100", seeded_values(0.02, range(5)), tags=[unique_tag()])  # another study's q100
    body = compare_json(lab, tag=results_tag)
    baseline = body["baseline"]
    assert (baseline["name"], baseline["kind"], baseline["seeds"]) == ("q100_denoise_only", "values", [0, 1, 2, 3, 4])
    assert baseline["values"] == pytest.approx([in_house[s] for s in range(5)])
    assert body["success"]["baseline"].startswith("q100_denoise_only (values: ")
    q204 = next(row for row in body["rows"] if row["name"] == "q204_dcd_full")
    assert q204["paired_n"] == 5 and q204["paired_p"] is not None and q204["paired_holm_p"] is not None


def test_diverged_runs_are_counted_and_their_config_fails(lab, results_tag, plan_study):
    blow_up = {"step": 250, "rule": "denoiser blow-up", "diagnostic": "loss_denoise", "value": 5e6, "threshold": 10}
    with lab.session() as session:
        add_job(session, "q202s", {0: None, 1: None}, tags=[results_tag], state=State.DIVERGED, divergence=blow_up)
        add_job(session, "q202s", seeded_values(0.0094, [2, 3, 4]), tags=[results_tag])
    body = compare_json(lab, tag=results_tag)
    row = next(row for row in body["rows"] if row["name"] == "q202s_cd_stable")
    assert (row["n"], row["runs_failed"]) == (3, 2)
    assert row["failure"] == "2 diverged of 5 runs at step 250 (denoiser blow-up: loss_denoise)"
    stabilised = body["stabilised_success"]
    assert stabilised["failed_configs"] == ["q202s_cd_stable"] and stabilised["level"] == "none"
    text = get(lab, tag=results_tag, format="text").text
    assert "failed, counted as no improvement: q202s_cd_stable" in text and "2 of 5" in text


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
    assert text.startswith("val_mse vs baseline plan (constant 0.0096761") and "level: moderate" in text


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


def test_grouped_by_setting_each_setting_is_a_row_labelled_by_its_overrides(lab, results_tag):
    with lab.session() as session:
        for weight, mean in ((0.1, 0.0097), (1, 0.0094)):
            overrides = {"energy_reg_weight": weight, "batch_size": 64}  # batch_size is shared: not in labels
            add_job(session, "q202", seeded_values(mean, [0, 1, 2]), tags=[results_tag], overrides=overrides)
    by_preset = compare_json(lab, configs="q202", tag=results_tag, baseline="plan")
    assert [row["name"] for row in by_preset["rows"]] == ["q202_dcd_cdloss"]
    # by preset, the two settings' seeds collide: each seed counts once, and the note says so
    assert (
        "q202_dcd_cdloss: seed(s) 0, 1, 2 have more than one result; the most recent of each counts"
        in (by_preset["notes"])
    )

    low, high = "q202_dcd_cdloss · energy_reg_weight=0.1", "q202_dcd_cdloss · energy_reg_weight=1"
    by_setting = compare_json(lab, configs="q202", tag=results_tag, group_by="setting", baseline="plan")
    assert [(row["name"], row["n"]) for row in by_setting["rows"]] == [(low, 3), (high, 3)]
    assert not any("different settings" in note for note in by_setting["notes"])
    against_low = compare_json(
        lab, configs="q202", tag=results_tag, group_by="setting", baseline="Q-202 · energy_reg_weight=0.1"
    )
    assert against_low["baseline"]["name"] == low
    assert against_low["rows"][1]["delta_pct"] == pytest.approx(100 * (0.0094 - 0.0097) / 0.0097, abs=1.5)
    for fmt in ("csv", "markdown"):
        text = get(lab, configs="q202", tag=results_tag, group_by="setting", format=fmt).text
        assert low in text and high in text


def test_non_preset_imports_need_the_opt_in_and_round_trip_through_compare(lab, results_tag):
    phase1 = {"baseline": 0.0097, "random mining": 0.0096, "adversarial mining": 0.0095}
    rows = [
        (name, seed, value) for name, mean in phase1.items() for seed, value in seeded_values(mean, range(3)).items()
    ]
    document = import_csv(results_tag, rows)
    with lab.session() as session:
        before = count_imported(session)
    refused = post_rows(lab, document)
    assert refused.status_code == 422
    assert "row 1, field 'config': unknown preset 'baseline'" in refused.json()["detail"]
    assert "needs custom_configs=true" in refused.json()["detail"]
    typo = post_rows(lab, import_csv(results_tag, [("q205", 0, 0.0095)]), custom_configs="true")
    assert typo.status_code == 422 and "row 1, field 'config': 'q205' looks like a preset id" in typo.json()["detail"]
    with lab.session() as session:
        assert count_imported(session) == before

    assert post_rows(lab, document, custom_configs="true").json() == {"inserted": 9, "skipped": 0}
    body = compare_json(lab, configs="baseline,random mining,adversarial mining", baseline="baseline", tag=results_tag)
    values = {name: [v for n, _, v in rows if n == name] for name in phase1}
    expected = compare(
        {name: values[name] for name in ("baseline", "random mining", "adversarial mining")},
        Baseline.from_values("baseline", values["baseline"], [0, 1, 2], origin=MEASURED_HERE),
        seeds={name: [0, 1, 2] for name in phase1},
    ).to_dict()
    assert body["rows"] == expected["rows"]
    assert "random mining: imported results of a config that is not a preset here" in body["notes"]
    unknown = get(lab, configs="baseline,random minnig", tag=results_tag)
    assert unknown.status_code == 422
    assert unknown.json()["detail"].startswith("configs: unknown preset 'random minnig'")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "seed"}, "group_by: 'seed' is not one of preset, setting"),
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
