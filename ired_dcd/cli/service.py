"""`ired-dcd serve | worker | submit | status | cancel | retry | delete`: run the service and talk to it."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
import time
from typing import Any

import uvicorn

from ired_core.configs import format_seeds, parse_overrides
from ired_dcd.cli.options import add_overrides_option, add_server_options, reports_errors, seeds_argument
from ired_dcd.client import Client
from ired_dcd.db import migrate
from ired_dcd.services import slurm_jobs
from ired_dcd.services.celery_app import app as celery_app
from ired_dcd.services.reconciler import reconcile_once
from ired_dcd.settings import Settings, get_settings
from ired_dcd.states import TERMINAL, State
from worker.celery_app import PARENT_ENV

WORKER_STOP_SECONDS = 30
"""How long a stopping server waits for its local worker's runs to checkpoint and hand their leases back."""


def register(subparsers: Any) -> None:
    """Add the service subcommands to the `ired-dcd` parser."""
    p = subparsers.add_parser("serve", help="start the API (and, with no broker configured, a local worker)")
    p.add_argument("--host", help="bind address (default $IRED_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default $IRED_PORT or 8000)")
    p.add_argument("--no-worker", action="store_true", help="embedded mode: do not start the local worker")
    p.add_argument("--workers", type=int, default=1, help="API processes (lab server: about one per core)")
    p.set_defaults(func=serve)

    p = subparsers.add_parser("worker", help="start a training worker (one per GPU) for the lab server")
    p.add_argument("--gpu", help="GPU index for this worker (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--name", help="worker name, unique per host (default ired-gpuN, or ired-PID)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=start_worker)

    p = subparsers.add_parser("submit", help="submit a job: a preset over seeds")
    p.add_argument("config", help="preset: q204, Q-204 or q204_dcd_full")
    p.add_argument("--seeds", type=seeds_argument, default=[0], help="e.g. 0-9 or 0,1,5 (default 0)")
    add_overrides_option(p)
    p.add_argument("--priority", type=int, default=5, help="0–9, higher runs first (default 5)")
    p.add_argument("--tag", dest="tags", action="append", default=[], help="label the job (repeatable)")
    p.add_argument("--executor", default="celery", help="where the runs train: celery (GPU workers, default) or slurm")
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --executor slurm: override a SLURM setting (repeatable), e.g. --slurm partition=gpu",
    )
    p.add_argument("--wait", action="store_true", help="follow the job until it ends; exit 1 unless it succeeded")
    add_server_options(p)
    p.set_defaults(func=submit)

    p = subparsers.add_parser("status", help="list jobs, or show one job's runs")
    p.add_argument("job", nargs="?", type=int)
    p.add_argument("--state", choices=[s.value for s in State])
    p.add_argument("--config")
    p.add_argument("--tag")
    p.add_argument("--limit", type=int, default=20)
    add_server_options(p)
    p.set_defaults(func=status)

    for name, command, text in (
        ("cancel", cancel, "cancel a job"),
        ("retry", retry, "retry a job's failed runs"),
        ("delete", delete, "delete an ended job with its curves and checkpoints"),
    ):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("job", type=int)
        add_server_options(p)
        p.set_defaults(func=command)


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


@reports_errors
def start_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker in this process until it is stopped."""
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    name = args.name or (f"ired-gpu{args.gpu}" if args.gpu is not None else None)
    celery_app.worker_main(worker_argv(get_settings(), loglevel=args.loglevel, name=name))
    return 0


@reports_errors
def serve(args: argparse.Namespace) -> int:
    """Run the API; in the embedded default also migrate SQLite and run a local worker beside it."""
    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    if not settings.auth_enabled and not _loopback(host):
        raise ValueError(
            f"--host {host}: serving other machines needs authentication; "
            "set IRED_AUTH_REQUIRED=true and add users with `ired-dcd users add NAME`"
        )
    local_worker = None
    if settings.embedded:
        local_worker = _start_embedded(settings, with_worker=not args.no_worker)
        # uvicorn re-raises SIGTERM after its own shutdown: unwind through `finally` to stop the worker
        signal.signal(signal.SIGTERM, _exit_on_signal)
    else:
        database, broker = _redacted(settings.sqlalchemy_url), _redacted(settings.broker_url)
        print(f"lab-server mode: database {database}, broker {broker}")
    if settings.auth_enabled:
        print("authentication: every request but /health needs `Authorization: Bearer <token>` (ired-dcd users)")
    else:
        print(f"no authentication: anyone who can reach {host}:{port} may use the API; it listens on {host} only")
    collector = _start_slurm_collector()
    try:
        uvicorn.run("api.main:app", host=host, port=port, log_level="info", workers=args.workers)
    finally:
        if local_worker is not None:  # first: its runs checkpoint while the collector stops
            local_worker.send_signal(signal.SIGQUIT)  # cold stop: interrupted runs resume at next start
        if collector is not None:
            collector.stop()
        if local_worker is not None:
            _wait_for_worker(local_worker)
    return 0


def _wait_for_worker(worker: subprocess.Popen[bytes]) -> None:
    """Wait for the local worker's cold stop; kill it when it takes longer than WORKER_STOP_SECONDS."""
    started = time.monotonic()
    try:
        worker.wait(WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        print(
            f"local worker did not stop in {WORKER_STOP_SECONDS} s; killed it: its runs resume "
            "at the next start once their lease has expired, and count an attempt",
            file=sys.stderr,
        )
    else:
        print(f"local worker stopped in {time.monotonic() - started:.1f} s")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _start_embedded(settings: Settings, *, with_worker: bool) -> subprocess.Popen[bytes] | None:
    migrate()
    done = reconcile_once()  # the filesystem queue forgets a task once a worker took it: send those again
    print(
        f"embedded mode: database {settings.sqlalchemy_url}, queue {settings.queue_dir}, "
        f"artifacts {settings.artifacts_path}"
    )
    if done is not None and done.resent:
        print(f"re-queued {done.resent} interrupted task(s); they resume from their checkpoints")
    if not with_worker:
        return None
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app:app", *worker_argv(settings, name="ired-local")]
    process = subprocess.Popen(argv, env={**os.environ, PARENT_ENV: str(os.getpid())})  # it ends when this does
    print(f"local worker started (pid {process.pid})")
    return process


def _start_slurm_collector() -> slurm_jobs.SlurmCollector | None:
    """Where this server can submit to SLURM, follow its SLURM jobs into the database (docs/slurm.md)."""
    if not slurm_jobs.available():
        return None
    collector = slurm_jobs.SlurmCollector()
    collector.start()
    print(f"SLURM: executor 'slurm' available; collector polls every {collector.interval:.0f} s")
    return collector


def _redacted(url: str | None) -> str:
    """A URL without its password, for logs."""
    if url is None:
        return "-"
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}" if at else url


