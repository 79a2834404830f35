"""`ired-dcd serve | worker | submit | status | cancel | retry`: run the service and talk to it."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from ired_core.configs import parse_overrides, parse_seeds
from ired_dcd.client import Client, ClientError
from ired_dcd.db import migrate, session_scope
from ired_dcd.services.jobs import requeue_interrupted
from ired_dcd.settings import Settings, get_settings
from ired_dcd.states import TERMINAL, State
from worker.celery_app import app as celery_app

Command = Callable[[argparse.Namespace], int]
WORKER_STOP_SECONDS = 10


def register(subparsers: Any) -> None:
    """Add the service subcommands to the `ired-dcd` parser."""
    p = subparsers.add_parser("serve", help="start the API (and, with no broker configured, a local worker)")
    p.add_argument("--host", help="bind address (default $IRED_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default $IRED_PORT or 8000)")
    p.add_argument("--no-worker", action="store_true", help="embedded mode: do not start the local worker")
    p.set_defaults(func=serve)

    p = subparsers.add_parser("worker", help="start a training worker (one per GPU) for the lab server")
    p.add_argument("--gpu", help="GPU index for this worker (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--name", help="worker name, unique per host (default ired-gpuN, or ired-PID)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=start_worker)

    p = subparsers.add_parser("submit", help="submit a job: a preset over seeds")
    p.add_argument("config", help="preset: q204, Q-204 or q204_dcd_full")
    p.add_argument("--seeds", type=_seeds, default=[0], help="e.g. 0-9 or 0,1,5 (default 0)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable), e.g. --set train_steps=20000",
    )
    p.add_argument("--priority", type=int, default=5, help="0–9, higher runs first (default 5)")
    p.add_argument("--tag", dest="tags", action="append", default=[], help="label the job (repeatable)")
    p.add_argument("--executor", default="celery", help="where the runs train (default celery: GPU workers)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends; exit 1 unless it succeeded")
    _server_option(p)
    p.set_defaults(func=submit)

    p = subparsers.add_parser("status", help="list jobs, or show one job's runs")
    p.add_argument("job", nargs="?", type=int)
    p.add_argument("--state", choices=[s.value for s in State])
    p.add_argument("--config")
    p.add_argument("--tag")
    p.add_argument("--limit", type=int, default=20)
    _server_option(p)
    p.set_defaults(func=status)

    for name, command, text in (("cancel", cancel, "cancel a job"), ("retry", retry, "retry a job's failed runs")):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("job", type=int)
        _server_option(p)
        p.set_defaults(func=command)


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="API URL (default $IRED_SERVER or http://127.0.0.1:8000)")


def _seeds(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reports_errors(command: Command) -> Command:
    """Print a refused request or bad input as one line and exit 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (ClientError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapper


# ------------------------------------------------------------------------------------ running the service
def worker_argv(settings: Settings, *, loglevel: str = "INFO", name: str | None = None) -> list[str]:
    """Celery worker arguments: one training process (one GPU) per worker."""
    return [
        "worker",
        "--loglevel",
        loglevel,
        "--concurrency",
        "1",
        "--hostname",
        f"{name or f'ired-{os.getpid()}'}@%h",
        "--queues",
        settings.queue,
    ]


@_reports_errors
def start_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker in this process until it is stopped."""
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    name = args.name or (f"ired-gpu{args.gpu}" if args.gpu is not None else None)
    celery_app.worker_main(worker_argv(get_settings(), loglevel=args.loglevel, name=name))
    return 0


@_reports_errors
def serve(args: argparse.Namespace) -> int:
    """Run the API; in the embedded default also migrate SQLite and run a local worker beside it."""
    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    local_worker = None
    if settings.embedded:
        local_worker = _start_embedded(settings, with_worker=not args.no_worker)
        # uvicorn re-raises SIGTERM after its own shutdown: unwind through `finally` to stop the worker
        signal.signal(signal.SIGTERM, _exit_on_signal)
    else:
        database, broker = _redacted(settings.sqlalchemy_url), _redacted(settings.broker_url)
        print(f"lab-server mode: database {database}, broker {broker}")
    try:
        uvicorn.run("api.main:app", host=host, port=port, log_level="info")
    finally:
        if local_worker is not None:
            local_worker.send_signal(signal.SIGQUIT)  # cold stop: interrupted runs resume at next start
            try:
                local_worker.wait(WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                local_worker.kill()
    return 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _start_embedded(settings: Settings, *, with_worker: bool) -> subprocess.Popen[bytes] | None:
    migrate()
    with session_scope() as session:
        resumed = requeue_interrupted(session=session)
    print(
        f"embedded mode: database {settings.sqlalchemy_url}, queue {settings.queue_dir}, "
        f"artifacts {settings.artifacts_path}"
    )
    print("no authentication: the API listens on the address given (127.0.0.1 by default) only")
    if resumed:
        print(f"re-queued {resumed} interrupted task(s); they resume from their checkpoints")
    if not with_worker:
        return None
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app:app", *worker_argv(settings, name="ired-local")]
    process = subprocess.Popen(argv)
    print(f"local worker started (pid {process.pid})")
    return process


def _redacted(url: str | None) -> str:
    """A URL without its password, for logs."""
    if url is None:
        return "-"
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}" if at else url


# ------------------------------------------------------------------------------------ talking to it
@_reports_errors
def submit(args: argparse.Namespace) -> int:
    """Submit a job and print its id; with --wait follow it to the end."""
    client = Client(args.server)
    job = client.submit(
        args.config,
        args.seeds,
        overrides=parse_overrides(args.overrides),
        priority=args.priority,
        tags=args.tags,
        executor=args.executor,
    )
    print(
        f"job {job['id']} {job['state']}: {job['config']} × {len(job['runs'])} seed(s) "
        f"[{_seed_text(job['seeds'])}], config {job['config_hash']}"
    )
    if not args.wait:
        return 0
    job = client.wait(job["id"])
    _print_job(job)
    return 0 if job["state"] == State.SUCCEEDED else 1


@_reports_errors
def status(args: argparse.Namespace) -> int:
    """Print recent jobs, or one job with its runs."""
    client = Client(args.server)
    if args.job is not None:
        _print_job(client.job(args.job))
        return 0
    page = client.jobs(state=args.state, config=args.config, tag=args.tag, limit=args.limit)
    rows = [("JOB", "STATE", "CONFIG", "SEEDS", "PROGRESS", "OWNER", "CREATED")]
    for job in page["data"]:
        rows.append(
            (
                str(job["id"]),
                job["state"],
                job["config"],
                _seed_text(job["seeds"]),
                _progress(job),
                job["owner"],
                job["created_at"][:19],
            )
        )
    _print_table(rows)
    print(f"{len(page['data'])} of {page['count']} job(s)")
    return 0


@_reports_errors
def cancel(args: argparse.Namespace) -> int:
    """Cancel a job."""
    job = Client(args.server).cancel(args.job)
    pending = sum(run["state"] not in TERMINAL for run in job["runs"])
    tail = f"; {pending} running run(s) stop within seconds" if pending else ""
    print(f"job {job['id']} {job['state']}{tail}")
    return 0


@_reports_errors
def retry(args: argparse.Namespace) -> int:
    """Queue a job's failed and diverged runs again."""
    job = Client(args.server).retry(args.job)
    print(f"job {job['id']} {job['state']}: {sum(r['state'] == State.QUEUED for r in job['runs'])} run(s) queued")
    return 0


def _print_job(job: dict[str, Any]) -> None:
    print(
        f"job {job['id']} {job['state']}: {job['config']} (config {job['config_hash']}), owner {job['owner']}, "
        f"priority {job['priority']}, tags {','.join(job['tags']) or '-'}, progress {_progress(job)}"
    )
    if job["error"]:
        print(f"error: {job['error']}")
    rows = [("RUN", "SEED", "STATE", "STEP", "ATTEMPTS", "VAL_MSE", "DEVICE")]
    for run in job["runs"]:
        val_mse = (run["final_metrics"] or {}).get("val_mse")
        rows.append(
            (
                str(run["id"]),
                str(run["seed"]),
                run["state"],
                f"{run['step']}/{run['total_steps']}",
                str(run["attempts"]),
                "-" if val_mse is None else f"{val_mse:.6g}",
                run["device"] or "-",
            )
        )
    _print_table(rows)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _progress(job: dict[str, Any]) -> str:
    done = sum(run["step"] for run in job["runs"])
    total = sum(run["total_steps"] for run in job["runs"]) or 1
    return f"{100 * done / total:.0f}%"


def _seed_text(seeds: list[int]) -> str:
    """[0, 1, 2, 5] → '0-2,5'."""
    parts: list[str] = []
    for seed in sorted(seeds):
        if parts and parts[-1].split("-")[-1] == str(seed - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{seed}"
        else:
            parts.append(str(seed))
    return ",".join(parts)
