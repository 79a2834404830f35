"""Browser sign-in for a lab server: paste an API token once, read the dashboard with a cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import TOKEN_COOKIE, SessionDep
from api.pages import TEMPLATES
from api.security import check_same_origin
from ired_dcd.services.users import authenticate
from ired_dcd.settings import get_settings

router = APIRouter(include_in_schema=False)
SameOrigin = Depends(check_same_origin)
"""The sign-in and sign-out forms are accepted from this server's own page only (login CSRF)."""
COOKIE_SECONDS = 30 * 24 * 3600


@router.get("/login", response_class=HTMLResponse)
def read_login(request: Request) -> HTMLResponse:
    """The sign-in form."""
    return TEMPLATES.TemplateResponse(request, "login.html", {"error": None, "auth": get_settings().auth_enabled})


@router.post("/login", response_class=HTMLResponse, dependencies=[SameOrigin])
def sign_in(request: Request, session: SessionDep, token: Annotated[str, Form(max_length=256)]) -> Response:
    """Check the token, then keep it in an HttpOnly cookie that authorises reads only."""
    if authenticate(session=session, token=token.strip()) is None:
        context = {"error": "unknown or revoked token", "auth": True}
        return TEMPLATES.TemplateResponse(request, "login.html", context, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        TOKEN_COOKIE,
        token.strip(),
        max_age=COOKIE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", dependencies=[SameOrigin])
def sign_out() -> Response:
    """Forget the cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(TOKEN_COOKIE)
    return response
