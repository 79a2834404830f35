"""What an array task runs on the compute node: `run_slurm_task`, which calls the job's entry function.

Preemption and time limits: jobs are submitted with `--requeue`, so SLURM requeues preempted tasks and
tasks on failed nodes by itself. `--signal=USR2@signal_seconds` warns a task before its time limit;
`run_slurm_task` then asks the entry function to stop (it checkpoints), requeues the task with
`scontrol requeue` and exits; the requeued task runs the same entry again, which resumes from its
checkpoint.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import submitit


def resolve_entry(entry: str) -> Callable[..., Any]:
    """'package.module:function' → the function; ValueError when it does not resolve to a callable."""
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"entry {entry!r}: expected 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"entry {entry!r}: cannot import {module_name} ({error})") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"entry {entry!r}: {module_name} has no attribute {attr}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"entry {entry!r}: not callable")
    return target


class _StopRequest:
    """Signal handler that records the first stop signal; `requested` is the entry's `should_stop`."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None


def _time_limit_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before the time limit (`--signal=USR2@...`)."""
    return signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]


def run_slurm_task(
    job_id: int, seed_group: list[int], entry: str, out_dir: str, options: Mapping[str, Any] | None = None
) -> Any:
    """One array task: call `entry(job_id=, seeds=, out_dir=, should_stop=, **options)` and return its result.

    The entry trains `seeds` into `out_dir` (resuming from a checkpoint there if present) and polls
    `should_stop()`; when it turns True it checkpoints and returns. SIGTERM (preemption, scancel) and
    the time-limit warning both set it. After a time-limit warning this task requeues itself; after
    either signal it exits without a result, so nothing reads a stopped task as finished.
    """
    function = resolve_entry(entry)
    stop = _StopRequest()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(_time_limit_signal(), stop)
    result = function(
        job_id=job_id, seeds=list(seed_group), out_dir=out_dir, should_stop=stop.requested, **dict(options or {})
    )
    if stop.signum is None:
        return result
    if stop.signum == _time_limit_signal():
        task = os.environ["SLURM_JOB_ID"]
        subprocess.run(["scontrol", "requeue", task], check=True, timeout=60)
        raise SystemExit(f"time limit near: checkpointed and requeued SLURM job {task}")
    raise SystemExit("stopped by SIGTERM (preemption or cancel); SLURM decides whether it runs again")
