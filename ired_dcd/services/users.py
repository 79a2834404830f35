"""Users and their API tokens, and who may change a job.

A token is 32 random bytes (`secrets`), shown once when it is issued; the database keeps only its
SHA-256. A presented token is hashed and looked up by that hash, then the hashes are compared with
`hmac.compare_digest`: the time a check takes says nothing about any stored token. Revoking clears the
hash, so the token stops working at once; a new one can be issued for the same user.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ired_dcd.models import Job, Sweep, User, utcnow
from ired_dcd.services.errors import Conflict, Forbidden, InvalidInput, NotFound

TOKEN_PREFIX = "ired_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Identity:
    """Who is asking, as the API keeps it in memory between requests: no database row, no token."""

    id: int
    name: str
    is_admin: bool

    @classmethod
    def of(cls, user: User) -> Identity:
        return cls(id=user.id, name=user.name, is_admin=user.is_admin)


def hash_token(token: str) -> str:
    """The stored form of a token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


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


def get_user(*, session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"user {name!r} not found")
    return user


def add_user(*, session: Session, name: str, admin: bool = False) -> tuple[User, str]:
    """Create a user with a fresh token; returns the user and the token (the only time it is seen)."""
    if not NAME_PATTERN.match(name):
        raise InvalidInput(f"name: {name!r} is not a user name (1–64 letters, digits, '_', '.', '-')")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"name: user {name!r} already exists; `ired-dcd users token {name}` issues a new token")
    user = User(name=name, is_admin=admin)
    session.add(user)
    return user, issue_token(session=session, user=user)


def issue_token(*, session: Session, user: User) -> str:
    """Give `user` a new token (the old one stops working) and commit; returns the token."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    user.token_hash = hash_token(token)
    user.token_issued_at = utcnow()
    session.commit()
    return token


def revoke_token(*, session: Session, name: str) -> User:
    """Make the user's token stop working at once."""
    user = get_user(session=session, name=name)
    if user.token_hash is None:
        raise Conflict(f"name: user {name!r} has no token to revoke")
    user.token_hash = None
    user.revoked_at = utcnow()
    session.commit()
    return user


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def authenticate(*, session: Session, token: str) -> User | None:
    """The user holding `token`, or None for an unknown or revoked token."""
    digest = hash_token(token)
    user = session.scalar(select(User).where(User.token_hash == digest))
    if user is None or user.token_hash is None or not hmac.compare_digest(user.token_hash, digest):
        return None
    return user


def check_may_change(owned: Job | Sweep, user: User, action: str) -> None:
    """Forbidden unless `user` owns the job (or sweep) or is an admin (everyone may read everything)."""
    if user.is_admin or owned.owner_id == user.id:
        return
    what = f"{type(owned).__name__.lower()} {owned.id}"
    raise Forbidden(f"{what} belongs to {owned.owner.name}; only its owner or an admin may {action} it")
