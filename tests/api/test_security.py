"""Security basics: artifacts served by id only, request body limits (413), CORS closed by default.

The body-limit and CORS checks run the app in-process (`create_app` with their own settings) on the
lab's database, so that authentication is on as on a lab server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.main import create_app
from ired_dcd.models import Artifact, ImportedResult
from ired_dcd.settings import Settings, get_settings
from tests.conftest import Lab
from tests.utils.results_factories import unique_tag
from tests.utils.services import job_body

pytestmark = pytest.mark.services

ORIGIN = "https://lab.example.org"
TOO_LARGE = {"detail": "body: larger than 2048 bytes, this server's limit"}  # max_request_bytes=2048


def in_process(lab: Lab, **settings: object) -> TestClient:
    """The app built with `settings`, called in-process (outside `with`: no lifespan, no reconciler)."""
    return TestClient(create_app(Settings(**settings)), headers=lab.auth_headers)


def test_artifacts_are_listed_and_served_by_id_only(lab: Lab) -> None:
    job = lab.http.post("/jobs", json=job_body(seeds=[0])).json()
    root = get_settings().artifacts_path
    (root / f"job-{job['id']}").mkdir(parents=True, exist_ok=True)
    (root / f"job-{job['id']}" / "ckpt.pt").write_bytes(b"weights")
    outside = root.parent / "secret.txt"
    outside.write_text("not for you")
    with lab.session() as session:
        good = Artifact(job_id=job["id"], kind="checkpoint", path=f"job-{job['id']}/ckpt.pt", size_bytes=7)
        escaping = Artifact(job_id=job["id"], kind="checkpoint", path="../secret.txt")
        session.add_all([good, escaping])
        session.commit()

    listed = lab.http.get("/artifacts", params={"job_id": job["id"]}).json()
    assert [(a["id"], a["kind"], a["size_bytes"]) for a in listed] == [
        (good.id, "checkpoint", 7),
        (escaping.id, "checkpoint", None),
    ]
    response = lab.http.get(f"/artifacts/{good.id}")
    assert response.status_code == 200 and response.content == b"weights"
    assert response.headers["content-type"] == "application/octet-stream"
    assert f'filename="job-{job["id"]}-ckpt.pt"' in response.headers["content-disposition"]

    response = lab.http.get(f"/artifacts/{escaping.id}")  # a stored path leaving the folder is never followed
    assert response.status_code == 404 and "not for you" not in response.text
    assert lab.http.get("/artifacts/999999").json() == {"detail": "artifact 999999 not found"}
    for path in ("/artifacts/..%2Fsecret.txt", "/artifacts/../../etc/passwd", "/static/..%2F..%2Fmain.py"):
        response = lab.http.get(path)
        assert response.status_code in (404, 422) and "not for you" not in response.text, path


def test_bodies_over_the_limit_are_413_but_imports_have_a_limit_of_their_own(lab: Lab) -> None:
    http = in_process(lab, max_request_bytes=2048)
    big = {**job_body(), "tags": ["x" * 60] * 40}
    response = http.post("/jobs", json=big)
    assert (response.status_code, response.json()) == (413, TOO_LARGE)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield b'{"config": "q204", "seeds": [0], "tags": ['
        yield b'"xxxxxxxx",' * 400
        yield b'"x"]}'

    response = http.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    response = http.post("/jobs", json={"seeds": [0]})  # a small body passes the limit
    assert response.status_code == 422 and response.json()["detail"] == "config: Field required"
    # imports have a limit of their own (16 MiB): 200 rows (≈ 7 KB) over the 2 KiB limit are all stored
    tag = unique_tag()
    rows = "config,seed,val_mse,tags\n" + "".join(f"q204,{seed},0.0095,{tag}\n" for seed in range(200))
    assert len(rows.encode()) > 2048
    response = http.post("/results/import", content=rows.encode(), headers={"content-type": "text/csv"})
    assert (response.status_code, response.json()) == (200, {"inserted": 200, "skipped": 0})


def test_nul_characters_in_a_url_are_422_naming_the_parameter(lab: Lab) -> None:
    with lab.session() as session:
        imported_before = session.scalar(select(func.count()).select_from(ImportedResult))
    for method, path, where in (
        ("GET", "/jobs?state=queued&owner=al%00ice", "owner"),
        ("GET", "/results/compare?baseline=tag:a%00", "baseline"),
        ("POST", "/results/import?source=%00", "source"),
        ("GET", "/jobs/1%00", "path"),
    ):
        response = lab.http.request(method, path, content=b"config,seed,val_mse\nq204,0,0.01\n")
        assert response.status_code == 422, (path, response.text)
        assert response.json() == {"detail": f"{where}: NUL characters are not accepted"}
    with lab.session() as session:
        assert session.scalar(select(func.count()).select_from(ImportedResult)) == imported_before


def test_cors_is_closed_unless_origins_are_configured(lab: Lab) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    closed = in_process(lab)
    response = closed.options("/jobs", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    response = closed.get("/configs", headers={"Origin": ORIGIN})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers

    opened = in_process(lab, cors_origins=[ORIGIN])
    response = opened.options("/jobs", headers=preflight)
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == ORIGIN
    response = opened.options("/jobs", headers={**preflight, "Origin": "https://evil.example"})
    assert response.status_code == 400 and "access-control-allow-origin" not in response.headers
