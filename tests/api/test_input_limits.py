"""Issue 16, findings 2 and 5 on the real Postgres: every import gets a stored result or a 4xx naming the
row and field, and jobs and imports follow one set of tag and text rules (`ired_core.input_rules`).

Before: a 66,000-row CSV exceeded the driver's 65,535 bind parameters, a seed ≥ 2³¹ overflowed the
INTEGER column, a NUL or a lone surrogate in a tag could not be stored, and JSON nested 100,000 deep
exhausted the parser: each a 500. Imported tags had no length or count limit, a repeated CSV column
silently kept the last cell, and non-ASCII digits were read as seeds.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from ired_core.input_rules import DB_INT_MAX, IMPORT_MAX_ROWS, MAX_TAGS, TAG_MAX_LENGTH
from ired_dcd.models import ImportedResult, Job
from tests.conftest import Lab
from tests.utils.results_factories import unique_tag
from tests.utils.services import job_body

pytestmark = pytest.mark.services


def post_rows(lab: Lab, text: str | bytes, media_type: str = "text/csv") -> Any:
    content = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return lab.http.post("/results/import", content=content, headers={"content-type": media_type})


def counts(lab: Lab) -> tuple[int, int]:
    with lab.session() as session:
        return (
            session.scalar(select(func.count()).select_from(ImportedResult)) or 0,
            session.scalar(select(func.count()).select_from(Job)) or 0,
        )


def refused(lab: Lab, text: str | bytes, media_type: str, message: str) -> None:
    """The document is answered 422 with `message` in the detail, and nothing is stored."""
    before = counts(lab)
    response = post_rows(lab, text, media_type)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"], response.json()["detail"]
    assert counts(lab) == before


def json_document(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=True)  # a lone surrogate travels as the escape \ud800


def test_an_import_of_66000_rows_is_stored_and_a_second_time_skipped(lab: Lab) -> None:
    tag = unique_tag()
    rows = 66_000
    document = "config,seed,val_mse,tags\n" + "".join(f"q203,{s},{0.0095 + s * 1e-9!r},{tag}\n" for s in range(rows))
    response = post_rows(lab, document)
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": rows, "skipped": 0}
    assert post_rows(lab, document).json() == {"inserted": 0, "skipped": rows}
    compared = lab.http.get("/results/compare", params={"configs": "q203", "tag": tag}).json()
    assert compared["rows"][0]["n"] == rows


def test_seeds_beyond_the_database_integer_are_refused_naming_row_and_field(lab: Lab) -> None:
    tag = unique_tag()
    largest = f"config,seed,val_mse,tags\nq201,{DB_INT_MAX},0.0097,{tag}\n"
    assert post_rows(lab, largest).json() == {"inserted": 1, "skipped": 0}
    message = f"row 2, field 'seed': must lie in [0, {DB_INT_MAX}], got {DB_INT_MAX + 1}"
    refused(lab, f"config,seed,val_mse\nq201,0,0.0097\nq201,{DB_INT_MAX + 1},0.0097\n", "text/csv", message)
    document = json_document([{"config": "q201", "seed": 0, "val_mse": 0.01}, {"config": "q201", "seed": 2**63}])
    refused(lab, document, "application/json", "row 2, field 'seed': must lie in")


@pytest.mark.parametrize(
    ("media_type", "document", "message"),
    [
        ("text/csv", "config,seed,val_mse,tags\nq201,0,0.0097,a\x00b\n", "row 1, field 'tags': tag 'a\\x00b'"),
        ("text/csv", "config,seed,val_mse\nq201,0,0.0097\x00\n", "row 1, field 'val_mse': must be a finite number"),
        ("text/csv", "config,seed,val\x00mse\nq201,0,0.0097\n", "row 1, field 'val\\x00mse': not a metric name"),
        ("text/csv", "config,seed,val_mse\nq2\x0001,0,0.0097\n", "row 1, field 'config': contains a NUL"),
        (
            "application/json",
            json_document([{"config": "q201", "seed": 0, "val_mse": 0.0097, "tags": ["a\x00b"]}]),
            "row 1, field 'tags'",
        ),
        (
            "application/json",
            json_document([{"config": "q201", "seed": 0, "val_mse": 0.0097, "tags": ["x\ud800"]}]),
            "row 1, field 'tags'",
        ),
        (
            "application/json",
            json_document([{"config": "q2\ud80001", "seed": 0, "val_mse": 0.0097}]),
            "row 1, field 'config': contains a lone surrogate",
        ),
        (
            "application/json",
            json_document([{"config": "q201", "seed": 0, "val\ud800": 0.0097}]),
            "row 1, field 'val\\ud800': not a metric name",
        ),
    ],
)
def test_nul_and_lone_surrogates_are_refused_naming_row_and_field(
    lab: Lab, media_type: str, document: str, message: str
) -> None:
    refused(lab, document, media_type, message)


def test_json_nested_deeper_than_the_parser_goes_is_refused(lab: Lab) -> None:
    depth = 100_000
    refused(lab, "[" * depth + "]" * depth, "application/json", "row 1, field 'row': nested too deeply")
    deep_config = '[{"config": ' + "[" * depth + "]" * depth + ', "seed": 0, "val_mse": 0.01}]'
    refused(lab, deep_config, "application/json", "row 1, field 'row': nested too deeply")
    refused(lab, '{"a": ' * depth + "1" + "}" * depth, "application/json", "expected a JSON list")


@pytest.mark.parametrize(
    ("media_type", "document", "message"),
    [
        ("text/csv", "config,seed,val_mse,val_mse\nq201,0,0.0097,0.0098\n", "column(s) 'val_mse' appear"),
        ("text/csv", "config,seed,val_mse, seed \nq201,0,0.0097,1\n", "column(s) 'seed' appear more than once"),
        ("text/csv", "config,seed,val_mse\nq201,٣,0.0097\n", "row 1, field 'seed': must be a non-negative integer"),
        ("text/csv", "config,seed,val_mse\nq201,²,0.0097\n", "row 1, field 'seed': must be a non-negative integer"),
        ("text/csv", "config,seed,val_mse\nq201,1,٠٫٠١\n", "row 1, field 'val_mse': must be a finite number"),
        ("text/csv", f"config,seed,val_mse,tags\nq201,0,0.01,{'t' * 65}\n", f"at most {TAG_MAX_LENGTH} characters"),
        ("text/csv", "config,seed,val_mse,tags\nq201,0,0.01,a b\n", "row 1, field 'tags': tag 'a b'"),
        (
            "text/csv",
            "config,seed,val_mse,tags\nq201,0,0.01," + ";".join(f"t{i}" for i in range(MAX_TAGS + 1)) + "\n",
            f"row 1, field 'tags': at most {MAX_TAGS} tags",
        ),
        ("text/csv", "config,seed,val_mse\nq201,0," + "1" * 200_000 + "\n", "row 1, field 'row': not readable"),
        ("application/json", '[{"config": "q201", "seed": 0, "val_mse": 1' + "0" * 400 + "}]", "val_mse"),
        ("application/json", '[{"config": "q201", "seed": 0, "val_mse": 1' + "0" * 5000 + "}]", "invalid JSON"),
        (
            "application/json",
            json_document([{"config": "q201", "seed": 0, **{f"m{i}": 1.0 for i in range(65)}}]),
            "row 1, field 'metrics': at most 64 metric values",
        ),
    ],
)
def test_imports_follow_the_rules_of_jobs(lab: Lab, media_type: str, document: str, message: str) -> None:
    refused(lab, document, media_type, message)


def test_more_rows_than_one_import_takes_are_refused_naming_the_first_row_over(lab: Lab) -> None:
    document = "config,seed,val_mse\n" + "".join(f"q201,{s},0.0097\n" for s in range(IMPORT_MAX_ROWS + 1))
    refused(lab, document, "text/csv", f"row {IMPORT_MAX_ROWS + 1}, field 'document': at most {IMPORT_MAX_ROWS} rows")


@pytest.mark.parametrize(
    "tag",
    ["pilot", "study-2024.v2:a", "é", "a b", "", "t" * TAG_MAX_LENGTH, "t" * (TAG_MAX_LENGTH + 1), "a\x00", "x\ud800"],
)
def test_a_tag_is_accepted_by_jobs_exactly_when_imports_accept_it(lab: Lab, tag: str) -> None:
    body = json.dumps({**job_body(seeds=[0]), "tags": [tag]}, ensure_ascii=True)
    job = lab.http.post("/jobs", content=body, headers={"content-type": "application/json"})
    document = json_document([{"config": "q201", "seed": 0, "val_mse": 0.0097, "tags": [tag, unique_tag()]}])
    row = post_rows(lab, document, "application/json")
    assert job.status_code in (201, 422) and row.status_code in (200, 422), (job.text, row.text)
    assert (job.status_code == 201) == (row.status_code == 200), (job.text, row.text)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"description": "a\x00b"}, "overrides: description: contains a NUL character"),
        ({"description": "a\ud800"}, "overrides: description: contains a lone surrogate"),
        ({"\x00": 1}, "overrides: key '\\x00' contains a NUL character"),
    ],
)
def test_job_text_that_the_database_cannot_store_is_422(lab: Lab, overrides: dict[str, Any], message: str) -> None:
    before = counts(lab)
    body = json.dumps({**job_body(seeds=[0]), "overrides": overrides}, ensure_ascii=True)
    response = lab.http.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(message)
    assert counts(lab) == before
