"""Helpers for tests against the single-node SLURM that `.ci/slurm-setup.sh` starts."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable


def cluster_problem() -> str | None:
    """Why the local SLURM cannot run jobs (the reason to skip), or None when it can."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (no sinfo): run .ci/slurm-setup.sh as root"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: is slurmctld up? run .ci/slurm-setup.sh"
    if done.returncode != 0:
        return f"SLURM is not up ({done.stderr.strip()}): run .ci/slurm-setup.sh as root"
    if not {"idle", "mixed", "allocated", "completing"} & set(done.stdout.split()):
        return f"no usable SLURM node (sinfo states: {done.stdout.split()}): run .ci/slurm-setup.sh"
    return None


def cancel_leftovers(job_ids: Iterable[str]) -> None:
    """scancel the SLURM jobs that still wait or run (what a failed test left behind)."""
    for job_id in job_ids:
        waiting = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-t", "PD,R", "-o", "%i"], capture_output=True, timeout=30
        )
        if waiting.stdout.strip():
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
