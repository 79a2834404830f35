"""Dependencies shared by the routes: a database session and the current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path
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


def get_db() -> Iterator[Session]:
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_current_user(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    """The token's user (401 without a valid one); without authentication, the server's default user."""
    settings = get_settings()
    if not settings.auth_enabled:
        return get_or_create_user(session=session, name=settings.default_user)
    if credentials is None:
        raise Unauthorized("authorization: a token is required (header `Authorization: Bearer <token>`)")
    user = authenticate(session=session, token=credentials.credentials)
    if user is None:
        raise Unauthorized("authorization: unknown or revoked token")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
