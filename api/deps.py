"""Dependencies shared by the routes: a database session and the current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from ired_dcd.db import new_session
from ired_dcd.models import User
from ired_dcd.services.users import get_or_create_user
from ired_dcd.settings import get_settings


def get_db() -> Iterator[Session]:
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_current_user(session: SessionDep) -> User:
    """The server's default user until token authentication exists."""
    return get_or_create_user(session=session, name=get_settings().default_user)


CurrentUser = Annotated[User, Depends(get_current_user)]
