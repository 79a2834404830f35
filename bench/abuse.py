"""Abuse: issue 16's finding 1 replayed at larger scale, plus the import inputs of finding 2.

A database of its own on the Postgres server; `ired-dcd serve` (one API process, lab-server mode) on it.
Then, against that one process:

1. imports `--rows` results of one config (q203) through `POST /results/import`, at most
   IMPORT_MAX_ROWS per request, and the bad imports of finding 2 (a seed ≥ 2³¹, a NUL in a tag, a lone
   surrogate, JSON nested 100,000 deep, a repeated CSV column): each must be a 4xx;
2. `--clients` concurrent clients, each looping for `--seconds`: `GET /results/compare` under the
   issue's six spellings (`q203`, `Q-203`, `q203_dcd_replay`, `q203 `, `q203,q203`, `q201,q203`),
   comparisons that share nothing (other baselines, formats, metrics), the dashboard page, and
   unauthenticated `GET /health` pollers;
3. prints, per kind of request, the count, the 5xx, p50 and p99 latency; the dashboard page's size; the
   API process's peak RSS (the kernel's VmHWM) and its RSS at the end. Exit code 1 on any 5xx.

    python bench/abuse.py                           # 200,000 rows, 24 clients, 30 s
    python bench/abuse.py --rows 100000 --clients 48 --seconds 60
    python bench/abuse.py --uncached                 # the same with IRED_READ_CACHE=false (coalescing only)
    python bench/abuse.py --tiny                     # smoke form: 2,000 rows, 4 clients, 3 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from api_load import bench_database, seed, serving  # the database and server of the API load bench

from ired_core.input_rules import DB_INT_MAX, IMPORT_MAX_ROWS

SPELLINGS = ["q203", "Q-203", "q203_dcd_replay", "q203 ", "q203,q203", "q201,q203"]
"""The issue's six spellings: five of one comparison, one of another."""
DISTINCT = [
    {"configs": "q203", "baseline": "lab10"},
    {"configs": "q201,q203", "baseline": "tag:abuse"},
    {"configs": "q201,q203", "baseline": "ired_published"},
    {"configs": "q203", "metric": "val_mse_ood"},
    {"configs": "q203", "format": "csv"},
    {"configs": "q203", "format": "markdown"},
]
"""Comparisons of the same rows that share no cache entry: each costs a computation of its own."""
BAD_IMPORTS: list[tuple[str, str, bytes]] = [
    ("seed 2^31", "text/csv", f"config,seed,val_mse\nq203,{DB_INT_MAX + 1},0.0095\n".encode()),
    ("NUL in a tag", "text/csv", b"config,seed,val_mse,tags\nq203,0,0.0095,a\x00b\n"),
    ("lone surrogate", "application/json", b'[{"config": "q203", "seed": 0, "val_mse": 0.0095, "tags": ["\\ud800"]}]'),
    ("JSON 100,000 deep", "application/json", b"[" * 100_000 + b"]" * 100_000),
    ("repeated column", "text/csv", b"config,seed,val_mse,val_mse\nq203,0,0.0095,0.0096\n"),
    ("non-ASCII seed", "text/csv", "config,seed,val_mse\nq203,٣,0.0095\n".encode()),
]


def rss_mib(pid: int) -> tuple[float, float]:
    """(peak RSS, RSS now) of a process in MiB, from /proc (VmHWM is the kernel's high-water mark)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def import_rows(base: str, token: str, rows: int) -> tuple[float, list[int]]:
    """Import `rows` q203 results in requests of at most IMPORT_MAX_ROWS; (seconds, status codes)."""
    headers = {"Authorization": f"Bearer {token}", "content-type": "text/csv"}
    started, statuses = time.perf_counter(), []
    with httpx.Client(base_url=base, headers=headers, timeout=600) as http:
        for first in range(0, rows, IMPORT_MAX_ROWS):
            seeds = range(first, min(first + IMPORT_MAX_ROWS, rows))
            lines = (f"q203,{s},{0.0095 + (s % 997) * 1e-8!r},abuse\n" for s in seeds)
            body = "config,seed,val_mse,tags\n" + "".join(lines)
            response = http.post("/results/import", content=body.encode(), params={"source": "abuse"})
            statuses.append(response.status_code)
            if response.status_code != 200:
                print(f"  import of rows {first}…: {response.status_code} {response.text[:200]}", flush=True)
    return time.perf_counter() - started, statuses


def bad_imports(base: str, token: str) -> list[tuple[str, int, str]]:
    """Each bad document of finding 2: (what, status, the start of the answer)."""
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        for what, media_type, body in BAD_IMPORTS:
            response = http.post("/results/import", content=body, headers={"content-type": media_type})
            try:
                detail = str(response.json()["detail"])
            except (ValueError, KeyError, TypeError):
                detail = response.text
            out.append((what, response.status_code, detail[:90]))
    return out


def requests_of(kind: str, round_: int) -> tuple[str, dict[str, str], dict[str, str]]:
    """(path, query, headers) of a client's `round_`th request of `kind`."""
    if kind == "compare (6 spellings)":
        return "/results/compare", {"configs": SPELLINGS[round_ % len(SPELLINGS)]}, {}
    if kind == "compare (distinct)":
        return "/results/compare", DISTINCT[round_ % len(DISTINCT)], {}
    if kind == "dashboard":
        return "/", {}, {"Accept": "text/html"}  # the default page, as a browser opens it
    return "/health", {}, {}


