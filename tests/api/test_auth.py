"""Users and API tokens on the lab server (real Postgres and Redis): who may do what, and what is stored.

`lab.http` is signed in as `local`; each test adds the users it needs through `ired-dcd users`.
"""

from __future__ import annotations

import hashlib
import re
import signal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from ired_dcd.cli import main as ired_dcd
from ired_dcd.models import User
from ired_dcd.settings import get_settings
from tests.conftest import Lab
from tests.utils.services import IRED_DCD, ServiceProcess, free_port, job_body, wait_for

pytestmark = pytest.mark.services


def add_user(name: str, capsys: pytest.CaptureFixture[str], *, admin: bool = False) -> str:
    """`ired-dcd users add NAME`; returns the token it printed (stdout holds the token alone)."""
    assert ired_dcd(["users", "add", name, *(["--admin"] if admin else [])]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"ired_[\w-]{43}\n", out), out
    return out.strip()


def as_user(lab: Lab, token: str) -> httpx.Client:
    return httpx.Client(base_url=lab.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def submit(http: httpx.Client, **changes: Any) -> dict[str, Any]:
    response = http.post("/jobs", json=job_body(**changes))
    assert response.status_code == 201, response.text
    return response.json()


def unique(name: str) -> str:
    return f"{name}-{free_port()}"


def test_every_endpoint_but_health_and_assets_needs_a_token(lab: Lab) -> None:
    anonymous = httpx.Client(base_url=lab.base_url, timeout=30)
    schema = anonymous.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        concrete = re.sub(r"\{\w+\}", "1", path)
        for method in operations:
            response = anonymous.request(method.upper(), concrete)
            expected = 200 if path == "/health" else 401
            assert response.status_code == expected, (method, path, response.text)
            if expected == 401:
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json() == {
                    "detail": "authorization: a token is required (header `Authorization: Bearer <token>`)"
                }
    assert anonymous.get("/static/dashboard.css").status_code == 200
    for token in ("ired_not-a-token", "x"):
        response = anonymous.get("/jobs", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
    response = anonymous.get("/jobs", headers={"Authorization": f"Basic {lab.token}"})
    assert response.status_code == 401  # only the Bearer scheme
    assert lab.http.get("/jobs").status_code == 200


def test_token_is_stored_only_as_its_hash(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    name = unique("hashed")
    token = add_user(name, capsys)
    with lab.session() as session:
        row = session.execute(text("SELECT * FROM users WHERE name = :name"), {"name": name}).mappings().one()
        dump = session.execute(text("SELECT string_agg(users::text, ' ') FROM users")).scalar_one()
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in dump and token[5:] not in dump  # not in any column of any user
    assert as_user(lab, token).get("/jobs").status_code == 200


def test_revoked_token_is_401_and_a_new_one_works(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    name = unique("revoked")
    token = add_user(name, capsys)
    client = as_user(lab, token)
    assert client.get("/jobs").status_code == 200
    assert ired_dcd(["users", "revoke", name]) == 0
    assert f"the token of {name} is revoked" in capsys.readouterr().out
    response = client.get("/jobs")
    assert (response.status_code, response.json()) == (401, {"detail": "authorization: unknown or revoked token"})

    assert ired_dcd(["users", "token", name]) == 0
    fresh = capsys.readouterr().out.strip()
    assert as_user(lab, fresh).get("/jobs").status_code == 200
    assert client.get("/jobs").status_code == 401  # the revoked token stays revoked

    assert ired_dcd(["users", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(name))
    assert re.match(rf"{name}\s+-\s+issued \d{{4}}-", line), line
    assert ired_dcd(["users", "revoke", "nobody-at-all"]) == 1
    assert capsys.readouterr().err == "error: user 'nobody-at-all' not found\n"


def test_everyone_reads_everything_only_owner_or_admin_changes(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    alice = as_user(lab, add_user(unique("alice"), capsys))
    bob = as_user(lab, add_user(unique("bob"), capsys))
    admin = as_user(lab, add_user(unique("admin"), capsys, admin=True))
    job = submit(alice)
    assert job["owner"].startswith("alice-")

    assert bob.get(f"/jobs/{job['id']}").json()["id"] == job["id"]  # a shared lab: all jobs are visible
    assert job["id"] in [j["id"] for j in bob.get("/jobs", params={"owner": job["owner"]}).json()["data"]]
    assert bob.get(f"/runs/{job['runs'][0]['id']}").status_code == 200
    for method, path, action in (
        ("POST", f"/jobs/{job['id']}/cancel", "cancel"),
        ("POST", f"/jobs/{job['id']}/retry", "retry"),
        ("DELETE", f"/jobs/{job['id']}", "delete"),
    ):
        response = bob.request(method, path)
        assert response.status_code == 403, response.text
        assert response.json() == {
            "detail": f"job {job['id']} belongs to {job['owner']}; only its owner or an admin may {action} it"
        }
    assert lab.job(job["id"])["state"] == "queued"  # nothing changed

    response = admin.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert alice.post(f"/jobs/{job['id']}/retry").status_code == 409  # her own job: allowed, but nothing to retry


def test_owner_deletes_an_ended_job_with_its_checkpoints(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    owner = as_user(lab, add_user(unique("deleter"), capsys))
    job = submit(owner)
    response = owner.delete(f"/jobs/{job['id']}")
    assert response.status_code == 409 and response.json()["detail"].endswith("is still queued; cancel it first")
    assert owner.post(f"/jobs/{job['id']}/cancel").status_code == 200
    checkpoint = lab.http.get(f"/runs/{job['runs'][0]['id']}").json()  # the checkpoint path is internal
    with lab.session() as session:
        path = session.execute(
            text("SELECT checkpoint_path FROM runs WHERE id = :id"), {"id": checkpoint["id"]}
        ).scalar_one()
    file = get_settings().artifacts_path / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"checkpoint")
    task_file = file.parent / "slurm-1a2b3c4d" / "q201_dcd_baseline" / "seed_0" / "metrics.jsonl"
    task_file.parent.mkdir(parents=True)
    task_file.write_text("{}\n")
    assert owner.delete(f"/jobs/{job['id']}").status_code == 204
    assert lab.http.get(f"/jobs/{job['id']}").status_code == 404
    assert not file.exists() and not task_file.exists()
    assert not file.parent.exists()  # the job's whole folder, SLURM task files included


def test_cli_sends_the_token_from_option_or_environment(
    lab: Lab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = add_user(unique("cli"), capsys)
    assert ired_dcd(["status", "--server", lab.base_url]) == 1
    assert capsys.readouterr().err == (
        "error: authorization: a token is required (header `Authorization: Bearer <token>`) (HTTP 401)\n"
    )
    assert ired_dcd(["status", "--server", lab.base_url, "--token", token]) == 0
    assert "job(s)" in capsys.readouterr().out
    monkeypatch.setenv("IRED_TOKEN", token)
    assert ired_dcd(["status", "--server", lab.base_url]) == 0


def test_serve_keeps_tokens_and_passwords_out_of_its_log(lab: Lab) -> None:
    """`ired-dcd serve` in lab mode: says that it asks for tokens; neither tokens nor the password reach its log."""
    port = free_port()
    url = lab.env["DATABASE_URL"].replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    env = {**lab.env, "DATABASE_URL": url, "IRED_PORT": str(port)}
    server = ServiceProcess([*IRED_DCD, "serve"], env=env, log_path=lab.tmp / "serve-auth.log")
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def up() -> bool:
        try:
            return http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, what="ired-dcd serve")
    assert http.get("/jobs", headers=lab.auth_headers).status_code == 200
    assert http.get("/jobs", headers={"Authorization": "Bearer ired_wrong-token"}).status_code == 401
    server.stop(signal.SIGTERM)
    log = server.log()
    assert "authentication: every request but /health needs `Authorization: Bearer <token>`" in log
    assert "postgres:***@" in log and "GET /jobs HTTP/1.1" in log  # the access log is on
    assert "s3cret-pw" not in log and lab.token not in log and "ired_wrong-token" not in log


def test_serve_refuses_other_machines_without_authentication(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IRED_AUTH_REQUIRED", "false")
    get_settings.cache_clear()
    try:
        assert ired_dcd(["serve", "--host", "0.0.0.0"]) == 1
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert capsys.readouterr().err.startswith("error: --host 0.0.0.0: serving other machines needs authentication")


def test_user_names_are_checked(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert ired_dcd(["users", "add", "has space"]) == 1
    assert "is not a user name" in capsys.readouterr().err
    with lab.session() as session:
        existing = session.scalars(select(User.name).limit(1)).one()
    assert ired_dcd(["users", "add", existing]) == 1
    assert f"user {existing!r} already exists" in capsys.readouterr().err


def test_a_browser_signs_in_with_a_token_and_the_cookie_only_reads(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    browser = httpx.Client(base_url=lab.base_url, timeout=30, headers={"Accept": "text/html"})
    first = browser.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/login"
    assert "Paste your API token" in browser.get("/login").text

    refused = browser.post("/login", data={"token": "ired_not-a-token"})
    assert refused.status_code == 401 and "unknown or revoked token" in refused.text
    token = add_user(unique("browser"), capsys)
    signed_in = browser.post("/login", data={"token": token})
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie

    assert browser.get("/").status_code == 200
    assert browser.get("/jobs", headers={"Accept": "application/json"}).status_code == 200
    write = browser.post("/jobs", json=job_body(), headers={"Accept": "application/json"})
    assert write.status_code == 401  # the cookie never authorises a change
