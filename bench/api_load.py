"""API load: N concurrent clients on loopback against GET /jobs, GET /results/compare and POST /jobs.

A database of its own is created on the Postgres server and seeded with 10,000 succeeded runs (1,000
jobs of 10 seeds over Q-201…Q-204); `ired-dcd serve` runs on it in lab-server mode (tokens, the Redis
queue of its own). Each client sends its next request as soon as the previous one answered (closed
loop, no think time) for `--seconds` per endpoint; a client with `--think` seconds between requests
models a person or a dashboard polling instead. `--churn S` writes a run's heartbeat every S seconds
meanwhile, as training workers do: each write makes the server compute the job list again.

    python bench/api_load.py --clients 50                        # the issue's target: reads p99 < 100 ms
    python bench/api_load.py --clients 50 --baseline             # and against a server without the read cache
    python bench/api_load.py --clients 1 10 50 --seconds 10
    python bench/api_load.py --clients 50 --churn 0.1           # reads while 20 runs heartbeat every 2 s
    python bench/api_load.py --tiny                              # smoke form: 200 runs, 2 clients, 1 s, both

Prints a markdown table: requests, errors, throughput and p50/p99 latency per endpoint and client count;
with `--baseline`, a second table of ratios against the server without the read cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import psycopg
import redis
from sqlalchemy import create_engine, insert, make_url

from ired_core.configs import canonical_preset, config_hash, resolve_config
from ired_dcd.db import migrate
from ired_dcd.models import Job, Run, User, utcnow
from ired_dcd.services.change_feed import listen_url
from ired_dcd.services.users import hash_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the process helpers live with the tests
from tests.utils.services import IRED_DCD, ServiceProcess, free_port, wait_for

POSTGRES_ADMIN_URL = os.environ.get("IRED_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IRED_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CONFIGS = ("q201", "q202", "q203", "q204")
SEEDS_PER_JOB = 10
TINY_JOB = {"train_steps": 40, "batch_size": 16, "hidden_dim": 32, "time_dim": 16, "rank": 4, "val_size": 64}
ENDPOINTS = {
    "GET /jobs": ("GET", "/jobs", None),
    "GET /results/compare": ("GET", "/results/compare", None),
    "POST /jobs": ("POST", "/jobs", {"config": "q204", "seeds": [0], "overrides": TINY_JOB}),
}


@contextmanager
def bench_database() -> Iterator[str]:
    """An empty, migrated database `ired_bench_<random>` on the Postgres server, dropped at the end."""
    name = f"ired_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
            url_text = url.render_as_string(hide_password=False)
            migrate(url_text)
            yield url_text
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str, runs: int) -> str:
    """`runs` succeeded runs (jobs of SEEDS_PER_JOB seeds, the four plan configs); returns a user's token."""
    token = f"ired_bench-{uuid.uuid4().hex}"
    engine = create_engine(url)
    rng = np.random.default_rng(0)
    now = utcnow()
    with engine.begin() as connection:
        owners = [
            connection.execute(
                insert(User)
                .values(name=f"user{i}", is_admin=False, token_hash=hash_token(token) if i == 0 else None)
                .returning(User.id)
            ).scalar_one()
            for i in range(5)
        ]
        resolved = {name: resolve_config(name) for name in CONFIGS}
        jobs = []
        for i in range(max(1, runs // SEEDS_PER_JOB)):
            name = CONFIGS[i % len(CONFIGS)]
            cfg = resolved[name]
            jobs.append(
                {
                    "preset": canonical_preset(name),
                    "overrides": {},
                    "config": cfg.model_dump(),
                    "config_hash": config_hash(cfg),
                    "seeds": list(range(SEEDS_PER_JOB)),
                    "executor": "celery",
                    "priority": 5,
                    "owner_id": owners[i % len(owners)],
                    "state": "succeeded",
                    "created_at": now,
                    "updated_at": now,
                    "started_at": now,
                    "finished_at": now,
                }
            )
        job_ids = connection.execute(insert(Job).returning(Job.id), jobs).scalars().all()
        rows = []
        for job_id, job in zip(job_ids, jobs, strict=True):
            for seed_ in job["seeds"]:
                value = float(0.0096 + 0.0001 * rng.standard_normal())
                rows.append(
                    {
                        "job_id": job_id,
                        "seed": seed_,
                        "state": "succeeded",
                        "step": 100_000,
                        "total_steps": 100_000,
                        "attempts": 1,
                        "final_metrics": {"val_mse": value, "val_mse_x0": value, "val_mse_ood": 20 * value},
                        "created_at": now,
                        "started_at": now,
                        "finished_at": now,
                    }
                )
        connection.execute(insert(Run), rows)
    engine.dispose()
    return token


@contextmanager
def churn(url: str, every: float) -> Iterator[None]:
    """Every `every` seconds (0: never), a heartbeat of the newest run, on a connection of its own."""
    stop = threading.Event()

    def beat() -> None:
        with psycopg.connect(str(listen_url(url)), autocommit=True) as db:
            while not stop.wait(every):
                db.execute("UPDATE runs SET heartbeat_at = now() WHERE id = (SELECT max(id) FROM runs)")

    thread = threading.Thread(target=beat, daemon=True)
    if every > 0:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if every > 0:
            thread.join()


@dataclass(frozen=True)
class Served:
    """A running `ired-dcd serve`: where it answers and its process id (the API process when workers=1)."""

    base: str
    pid: int


@contextmanager
def serving(
    url: str, tmp: Path, workers: int, *, cached: bool, env_extra: dict[str, str] | None = None
) -> Iterator[Served]:
    """`ired-dcd serve --workers N` on a free port, on `url` and a Redis queue of its own (deleted at the
    end); `cached`: the read cache on (the default) or off (`IRED_READ_CACHE=false`); `env_extra`: more
    settings."""
    port, queue = free_port(), f"ired-bench-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IRED_")},
        "DATABASE_URL": url,
        "BROKER_URL": REDIS_URL,
        "IRED_QUEUE": queue,
        "IRED_DATA_DIR": str(tmp),
        "IRED_PORT": str(port),
        "IRED_READ_CACHE": str(cached).lower(),
        # every POST /jobs of the load leaves a queued job (no worker): the default quota would refuse the 51st
        "IRED_QUOTA_QUEUED_JOBS": "1000000000",
        **(env_extra or {}),
    }
    log_path = tmp / f"serve-{port}.log"
    process = ServiceProcess([*IRED_DCD, "serve", "--workers", str(workers)], env=env, log_path=log_path)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=120, what="ired-dcd serve")
        yield Served(base, process.pid)
    finally:
        process.stop()
        broker = redis.Redis.from_url(REDIS_URL)
        keys = broker.keys(f"{queue}*")
        if keys:
            broker.delete(*keys)


