"""Users: the owner of every job (token authentication arrives with the users issue)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ired_dcd.models import User


def get_or_create_user(*, session: Session, name: str) -> User:
    """The user called `name`, created (without a token) the first time it is asked for."""
    user = session.scalar(select(User).where(User.name == name))
    if user is not None:
        return user
    try:
        user = User(name=name)
        session.add(user)
        session.commit()
    except IntegrityError:  # created by a concurrent request
        session.rollback()
        user = session.scalars(select(User).where(User.name == name)).one()
    return user
