"""Helpers for tests that run the real service: tiny jobs, waiting, worker and server processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# a job a 2-core CPU trains in about a second; more steps for jobs that must still be running
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)
"""A fresh connection per request: a test that pauses longer than uvicorn's keep-alive (5 s) could send on
a connection the server is closing at that moment, and read 'connection reset by peer'."""

TINY: dict[str, Any] = {
    "train_steps": 40,
    "batch_size": 16,
    "hidden_dim": 32,
    "time_dim": 16,
    "rank": 4,
    "val_size": 64,
    "eval_batch_size": 64,
    "eval_every": 20,
    "log_every": 5,
    "checkpoint_every": 10,
    "sampler_steps": 2,
    "replay_size": 64,
}
LONG_STEPS = 1_000_000  # a job that only ends when cancelled
# A job that runs out of memory under ADDRESS_SPACE: step 1 is trained and logged, then the first
# evaluation (step 2) allocates 33 GB for a held-out set of 10⁶ rank-64 problems, and fails thus.
TOO_BIG: dict[str, Any] = {"rank": 64, "val_size": 1_000_000, "eval_every": 2, "log_every": 1}
TOO_BIG_ALLOCATION = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 32768000000 bytes"
ADDRESS_SPACE = 4 << 30  # bytes, for a worker or SLURM task; one training a tiny job peaks near 0.8 GiB

IRED_DCD = [sys.executable, "-m", "ired_dcd"]  # the `ired-dcd` command of this interpreter
SERVICE_ENV_KEYS = ("DATABASE_URL", "IRED_DATABASE_URL", "BROKER_URL", "IRED_BROKER_URL", "CELERY_BROKER_URL")


def tiny(**changes: Any) -> dict[str, Any]:
    return {**TINY, **changes}


def job_body(config: str = "q204", seeds: Any = (0, 1), **changes: Any) -> dict[str, Any]:
    """A POST /jobs body for a tiny job."""
    return {"config": config, "seeds": list(seeds), "overrides": tiny(**changes)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Call `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


async def wait_for_async(check: Callable[[], Awaitable[object]], *, timeout: float, what: str) -> None:
    """`wait_for` inside an event loop: await `check()` until it is truthy, letting other tasks run between."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


def follow_states(
    get_job: Callable[[], dict[str, Any]], *, until: Callable[[dict[str, Any]], bool], timeout: float
) -> tuple[list[str], dict[str, Any]]:
    """Poll a job, recording each distinct state it shows, until `until(job)`; returns (states, job)."""
    states: list[str] = []
    job: dict[str, Any] = {}

    def check() -> bool:
        nonlocal job
        job = get_job()
        if not states or states[-1] != job["state"]:
            states.append(job["state"])
        return until(job)

    wait_for(check, timeout=timeout, what=f"job state (seen {states})", interval=0.05)
    return states, job


def ended(job: Mapping[str, Any]) -> bool:
    return job["state"] in {"succeeded", "failed", "cancelled", "diverged"}


class ServiceProcess:
    """A subprocess in its own process group with its output in a log file; stopped by its pid."""

    def __init__(self, argv: list[str], *, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            argv, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout: float) -> None:
        def check() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"process exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            return text in self.log()

        wait_for(check, timeout=timeout, what=f"{text!r} in {self.log_path.name}", interval=0.2)

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool processes), as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait; SIGKILL the group if it does not exit in time. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def worker_process(
    env: Mapping[str, str], log_path: Path, name: str, *, address_space: int | None = None
) -> ServiceProcess:
    """`ired-dcd worker --name NAME`: a real Celery worker with one training process.

    `address_space` (bytes) limits the virtual memory of the worker and its training process
    (RLIMIT_AS, set by `prlimit`): an allocation beyond it fails as it would on a machine without the memory.
    """
    limit = ["prlimit", f"--as={address_space}", "--"] if address_space is not None else []
    worker = ServiceProcess([*limit, *IRED_DCD, "worker", "--name", name], env=env, log_path=log_path)
    worker.wait_for_log(" ready.", timeout=60)
    return worker


def server_process(env: Mapping[str, str], log_path: Path, port: int) -> tuple[ServiceProcess, httpx.Client]:
    """`ired-dcd serve` on `port`, waited for until its health check sees a worker."""
    server = ServiceProcess([*IRED_DCD, "serve", "--port", str(port)], env=env, log_path=log_path)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=NO_KEEPALIVE)

    def healthy() -> bool:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited ({server.process.returncode}):\n{server.log()[-3000:]}")
        try:
            body = http.get("/health").json()
        except httpx.HTTPError:
            return False
        return (body.get("workers") or 0) >= 1  # None while its broker does not answer yet

    wait_for(healthy, timeout=90, what="the embedded server and its worker", interval=0.5)
    return server, http


def postgres_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (initdb, pg_ctl), or None."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return binaries[-1].parent if binaries else None


def private_services_problem() -> str | None:
    """Why this machine cannot start a Postgres and a Redis of a test's own, or None when it can."""
    if postgres_binaries() is None:
        return "no pg_ctl under /usr/lib/postgresql/*/bin for a private Postgres (apt-get install postgresql)"
    if shutil.which("redis-server") is None:
        return "no redis-server on PATH for a private Redis (apt-get install redis-server)"
    return None


class PrivateRedis:
    """A redis-server of its own on a free port (no persistence), for tests that flush or stop it."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.server = ServiceProcess(argv, env=os.environ, log_path=folder / f"redis-{self.port}.log")
        self.server.wait_for_log("Ready to accept connections", timeout=30)

    def stop(self) -> None:
        self.server.kill()


class PrivatePostgres:
    """A Postgres cluster of its own (initdb, trust auth, fsync off) on a free port, for tests that stop it.

    As root, the cluster runs as the `postgres` user in a folder under /tmp owned by it.
    """

    def __init__(self) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise FileNotFoundError("no pg_ctl under /usr/lib/postgresql/*/bin")
        self.bin = binaries
        self.user = "postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="ired-pg-"))
        if self.user is not None:
            shutil.chown(self.folder, self.user)
        self.data, self.port = self.folder / "data", free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], check=True, capture_output=True, user=self.user, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        """A fast shutdown, as an administrator's restart does: open connections are cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