async def load(base: str, token: str, endpoint: str, clients: int, seconds: float, think: float) -> dict[str, Any]:
    """Run `clients` concurrent clients against `endpoint` for `seconds`; latencies of answered requests.

    The clients are aiohttp's, one keep-alive connection each: httpx's pool, not the server, is the
    bottleneck beyond a few concurrent clients (it served a trivial endpoint 5× slower at 50 than at 1).
    """
    method, path, body = ENDPOINTS[endpoint]
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers, timeout=timeout) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with http.request(method, path, json=body) as response:
                    await response.read()
                latencies.append(time.perf_counter() - start)
                errors += response.status >= 400
                if think:
                    await asyncio.sleep(think)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "mean": statistics.fmean(ms),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[50], help="concurrent clients (default 50)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per endpoint and client count (default 15)")
    parser.add_argument("--think", type=float, default=0.0, help="seconds a client waits between requests")
    parser.add_argument("--churn", type=float, default=0.0, help="seconds between run heartbeats (default: none)")
    parser.add_argument("--runs", type=int, default=10_000, help="succeeded runs seeded (default 10,000)")
    parser.add_argument("--server-workers", type=int, default=1, help="API processes (ired-dcd serve --workers)")
    parser.add_argument("--endpoint", choices=list(ENDPOINTS), action="append", help="only these (repeatable)")
    parser.add_argument(
        "--baseline", action="store_true", help="also measure a server without the read cache; print the ratios"
    )
    parser.add_argument("--tiny", action="store_true", help="smoke form: 200 runs, 2 clients, 1 s each")
    args = parser.parse_args()
    if args.tiny:
        args.runs, args.clients, args.seconds, args.baseline = 200, [2], 1.0, True

    modes = ("cached", "uncached") if args.baseline else ("cached",)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ired-load-") as tmp, bench_database() as url, ExitStack() as stack:
        started = time.perf_counter()
        token = seed(url, args.runs)
        print(f"seeded {args.runs} runs in {time.perf_counter() - started:.1f} s", flush=True)
        bases = {
            mode: stack.enter_context(serving(url, Path(tmp), args.server_workers, cached=mode == "cached")).base
            for mode in modes
        }
        stack.enter_context(churn(url, args.churn))
        for endpoint in args.endpoint or list(ENDPOINTS):  # both servers read before either writes
            for mode, base in bases.items():
                for clients in args.clients:
                    asyncio.run(load(base, token, endpoint, clients, min(2.0, args.seconds), args.think))  # warm-up
                    result = asyncio.run(load(base, token, endpoint, clients, args.seconds, args.think))
                    rows.append((endpoint, mode, clients, result))
                    print(f"{endpoint} × {clients} ({mode}): p99 {result['p99']:.0f} ms", flush=True)

    think = f", {args.think:g} s think time" if args.think else ", closed loop"
    think += f", a run heartbeat every {args.churn:g} s" if args.churn else ""
    print(
        f"\n{os.cpu_count()} CPUs, {args.server_workers} API process(es), {args.runs} runs in the database{think}, "
        f"{args.seconds:g} s per row\n"
    )
    print("| endpoint | reads | clients | requests | errors | req/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for endpoint, mode, clients, r in rows:
        print(
            f"| {endpoint} | {mode} | {clients} | {r['requests']} | {r['errors']} | {r['throughput']:.0f} "
            f"| {r['p50']:.1f} | {r['p99']:.1f} |"
        )
    if args.baseline:
        print("\n| endpoint | clients | req/s cached ÷ uncached | p99 uncached ÷ cached |")
        print("|---|---:|---:|---:|")
        by_key = {(endpoint, mode, clients): r for endpoint, mode, clients, r in rows}
        for endpoint, mode, clients, cached in rows:
            if mode == "cached":
                uncached = by_key[(endpoint, "uncached", clients)]
                print(
                    f"| {endpoint} | {clients} | {cached['throughput'] / uncached['throughput']:.1f}× "
                    f"| {uncached['p99'] / cached['p99']:.1f}× |"
                )
    return 0 if all(r["errors"] == 0 for *_, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
