"""Fault injection in a loop: kill -9 a worker mid-run, FLUSHALL Redis with jobs queued, stop and start
Postgres during a run — each `--repeat` times, on a Postgres cluster and a redis-server of its own (the
shared ones are never touched). Prints how many faults were injected and what was lost (must be 0).

    python bench/faults.py --repeat 5                    # every fault, 5 times each
    python bench/faults.py --repeat 2 --fault flush-redis

Needs Debian's postgresql (initdb, pg_ctl under /usr/lib/postgresql/*/bin) and redis-server; the
scenarios are tests/utils/faults.py, the same ones tests/worker/test_service_faults.py runs once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenarios live with the tests

from tests.utils import faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="injections of each fault (default 3)")
    parser.add_argument("--fault", choices=list(faults.SCENARIOS), action="append", help="only these (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    chosen = args.fault or list(faults.SCENARIOS)

    rows = []
    with tempfile.TemporaryDirectory(prefix="ired-faults-") as tmp, faults.private_lab(Path(tmp)) as private:
        for name in chosen:
            injected = runs = 0
            lost: list[str] = []
            started = time.monotonic()
            for round_ in range(1, args.repeat + 1):
                outcome = faults.SCENARIOS[name](private)
                injected, runs, lost = injected + outcome.injected, runs + outcome.runs, lost + outcome.lost
                print(f"{outcome.fault}: round {round_}/{args.repeat}, lost {len(outcome.lost)}", flush=True)
                for line in outcome.lost:
                    print(f"  lost: {line}")
            rows.append((outcome.fault, injected, runs, len(lost), time.monotonic() - started))

    print()
    print("| fault | injected | runs | lost | seconds |")
    print("|---|---:|---:|---:|---:|")
    for fault, injected, runs, lost_count, seconds in rows:
        print(f"| {fault} | {injected} | {runs} | {lost_count} | {seconds:.0f} |")
    total_lost = sum(row[3] for row in rows)
    print(f"\n{sum(row[1] for row in rows)} fault(s) injected, {total_lost} thing(s) lost")
    return 0 if total_lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
