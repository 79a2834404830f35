"""Dependencies shared by the routes: a database session, the read caches and who is asking."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.cache import Reads
from ired_core.input_rules import DB_INT_MAX
from ired_dcd.db import new_session
from ired_dcd.models import User
from ired_dcd.services.errors import Unauthorized
from ired_dcd.services.users import Identity, authenticate, get_or_create_user, hash_token
from ired_dcd.settings import get_settings

RowId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]
"""A job, run or artifact id in a path."""
PAGE_MAX = 500
"""The most rows one page of a list answers."""

bearer = HTTPBearer(auto_error=False, description="an API token from `ired-dcd users add NAME`")
TOKEN_COOKIE = "ired_token"
"""Set by the sign-in page so a browser can read the dashboard; it authorises reads only."""
READ_METHODS = frozenset({"GET", "HEAD"})
REVOKED = "authorization: unknown or revoked token"


def get_db() -> Iterator[Session]:
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def get_reads(request: Request) -> Reads:
    """The process's read caches (async: a cached read never waits for the thread pool)."""
    reads: Reads = request.app.state.reads
    return reads


ReadsDep = Annotated[Reads, Depends(get_reads)]


def request_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The token from `Authorization: Bearer`, or for reads from the sign-in cookie (401 without one).

    A cookie never authorises a change, so a page on another site cannot make a signed-in browser
    submit or cancel.
    """
    token = credentials.credentials if credentials is not None else None
    if token is None and request.method in READ_METHODS:
        token = request.cookies.get(TOKEN_COOKIE)
    if token is None:
        raise Unauthorized("authorization: a token is required (header `Authorization: Bearer <token>`)")
    return token


def _identity_of_token(token: str) -> Identity | None:
    with new_session() as session:
        user = authenticate(session=session, token=token)
        return None if user is None else Identity.of(user)


def _default_identity(name: str) -> Identity:
    with new_session() as session:
        return Identity.of(get_or_create_user(session=session, name=name))


async def get_identity(request: Request, reads: ReadsDep, credentials: Credentials) -> Identity:
    """Who is asking, for every route but the public ones: the token's user, from memory while no
    user changed (401 without a valid token); without authentication, the server's default user."""
    settings = get_settings()
    if not settings.auth_enabled:
        name = settings.default_user
        return await reads.identities.get(("default", name), ("users",), partial(_default_identity, name))
    token = request_token(request, credentials)
    identity = await reads.identities.get(("token", hash_token(token)), ("users",), partial(_identity_of_token, token))
    if identity is None:
        raise Unauthorized(REVOKED)
    return identity


def get_current_user(request: Request, session: SessionDep, credentials: Credentials) -> User:
    """The user as a database row, for routes that change something: its token is checked against
    the database again, so a token revoked a moment ago changes nothing even before the feed says so."""
    settings = get_settings()
    if not settings.auth_enabled:
        return get_or_create_user(session=session, name=settings.default_user)
    user = authenticate(session=session, token=request_token(request, credentials))
    if user is None:
        raise Unauthorized(REVOKED)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_current_identity(request: Request, credentials: Credentials) -> Identity:
    """`get_current_user` (the token checked against the database) on a session of its own, closed
    before the route goes on: a route that then waits (an import waiting for its turn) holds no
    database connection meanwhile."""
    with new_session() as session:
        return Identity.of(get_current_user(request, session, credentials))


CurrentIdentity = Annotated[Identity, Depends(get_current_identity)]
