"""`ired-dcd users add | token | revoke | list | quota`: API users of this server, on its database directly.

Run on the server (same DATABASE_URL as the API). A token is printed once, on stdout alone, so that
`TOKEN=$(ired-dcd users add alice)` works; only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ired_dcd.cli.service import print_table
from ired_dcd.db import migrate, new_session
from ired_dcd.services import quotas, users
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

    q = commands.add_parser("list", help="users, whether they hold a token, their jobs and quotas")
    q.set_defaults(func=list_users)

    q = commands.add_parser(
        "quota", help="show or set a user's limits: GPU-hours and jobs queued or running at once (docs/service.md)"
    )
    q.add_argument("name")
    q.add_argument("--gpu-hours", type=float, help="estimated GPU-hours queued or training at once")
    q.add_argument("--queued-jobs", type=int, help="jobs queued or running at once")
    q.add_argument("--default", action="store_true", help="back to the server's defaults (IRED_QUOTA_*)")
    q.set_defaults(func=quota)


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


def _limit(value: float | None, own: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:g}" + ("" if own is not None else " (default)")


def quota(args: argparse.Namespace) -> int:
    with _database() as session:
        try:
            user = users.get_user(session=session, name=args.name)
            if args.gpu_hours is not None or args.queued_jobs is not None or args.default:
                user = quotas.set_quota(
                    session=session,
                    name=args.name,
                    gpu_hours=args.gpu_hours,
                    queued_jobs=args.queued_jobs,
                    reset=args.default,
                )
        except ServiceError as error:
            return _refused(error)
        now = quotas.quota_of(session=session, user=user)
        admin = " (admin: no limits)" if user.is_admin else ""
        print(f"{user.name}{admin}")
        gpu, jobs = _limit(now.gpu_hours, user.gpu_hours_quota), _limit(now.queued_jobs, user.queued_jobs_quota)
        print(f"  GPU-hours queued or training: {now.gpu_hours_used:.4g} of {gpu}")
        print(f"  jobs queued or running: {now.queued_jobs_used} of {jobs}")
    return 0


def list_users(_args: argparse.Namespace) -> int:
    with _database() as session:
        rows = [("USER", "ADMIN", "TOKEN", "JOBS", "GPU-HOURS", "QUEUED JOBS", "CREATED")]
        for user in users.list_users(session=session):
            if user.token_hash is not None:
                state = f"issued {user.token_issued_at:%Y-%m-%d %H:%M}" if user.token_issued_at else "yes"
            else:
                state = f"revoked {user.revoked_at:%Y-%m-%d %H:%M}" if user.revoked_at else "none"
            admin = "yes" if user.is_admin else "-"
            gpu, jobs = quotas.limits(user)
            limits = (_limit(gpu, user.gpu_hours_quota), _limit(jobs, user.queued_jobs_quota))
            rows.append((user.name, admin, state, str(len(user.jobs)), *limits, f"{user.created_at:%Y-%m-%d}"))
    print_table(rows)
    return 0
