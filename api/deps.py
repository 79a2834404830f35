"""Dependencies shared by the routes: a database session and the current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from ired_dcd.db import new_session
from ired_dcd.models import User
from ired_dcd.services.errors import Unauthorized
from ired_dcd.services.users import authenticate, get_or_create_user
from ired_dcd.settings import get_settings

DB_INT_MAX = 2**31 - 1
"""The largest value of the database's INTEGER columns (ids, steps): larger ones are refused with a 422."""
RowId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]
"""A job, run or artifact id in a path."""

bearer = HTTPBearer(auto_error=False, description="an API token from `ired-dcd users add NAME`")
TOKEN_COOKIE = "ired_token"
"""Set by the sign-in page so a browser can read the dashboard; it authorises reads only."""
READ_METHODS = frozenset({"GET", "HEAD"})


def get_db() -> Iterator[Session]:
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The token's user (401 without a valid one); without authentication, the server's default user.

    The token comes from `Authorization: Bearer`, or for reads from the sign-in cookie: a cookie never
    authorises a change, so a page on another site cannot make a signed-in browser submit or cancel.
    """
    settings = get_settings()
    if not settings.auth_enabled:
        return get_or_create_user(session=session, name=settings.default_user)
    token = credentials.credentials if credentials is not None else None
    if token is None and request.method in READ_METHODS:
        token = request.cookies.get(TOKEN_COOKIE)
    if token is None:
        raise Unauthorized("authorization: a token is required (header `Authorization: Bearer <token>`)")
    user = authenticate(session=session, token=token)
    if user is None:
        raise Unauthorized("authorization: unknown or revoked token")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