KINDS = ("compare (6 spellings)", "compare (distinct)", "dashboard", "health (no token)")


async def storm(base: str, token: str, clients: int, seconds: float) -> dict[str, dict[str, Any]]:
    """`clients` closed-loop clients spread over KINDS for `seconds`; latency and status per kind."""
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, list[int]] = defaultdict(list)
    sizes: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as http:
        deadline = time.perf_counter() + seconds

        async def client(number: int) -> None:
            kind, round_ = KINDS[number % len(KINDS)], number
            auth = {} if kind.startswith("health") else {"Authorization": f"Bearer {token}"}
            while time.perf_counter() < deadline:
                path, query, headers = requests_of(kind, round_)
                start = time.perf_counter()
                try:
                    async with http.get(path, params=query, headers={**auth, **headers}) as response:
                        body = await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError):
                    status, body = 599, b""  # no answer: counted with the 5xx
                latencies[kind].append(time.perf_counter() - start)
                statuses[kind].append(status)
                sizes[kind] = max(sizes.get(kind, 0), len(body))
                round_ += len(KINDS)

        await asyncio.gather(*(client(i) for i in range(clients)))
    report = {}
    for kind in KINDS:
        ms = np.array(latencies[kind]) * 1000
        codes = statuses[kind]
        report[kind] = {
            "requests": len(codes),
            "5xx": sum(code >= 500 for code in codes),
            "4xx": sum(400 <= code < 500 for code in codes),
            "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
            "largest": sizes.get(kind, 0),
        }
    return report


def first_compare(base: str, token: str) -> tuple[float, int, dict[str, Any]]:
    """The first comparison of the imported rows (nothing cached yet): seconds, status, q203's row."""
    started = time.perf_counter()
    response = httpx.get(
        f"{base}/results/compare",
        params={"configs": "q203"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )
    seconds = time.perf_counter() - started
    rows = response.json().get("rows", []) if response.status_code == 200 else []
    return seconds, response.status_code, next((row for row in rows if row["name"] == "q203_dcd_replay"), {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="q203 results imported (default 200,000)")
    parser.add_argument("--clients", type=int, default=24, help="concurrent clients (default 24)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the storm (default 30)")
    parser.add_argument("--uncached", action="store_true", help="IRED_READ_CACHE=false: no cache, coalescing only")
    parser.add_argument("--tiny", action="store_true", help="smoke form: 2,000 rows, 4 clients, 3 s")
    args = parser.parse_args()
    if args.tiny:
        args.rows, args.clients, args.seconds = 2_000, 4, 3.0

    with tempfile.TemporaryDirectory(prefix="ired-abuse-") as tmp, bench_database() as url:
        token = seed(url, 0)  # users only: the comparison's rows all come from the imports below
        with serving(url, Path(tmp), 1, cached=not args.uncached) as served:
            base, pid = served.base, served.pid
            print(f"API process {pid}: RSS at start {rss_mib(pid)[1]:.0f} MiB", flush=True)
            seconds, statuses = import_rows(base, token, args.rows)
            print(f"imported {args.rows} rows in {len(statuses)} request(s), {seconds:.1f} s: {statuses}", flush=True)
            bad = bad_imports(base, token)
            print(f"API peak RSS after the imports {rss_mib(pid)[0]:.0f} MiB", flush=True)
            cold, cold_status, row = first_compare(base, token)
            print(f"first comparison of {row.get('n')} rows: {cold:.2f} s (HTTP {cold_status})", flush=True)
            report = asyncio.run(storm(base, token, args.clients, args.seconds))
            peak, now = rss_mib(pid)

    cache = "read cache off (IRED_READ_CACHE=false)" if args.uncached else "read cache on"
    print(f"\n{os.cpu_count()} CPUs, one API process, {cache}; {args.rows} q203 results imported;")
    print(f"{args.clients} clients for {args.seconds:g} s over: {', '.join(KINDS)}\n")
    print("| requests | count | 5xx | 4xx | p50 ms | p99 ms | largest answer bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, r in report.items():
        counts = f"{r['requests']} | {r['5xx']} | {r['4xx']}"
        print(f"| {kind} | {counts} | {r['p50']:.1f} | {r['p99']:.1f} | {r['largest']} |")
    print("\n| bad import | status | answer |")
    print("|---|---:|---|")
    for what, status, text in bad:
        print(f"| {what} | {status} | `{text}` |")
    errors = sum(r["5xx"] for r in report.values()) + sum(status >= 500 for _, status, _ in bad)
    errors += sum(status >= 500 for status in statuses) + (cold_status >= 500)
    print(f"\nimports {seconds:.1f} s; first comparison {cold:.2f} s")
    print(f"API peak RSS {peak:.0f} MiB, at the end {now:.0f} MiB")
    print(f"5xx answers: {errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
