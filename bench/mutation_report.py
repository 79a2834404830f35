"""Per-module scores of the last mutmut run (bench/mutation.sh), read from mutmut's files under mutants/.

A mutant counts as killed when a test failed or it timed out (a mutation that makes a loop endless is
caught); the score is killed / mutants run. Modules the last run did not cover are left out.

    python bench/mutation_report.py [--survivors] [MODULE ...]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MODULES = ("losses", "filters", "replay", "samplers", "schedule", "trainer")
KILLED = ("killed", "timeout")


def statuses(module: str) -> dict[str, str]:
    """{mutant name: status} of the mutants of ired_core/<module>.py that the last run checked."""
    meta = Path("mutants/ired_core") / f"{module}.py.meta"
    if not meta.exists():
        return {}
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in exit_codes.items() if code is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)}; default: all six")
    parser.add_argument("--survivors", action="store_true", help="also list every mutant that was not killed")
    args = parser.parse_args()
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown modules {sorted(unknown)}; valid: {', '.join(MODULES)}")
    results = {module: statuses(module) for module in args.modules or MODULES}
    results = {module: found for module, found in results.items() if found}
    if not results:
        raise SystemExit("no results: run bench/mutation.sh first")
    total: Counter[str] = Counter()
    print(f"{'module':<10} {'killed':>7} {'total':>6} {'score':>6}   survived  timeout  other")
    for module, found in results.items():
        counts = Counter(found.values())
        total.update(counts)
        _row(module, counts)
    if len(results) > 1:
        _row("all", total)
    if args.survivors:
        for found in results.values():
            for name, status in sorted(found.items()):
                if status not in KILLED:
                    print(f"{status:<10} {name}")


def _row(label: str, counts: Counter[str]) -> None:
    killed, total = sum(counts[s] for s in KILLED), sum(counts.values())
    other = total - killed - counts["survived"]  # no tests, suspicious, segfault: each worth a look
    print(
        f"{label:<10} {killed:>7} {total:>6} {killed / total:>6.1%}   {counts['survived']:>8}"
        f"  {counts['timeout']:>7}  {other:>5}"
    )


if __name__ == "__main__":
    main()
