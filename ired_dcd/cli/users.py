"""`ired-dcd users add | token | revoke | list`: API users of this server, on its database directly.

Run on the server (same DATABASE_URL as the API). A token is printed once, on stdout alone, so that
`TOKEN=$(ired-dcd users add alice)` works; only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ired_dcd.cli.service import print_table
from ired_dcd.db import migrate, new_session
from ired_dcd.services import users
from ired_dcd.services.errors import ServiceError
from ired_dcd.settings import get_settings


def register(subparsers: Any) -> None:
    """Add `users` and its subcommands to the `ired-dcd` parser."""
    p = subparsers.add_parser("users", help="add users, issue and revoke their API tokens, list them")
    commands = p.add_subparsers(dest="users_command", required=True, metavar="COMMAND")

    q = commands.add_parser("add", help="add a user and print their token (shown once)")
    q.add_argument("name")
    q.add_argument("--admin", action="store_true", help="may cancel, retry and delete anyone's jobs")
    q.set_defaults(func=add)

    q = commands.add_parser("token", help="issue a new token for a user (the old one stops working)")
    q.add_argument("name")
    q.set_defaults(func=token)

    q = commands.add_parser("revoke", help="make a user's token stop working at once")
    q.add_argument("name")
    q.set_defaults(func=revoke)

    q = commands.add_parser("list", help="users, whether they hold a token, their jobs")
    q.set_defaults(func=list_users)


def _database() -> Any:
    """A session on the settings' database (the embedded SQLite file is migrated first)."""
    if get_settings().database_url is None:
        migrate()
    return new_session()


def _print_token(name: str, token: str) -> None:
    print(token)
    print(
        f"the token of {name}, shown this once: send it as `Authorization: Bearer <token>`, "
        "or set IRED_TOKEN for the ired-dcd client",
        file=sys.stderr,
    )


def _refused(error: ServiceError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 1


def add(args: argparse.Namespace) -> int:
    with _database() as session:
        try:
            user, secret = users.add_user(session=session, name=args.name, admin=args.admin)
        except ServiceError as error:
            return _refused(error)
        print(f"user {user.name} added{' (admin)' if user.is_admin else ''}", file=sys.stderr)
        _print_token(user.name, secret)
    return 0


def token(args: argparse.Namespace) -> int:
    with _database() as session:
        try:
            user = users.get_user(session=session, name=args.name)
        except ServiceError as error:
            return _refused(error)
        _print_token(user.name, users.issue_token(session=session, user=user))
    return 0


def revoke(args: argparse.Namespace) -> int:
    with _database() as session:
        try:
            user = users.revoke_token(session=session, name=args.name)
        except ServiceError as error:
            return _refused(error)
        print(f"the token of {user.name} is revoked; `ired-dcd users token {user.name}` issues a new one")
    return 0


def list_users(_args: argparse.Namespace) -> int:
    with _database() as session:
        rows = [("USER", "ADMIN", "TOKEN", "JOBS", "CREATED")]
        for user in users.list_users(session=session):
            if user.token_hash is not None:
                state = f"issued {user.token_issued_at:%Y-%m-%d %H:%M}" if user.token_issued_at else "yes"
            else:
                state = f"revoked {user.revoked_at:%Y-%m-%d %H:%M}" if user.revoked_at else "none"
            admin = "yes" if user.is_admin else "-"
            rows.append((user.name, admin, state, str(len(user.jobs)), f"{user.created_at:%Y-%m-%d}"))
    print_table(rows)
    return 0
