"""Issue 16, findings 4 and 6 (headers) on the real server: sign-in forms from this site only (login CSRF),
and security headers on pages, exports, JSON and errors.

Before: `POST /login` from another origin with the attacker's token set the cookie (the victim's browser
then read the attacker's account); pages had no CSP, frame-ancestors or nosniff.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from api.security import DOCS_CSP, PAGE_CSP
from ired_dcd.services.users import add_user
from tests.conftest import Lab

pytestmark = pytest.mark.services


@pytest.fixture
def token(lab: Lab) -> str:
    with lab.session() as session:
        return add_user(session=session, name=f"csrf-{uuid.uuid4().hex[:8]}")[1]


def sign_in(lab: Lab, token: str, **headers: str) -> httpx.Response:
    """POST /login as a browser form would, with `headers` (Origin, Referer) as the posting page sets them."""
    with httpx.Client(base_url=lab.base_url, timeout=30) as browser:  # a fresh browser: no cookie yet
        return browser.post("/login", data={"token": token}, headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a data: page
        {"Referer": "https://evil.example/lure.html"},
        {"Origin": "http://127.0.0.1.evil.example"},
    ],
)
def test_a_sign_in_posted_by_another_site_is_refused_and_sets_no_cookie(
    lab: Lab, token: str, headers: dict[str, str]
) -> None:
    response = sign_in(lab, token, **headers)
    assert response.status_code == 403, response.text
    assert response.json()["detail"].startswith("origin: a form from ")
    assert "set-cookie" not in response.headers


def test_a_sign_in_from_this_servers_page_or_without_a_browser_sets_the_cookie(lab: Lab, token: str) -> None:
    own = lab.base_url
    for headers in ({"Origin": own}, {"Referer": f"{own}/login"}, {}):
        response = sign_in(lab, token, **headers)
        assert response.status_code == 303, (headers, response.text)
        assert response.headers["set-cookie"].startswith("ired_token=")


def test_sign_out_from_another_site_is_refused(lab: Lab) -> None:
    refused = httpx.post(f"{lab.base_url}/logout", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert httpx.post(f"{lab.base_url}/logout", headers={"Origin": lab.base_url}).status_code == 303


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/", "text/html"),
        ("/login", "text/html"),
        ("/results/compare?format=csv", "*/*"),
        ("/results/compare?format=markdown", "*/*"),
        ("/results/compare", "application/json"),
        ("/jobs/2147483647", "application/json"),  # an error answer too
        ("/static/dashboard.js", "*/*"),
        ("/health", "*/*"),
    ],
)
def test_every_answer_carries_the_security_headers(lab: Lab, path: str, accept: str) -> None:
    response = lab.http.get(path, headers={"Accept": accept})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert "frame-ancestors 'none'" in PAGE_CSP and "script-src 'self';" in PAGE_CSP


def test_the_api_docs_keep_working_under_their_own_policy(lab: Lab) -> None:
    response = lab.http.get("/docs")
    assert response.status_code == 200 and "cdn.jsdelivr.net" in response.text
    assert response.headers["content-security-policy"] == DOCS_CSP
    too_large = lab.http.post("/jobs", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert too_large.status_code == 413 and too_large.headers["x-content-type-options"] == "nosniff"
