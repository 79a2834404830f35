"""`ired-dcd import FILE` and `ired-dcd study`: bring results made elsewhere in, run the plan's ablation.

Both talk to a server when one is named (`--server URL` or $IRED_SERVER). Without one, `import` writes
straight to the settings' database through the service layer, and `study` uses the server already
answering at the settings' address or, in the embedded default, starts `ired-dcd serve` (API and local
worker, the same code as when a user starts it) for the length of the study.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter

from ired_core.configs import parse_overrides, parse_seeds, resolve_config
from ired_core.report import render
from ired_core.results_dir import RowFormat
from ired_core.verdict import AUTO_BASELINE, IN_HOUSE_BASELINE, PLAN_CONFIGS, STABILISED_CONFIGS, Comparison
from ired_dcd.cli.options import add_overrides_option
from ired_dcd.cli.service import WORKER_STOP_SECONDS
from ired_dcd.client import Client, ClientError
from ired_dcd.services.errors import ServiceError
from ired_dcd.services.results import trivial_predictors_line
from ired_dcd.settings import Settings, get_settings
from ired_dcd.states import TERMINAL, State

EXIT_ERROR = 2
ROW_MEDIA_TYPES: dict[RowFormat, str] = {"csv": "text/csv", "json": "application/json"}
SMALL: dict[str, Any] = {"batch_size": 256, "hidden_dim": 128, "val_size": 1024, "eval_batch_size": 1024}
"""`study --size small`: the presets at a size a laptop CPU trains in minutes (the plan's rank 20 kept)."""
SMALL_STEPS = 200
STUDY_ARMS: dict[str, tuple[str, ...]] = {
    "plan": (IN_HOUSE_BASELINE, *PLAN_CONFIGS),
    "stabilised": (IN_HOUSE_BASELINE, *STABILISED_CONFIGS),
    "both": (IN_HOUSE_BASELINE, *PLAN_CONFIGS, *STABILISED_CONFIGS[1:]),
}
"""`study --arms`: the configs each choice submits; q100 (the in-house baseline) is always one of them."""
SERVER_START_SECONDS = 120.0
SERVER_STOP_SECONDS = WORKER_STOP_SECONDS + 15.0  # the server waits for its worker, then exits
HEALTH_SECONDS = 15.0
"""/health pings the workers (a second or more on a busy machine)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `import` and `study` subcommands to the `ired-dcd` parser."""
    p = subparsers.add_parser(
        "import",
        help="import results made elsewhere (CSV or JSON rows: config, seed, metrics, tags)",
        description="Store final results of runs made elsewhere. A row repeating a stored run (same config, "
        "seed and tags) is skipped; any bad row stores nothing. See docs/dashboard.md for the format.",
    )
    p.add_argument("file", help="a CSV file with a header row, a JSON list of objects, or - for stdin")
    p.add_argument("--format", choices=tuple(ROW_MEDIA_TYPES), help="default: from the file extension")
    p.add_argument("--source", help="where the rows came from (default: the file name)")
    p.add_argument(
        "--custom-configs",
        action="store_true",
        help="keep a config that is not a preset under its own name (e.g. 'random mining'); without it such "
        "a row is refused, so a mistyped preset is never stored",
    )
    _server_option(p, "without either, write to the database of the settings directly")
    p.set_defaults(func=run_import)

    p = subparsers.add_parser(
        "study",
        help="run the plan's ablation (q100, Q-201…Q-204 and the stabilised arms) and print the comparison",
        description="Submit q100 (the baseline trained here), Q-201…Q-204 and/or the stabilised arms "
        "Q-202s…Q-204s over the same seeds under one tag, follow them, and print the comparison of their "
        "val_mse against q100 when they finish. Diverged runs are shown as failed, not dropped.",
    )
    p.add_argument("--seeds", default="0-2", help="e.g. 0-9 or 0,1,2 (default 0-2)")
    p.add_argument(
        "--size",
        choices=("small", "full"),
        default="small",
        help=f"small (default): batch {SMALL['batch_size']}, width {SMALL['hidden_dim']}, {SMALL_STEPS} steps, "
        "minutes on a CPU; full: the presets as the plan runs them (100k steps, for GPUs)",
    )
    p.add_argument("--steps", type=int, help=f"train_steps (default: {SMALL_STEPS} small, the presets' for full)")
    p.add_argument("--device", help="embedded default only: cpu, cuda or cuda:N (default: $IRED_DEVICE or auto)")
    add_overrides_option(p, " in all four jobs")
    p.add_argument("--tag", help="tag of the four jobs (default: study-<UTC time>)")
    p.add_argument(
        "--arms",
        choices=tuple(STUDY_ARMS),
        default="both",
        help="plan: Q-201…Q-204 as specified; stabilised: Q-201 and Q-202s…Q-204s; both (default)",
    )
    p.add_argument(
        "--baseline",
        default=AUTO_BASELINE,
        help=f"baseline of the final table (default {AUTO_BASELINE}: the study's own q100 runs)",
    )
    p.add_argument("--poll", type=float, default=2.0, help="seconds between progress checks (default 2)")
    _server_option(p, "without either, the server at the settings' address or a temporary embedded one")
    p.set_defaults(func=run_study)


def _server_option(parser: argparse.ArgumentParser, otherwise: str) -> None:
    parser.add_argument("--server", help=f"API URL (default $IRED_SERVER; {otherwise})")


def _fail(command: str, error: Exception) -> int:
    print(f"ired-dcd {command}: error: {error}", file=sys.stderr)
    return EXIT_ERROR


class ResultsClient(Client):
    """The job client plus the results endpoints."""

    def import_rows(
        self, text: str, fmt: RowFormat, *, source: str | None = None, custom_configs: bool = False
    ) -> dict[str, Any]:
        """POST /results/import; `{"inserted": n, "skipped": m}`."""
        params = {"source": source} if source else {}
        if custom_configs:
            params["custom_configs"] = "true"
        headers = {"content-type": ROW_MEDIA_TYPES[fmt]}
        return self._request("POST", "/results/import", content=text.encode(), headers=headers, params=params)

    def comparison(self, **params: str | None) -> Comparison:
        """GET /results/compare as a `Comparison` (params: configs, baseline, metric, tag)."""
        data = self._request("GET", "/results/compare", params={k: v for k, v in params.items() if v is not None})
        return TypeAdapter(Comparison).validate_python(data)


def _server(args: argparse.Namespace) -> str | None:
    return args.server or os.environ.get("IRED_SERVER")


# ---------------------------------------------------------------------------------------------
# import


def _read_rows(args: argparse.Namespace) -> tuple[str, RowFormat, str]:
    """(text, format, source) of the file named on the command line."""
    fmt: RowFormat | None = args.format
    if args.file == "-":
        if fmt is None:
            raise ValueError("--format: required when reading rows from stdin")
        return sys.stdin.read(), fmt, args.source or "stdin"
    path = Path(args.file)
    if fmt is None:
        fmt = next((known for known in ROW_MEDIA_TYPES if path.suffix.lower() == f".{known}"), None)
        if fmt is None:
            raise ValueError(f"--format: cannot tell from {path.name!r}; pass --format csv or --format json")
    return path.read_text(encoding="utf-8-sig"), fmt, args.source or path.name


def _import_into_database(text: str, fmt: RowFormat, source: str, custom_configs: bool) -> dict[str, int]:
    """Store the rows through the service layer in the settings' database (migrated first if embedded)."""
    from ired_dcd.db import migrate, new_session
    from ired_dcd.services.results import import_rows
    from ired_dcd.services.users import get_or_create_user

    settings = get_settings()
    if settings.database_url is None:
        migrate()
    with new_session() as session:
        owner = get_or_create_user(session=session, name=settings.default_user)
        summary = import_rows(
            session=session, text=text, fmt=fmt, owner=owner, source=source, custom_configs=custom_configs
        )
    return {"inserted": summary.inserted, "skipped": summary.skipped}


def run_import(args: argparse.Namespace) -> int:
    """Import the rows of FILE; exit 2 with the rows and fields at fault when any row is bad."""
    try:
        text, fmt, source = _read_rows(args)
        server = _server(args)
        if server:
            counts = ResultsClient(server).import_rows(text, fmt, source=source, custom_configs=args.custom_configs)
        else:
            counts = _import_into_database(text, fmt, source, args.custom_configs)
    except (ValueError, OSError, ClientError, ServiceError) as error:
        return _fail("import", error)
    print(
        f"{source}: {counts['inserted']} row(s) stored, {counts['skipped']} already stored "
        f"({server or 'the database of the settings'})"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# study


def study_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides of the four jobs: the size's defaults, --steps, then --set (which wins)."""
    overrides: dict[str, Any] = {}
    steps = args.steps
    if args.size == "small":
        steps = SMALL_STEPS if steps is None else steps
        every = max(1, steps // 4)
        overrides |= {**SMALL, "log_every": max(1, steps // 50), "eval_every": every, "checkpoint_every": every}
    if steps is not None:
        overrides["train_steps"] = steps
    overrides |= parse_overrides(args.overrides)
    for config in STUDY_ARMS[args.arms]:  # refuse a bad override before anything is submitted
        resolve_config(config, overrides)
    return overrides


def _answers(url: str) -> bool:
    """True when an IRED-DCD API answers /health at `url`."""
    try:
        return "mode" in httpx.get(f"{url}/health", timeout=HEALTH_SECONDS).json()
    except (httpx.HTTPError, ValueError):
        return False


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_server(settings: Settings, device: str | None) -> Iterator[str]:
    """`ired-dcd serve` (API and local worker) on a free port until the block ends; yields its URL.

    Its output goes to `data_dir/study-serve.log`. Stopped with SIGTERM, which stops its worker: runs
    still going resume from their checkpoints the next time the embedded server starts.
    """
    port = _free_port(settings.host)
    env = dict(os.environ, **({"IRED_DEVICE": device} if device else {}))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "study-serve.log"
    argv = [sys.executable, "-m", "ired_dcd", "serve", "--host", settings.host, "--port", str(port)]
    url = f"http://{settings.host}:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"started the embedded server at {url} (pid {process.pid}, log {log_path})", file=sys.stderr)
    try:
        _wait_until_ready(process, url, log_path)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Wait until the server's health check counts a worker; ValueError if it exits or takes too long."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ValueError(f"the embedded server exited with code {process.returncode}; see {log_path}")
        try:
            if (httpx.get(f"{url}/health", timeout=HEALTH_SECONDS).json().get("workers") or 0) >= 1:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise ValueError(f"the embedded server did not get ready in {SERVER_START_SECONDS:.0f} s; see {log_path}")


@contextmanager
def study_server(args: argparse.Namespace) -> Iterator[ResultsClient]:
    """A client of the named server, of the one at the settings' address, or of a temporary embedded one."""
    settings = get_settings()
    address = f"http://{settings.host}:{settings.port}"
    url = _server(args) or (address if _answers(address) else None)
    if url is not None:
        if args.device:
            raise ValueError(f"--device: the workers of the server at {url} choose their device (IRED_DEVICE)")
        print(f"using the server at {url}", file=sys.stderr)
        yield ResultsClient(url)
        return
    if not settings.embedded:
        raise ValueError(f"no server answers at {address}; pass --server URL (a lab server needs its API running)")
    with embedded_server(settings, args.device) as url:
        yield ResultsClient(url)


def _progress_line(jobs: Sequence[dict[str, Any]]) -> str:
    """`q201 succeeded · q202 running 40% · …` (running jobs in steps of 10%, so the line changes rarely)."""
    parts = []
    for job in jobs:
        done = sum(run["step"] for run in job["runs"])
        total = sum(run["total_steps"] for run in job["runs"]) or 1
        percent = f" {100 * done // total // 10 * 10}%" if job["state"] == State.RUNNING else ""
        parts.append(f"{job['config'].split('_')[0]} {job['state']}{percent}")
    return " · ".join(parts)


def follow_jobs(client: Client, job_ids: Sequence[int], *, poll: float) -> list[dict[str, Any]]:
    """Poll the jobs until all have ended, printing a progress line when it changes; returns them."""
    last = ""
    while True:
        jobs = [client.job(job_id) for job_id in job_ids]
        line = _progress_line(jobs)
        if line != last:
            print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", file=sys.stderr)
            last = line
        if all(job["state"] in TERMINAL for job in jobs):
            return jobs
        time.sleep(poll)


def _study(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    overrides = study_overrides(args)
    tag = args.tag or f"study-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    configs = STUDY_ARMS[args.arms]
    with study_server(args) as client:
        submitted = [client.submit(config, seeds, overrides=overrides, tags=[tag]) for config in configs]
        ids = [job["id"] for job in submitted]
        print(
            f"study {tag}: jobs {', '.join(map(str, ids))} ({args.size}, seeds {args.seeds}, "
            f"{resolve_config(configs[0], overrides).train_steps} steps) on {client.server}",
            file=sys.stderr,
        )
        try:
            jobs = follow_jobs(client, ids, poll=args.poll)
        except KeyboardInterrupt:
            print(
                f"interrupted: jobs {', '.join(map(str, ids))} stay queued and continue when a worker runs "
                f"(`ired-dcd cancel JOB` stops them)",
                file=sys.stderr,
            )
            return 130
        comparison = client.comparison(configs=",".join(configs), baseline=args.baseline, tag=tag)
    sys.stdout.write(render(comparison, "text"))
    trivial = trivial_predictors_line(comparison.metric)
    if trivial:
        print(f"  - {trivial}")
    # a diverged run is a finding the table reports; a failed or cancelled one is an error to look at
    failed = [job for job in jobs if job["state"] not in (State.SUCCEEDED, State.DIVERGED)]
    for job in failed:
        print(
            f"job {job['id']} ({job['config']}) ended {job['state']}: {job['error'] or 'no error recorded'}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def run_study(args: argparse.Namespace) -> int:
    """Run the study; exit 0 when every job ended with results (succeeded or diverged, both shown in the
    table), 1 when some failed or were cancelled, 2 on an error."""
    try:
        return _study(args)
    except (ValueError, OSError, ClientError) as error:
        return _fail("study", error)