# ------------------------------------------------------------------------------------ talking to it
@reports_errors
def submit(args: argparse.Namespace) -> int:
    """Submit a job and print its id; with --wait follow it to the end."""
    client = Client(args.server, token=args.token)
    job = client.submit(
        args.config,
        args.seeds,
        overrides=parse_overrides(args.overrides),
        priority=args.priority,
        tags=args.tags,
        executor=args.executor,
        slurm=parse_overrides(args.slurm),
    )
    print(
        f"job {job['id']} {job['state']}: {job['config']} × {len(job['runs'])} seed(s) "
        f"[{format_seeds(job['seeds'])}], config {job['config_hash']}"
    )
    if not args.wait:
        return 0
    job = client.wait(job["id"])
    _print_job(job)
    return 0 if job["state"] == State.SUCCEEDED else 1


@reports_errors
def status(args: argparse.Namespace) -> int:
    """Print recent jobs, or one job with its runs."""
    client = Client(args.server, token=args.token)
    if args.job is not None:
        _print_job(client.job(args.job))
        return 0
    page = client.jobs(state=args.state, config=args.config, tag=args.tag, limit=args.limit)
    header = ("JOB", "STATE", "CONFIG", "SEEDS", "PROGRESS", "OWNER", "CREATED")
    rows = [
        (
            str(job["id"]),
            job["state"],
            job["config"],
            format_seeds(job["seeds"]),
            percent_text(job["steps_done"], job["steps_total"]),
            job["owner"],
            job["created_at"][:19],
        )
        for job in page["data"]
    ]
    print_page(header, rows, page, "job")
    return 0


@reports_errors
def cancel(args: argparse.Namespace) -> int:
    """Cancel a job."""
    job = Client(args.server, token=args.token).cancel(args.job)
    pending = sum(run["state"] not in TERMINAL for run in job["runs"])
    tail = f"; {pending} running run(s) stop within seconds" if pending else ""
    print(f"job {job['id']} {job['state']}{tail}")
    return 0


@reports_errors
def retry(args: argparse.Namespace) -> int:
    """Queue a job's failed and diverged runs again."""
    job = Client(args.server, token=args.token).retry(args.job)
    print(f"job {job['id']} {job['state']}: {sum(r['state'] == State.QUEUED for r in job['runs'])} run(s) queued")
    return 0


@reports_errors
def delete(args: argparse.Namespace) -> int:
    """Delete an ended job."""
    Client(args.server, token=args.token).delete(args.job)
    print(f"job {args.job} deleted")
    return 0


def _print_job(job: dict[str, Any]) -> None:
    print(
        f"job {job['id']} {job['state']}: {job['config']} (config {job['config_hash']}), owner {job['owner']}, "
        f"priority {job['priority']}, tags {','.join(job['tags']) or '-'}, "
        f"progress {percent_text(sum(r['step'] for r in job['runs']), sum(r['total_steps'] for r in job['runs']))}"
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
    print_table(rows)


def print_page(header: tuple[str, ...], rows: list[tuple[str, ...]], page: dict[str, Any], noun: str) -> None:
    """One page of a list as a table, then how many of all there are: `20 of 31 job(s)`."""
    print_table([header, *rows])
    print(f"{len(page['data'])} of {page['count']} {noun}(s)")


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows as left-aligned columns; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def percent_text(done: int, total: int) -> str:
    """Progress in steps as a whole percentage."""
    return f"{100 * done / (total or 1):.0f}%"
