"""The cluster as the server sees it: submit array jobs (submitit), find them by name, follow their
states, cancel them. Pure apart from `subprocess` calls to the SLURM client tools and submitit's pickles
on the shared filesystem: no database, so the job service wraps it (`ired_dcd.services.slurm_jobs`) and
tests can use it alone.

How job state is tracked (decision)
-----------------------------------
submitit's own watcher polls `sacct`, which answers only where accounting storage (slurmdbd) runs.
Real clusters almost always run it, and `sacct` is the one source that still knows a job's final
state hours later and does not load the controller, so `state_source="auto"` uses it whenever it
works. Without accounting (`sacct` fails) the executor polls `squeue --me` (one call for all live
jobs), then `scontrol show job` for jobs that just left the queue (slurmctld keeps them for
MinJobAge), then submitit's result file in the job folder. Both paths run against the local
single-node cluster in CI (`.ci/slurm-setup.sh` starts slurmdbd on MariaDB); tests force each one.
Polling is batched (one command round for every requested task), rate limited (at most one round per
`poll_interval_s`) and cached (succeeded, failed and cancelled are never asked again).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import submitit
from pydantic import BaseModel, Field
from submitit.core.utils import FailedJobError, FailedSubmissionError, JobPaths, pickle_load

from ired_core.input_rules import check_seeds
from ired_dcd.slurm.node import resolve_entry, run_slurm_task
from ired_dcd.slurm.settings import ArrayMode, SlurmSettings, mem_option
from ired_dcd.slurm.states import RunStateChange, map_slurm_state
from ired_dcd.states import State

StatusSource = Literal["sacct", "squeue", "scontrol", "result_file", "submitted", "lost"]


class SlurmError(RuntimeError):
    """A SLURM client command failed."""


@dataclass(frozen=True)
class TaskResult:
    """What submitit wrote when a task finished: the entry's return value or the error's traceback."""

    ok: bool
    value: Any


def read_task_result(folder: str | Path, task_id: str) -> TaskResult | None:
    """The result submitit pickled for `task_id` ('1234_0') in `folder`, or None while there is none."""
    path = JobPaths(folder, job_id=task_id).result_pickle
    if not path.exists():
        return None
    outcome, value = pickle_load(path)
    return TaskResult(ok=outcome == "success", value=value)


class SlurmSubmission(BaseModel):
    """One submitted job: store it with the job to poll, cancel and read results after a restart."""

    job_id: int
    slurm_job_id: str = Field(description="the array's id: cancel it to cancel every task")
    task_ids: list[str] = Field(description="one per seed group, e.g. '1234_0'")
    seed_groups: list[list[int]]
    folder: str = Field(description="submitit pickles and logs of this job")


@dataclass(frozen=True)
class SlurmTaskStatus:
    """The latest known state of one task."""

    task_id: str
    slurm_state: str
    change: RunStateChange
    source: StatusSource


def seed_groups(seeds: Sequence[int], array_mode: ArrayMode) -> list[list[int]]:
    """How seeds are split over array tasks."""
    seeds = check_seeds(seeds)
    return [[s] for s in seeds] if array_mode == "per_seed" else [list(seeds)]


def submission_folder(settings: SlurmSettings, job_id: int, out_dir: str | Path) -> Path:
    """Where submitit keeps a job's pickles and task logs: `<log_dir>/job_<id>`, else `<out_dir>/slurm`."""
    base = Path(settings.log_dir) / f"job_{job_id}" if settings.log_dir else Path(out_dir) / "slurm"
    return base.expanduser().absolute()


def submitit_parameters(settings: SlurmSettings, job_name: str) -> dict[str, Any]:
    """`submitit.SlurmExecutor.update_parameters` arguments for these settings."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": settings.time_minutes,
        "cpus_per_task": settings.cpus_per_task,
        "signal_delay_s": settings.signal_seconds,
        "array_parallelism": settings.max_parallel,
        "additional_parameters": {"requeue": True, **settings.sbatch_options()},
    }
    optional = {
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "gpus_per_task": settings.gpus_per_task or None,
        "mem": mem_option(settings.mem_gb) if settings.mem_gb else None,
        "setup": settings.setup_commands or None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


_ARRAY_RANGE = re.compile(r"(\d+)_\[([0-9,-]+)(?:%\d+)?\]")
_TASK_ID = re.compile(r"\d+(?:_\d+)?")
_LOST_AFTER_S = 120.0  # a task unknown everywhere this long after submission is lost


def _expand_task_ids(job_id: str) -> tuple[list[str], bool]:
    """'12_[0-2,5%2]' → (['12_0', '12_1', '12_2', '12_5'], True); '12_3' → (['12_3'], False)."""
    match = _ARRAY_RANGE.fullmatch(job_id)
    if match:
        ids = []
        for part in match[2].split(","):
            lo, _, hi = part.partition("-")
            ids += [f"{match[1]}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
        return ids, True
    return ([job_id], False) if _TASK_ID.fullmatch(job_id) else ([], False)


def _collect(records: Iterable[tuple[str, str]]) -> dict[str, str]:
    """(job id, state) records → state per task id; a task's own record beats a pending range's."""
    from_ranges: dict[str, str] = {}
    explicit: dict[str, str] = {}
    for job_id, state in records:
        ids, is_range = _expand_task_ids(job_id)
        for task_id in ids:
            (from_ranges if is_range else explicit)[task_id] = state
    return {**from_ranges, **explicit}


def parse_pipe_table(text: str) -> dict[str, str]:
    """`sacct -n -P -o JobID,State` or `squeue -h -o '%i|%T'` output → state per task id."""
    records = []
    for line in text.splitlines():
        job_id, sep, state = line.strip().partition("|")
        if sep and "." not in job_id:
            records.append((job_id, state.split("|")[0]))
    return _collect(records)


def parse_scontrol(text: str) -> dict[str, str]:
    """`scontrol -o show job <id>` output (one line per record) → state per task id."""
    records = []
    for line in text.splitlines():
        state = re.search(r"\bJobState=(\S+)", line)
        job = re.match(r"JobId=(\d+)", line)
        if not state or not job:
            continue
        array_job = re.search(r"\bArrayJobId=(\d+)", line)
        array_task = re.search(r"\bArrayTaskId=(\S+)", line)
        if array_job and array_task:
            records.append((f"{array_job[1]}_[{array_task[1]}]", state[1]))
        else:
            records.append((job[1], state[1]))
    return _collect(records)


def _array_id(task_id: str) -> str:
    return task_id.split("_", 1)[0]


def _check_task_id(task_id: str) -> str:
    """Only '1234' or '1234_5' reach a SLURM command line ('--me' would make scancel cancel everything)."""
    if not _TASK_ID.fullmatch(task_id):
        raise ValueError(f"SLURM job id {task_id!r}: expected '1234' or '1234_5'")
    return task_id


_JOB_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def _check_job_name(name: str) -> str:
    """Only plain names reach a SLURM command line."""
    if not _JOB_NAME.fullmatch(name):
        raise ValueError(f"SLURM job name {name!r}: letters, digits and _ . - only")
    return name


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlurmError(f"{shlex.join(command)}: {error}") from None


class SlurmExecutor:
    """Submits jobs as SLURM arrays through submitit; polls and cancels them without hammering SLURM."""

    def __init__(
        self,
        settings: SlurmSettings,
        *,
        run: Callable[[list[str]], subprocess.CompletedProcess[str]] = _run,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._run = run
        self._clock = clock
        self._cache: dict[str, tuple[float, SlurmTaskStatus]] = {}
        self._last_round = -float("inf")
        self._folders: dict[str, Path] = {}
        self._tracked_since: dict[str, float] = {}
        self._sacct_works: bool | None = None

    def submit(
        self,
        job_id: int,
        seeds: Sequence[int],
        *,
        entry: str,
        out_dir: str | Path,
        overrides: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> SlurmSubmission:
        """Submit one array task per seed group, each calling `run_slurm_task(job_id, group, entry, ...)`.

        `overrides`: the job's SlurmSettings overrides; `options`: extra keyword arguments for the
        entry (picklable). `out_dir` must be on the shared filesystem. `name`: the SLURM job name
        (default `ired-job<id>`), by which `find` looks the submission up again. ValueError on bad
        settings, seeds or entry; SlurmError when sbatch fails.
        """
        settings = self.settings.merged(overrides)
        resolve_entry(entry)  # fail here, not on the node
        groups = seed_groups(seeds, settings.array_mode)
        folder = submission_folder(settings, job_id, out_dir)
        executor = submitit.SlurmExecutor(folder=folder, python=settings.python)
        job_name = _check_job_name(name) if name else f"ired-job{job_id}"
        executor.update_parameters(**submitit_parameters(settings, job_name=job_name))
        args = (entry, str(Path(out_dir).expanduser().absolute()), dict(options or {}))
        try:
            with executor.batch():
                jobs = [executor.submit(run_slurm_task, job_id, group, *args) for group in groups]
        except (FailedJobError, FailedSubmissionError) as error:
            raise SlurmError(f"sbatch failed: {error}") from None
        task_ids = [job.job_id for job in jobs]
        submission = SlurmSubmission(
            job_id=job_id,
            slurm_job_id=_array_id(task_ids[0]),
            task_ids=task_ids,
            seed_groups=groups,
            folder=str(folder),
        )
        self.track(submission)
        return submission

    def find(self, name: str) -> list[str]:
        """The task ids ('1234_0', …, or '1234') of the newest job submitted under the job name `name`,
        waiting, running or ended; [] when SLURM never had one. SlurmError when SLURM does not answer.

        squeue (`-t all`) knows every job slurmctld still holds, ended ones included for MinJobAge
        (300 s by default); sacct (with accounting) also the older ones. Both are asked: accounting may
        lag seconds behind slurmctld, so a job that ended just now can be missing from sacct. Without
        accounting, a job that ended more than MinJobAge ago is forgotten: [].
        """
        _check_job_name(name)
        known: dict[str, str] = {}
        if self._uses_sacct():
            command = ["sacct", "-n", "-P", "-X", "-S", "now-7days", "--name", name, "-o", "JobID,State"]
            known.update(parse_pipe_table(self._output(command)))
        squeue = ["squeue", "--me", "--array", "-h", "-t", "all", "-n", name, "-o", "%i|%T"]
        known.update(parse_pipe_table(self._output(squeue)))
        newest = max((_array_id(task) for task in known), key=int, default=None)
        tasks = [task for task in known if _array_id(task) == newest]
        return sorted(tasks, key=lambda task: [int(part) for part in task.split("_")])

    def track(self, submission: SlurmSubmission) -> None:
        """Poll this submission's tasks (call for stored submissions after a server restart)."""
        now = self._clock()
        for task_id in submission.task_ids:
            self._folders[task_id] = Path(submission.folder)
            self._tracked_since.setdefault(task_id, now)

    def status(self, task_ids: Iterable[str]) -> dict[str, SlurmTaskStatus]:
        """Latest state of each task ('1234_0'); one batched round of queries at most per poll interval.

        A task missing from the answer has not been polled yet (asked within the interval of the last
        round). Succeeded, failed and cancelled are cached for good (a requeue-type failure is asked
        again: SLURM may still put the task back). SlurmError when SLURM does not answer.
        """
        ids = [_check_task_id(task_id) for task_id in dict.fromkeys(task_ids)]
        now = self._clock()
        for task_id in ids:
            self._tracked_since.setdefault(task_id, now)
        stale = [task_id for task_id in ids if not self._fresh(task_id, now)]
        if stale and now - self._last_round >= self.settings.poll_interval_s:
            self._last_round = now
            for task_status in self._query(stale, now):
                self._cache[task_status.task_id] = (now, task_status)
        return {task_id: self._cache[task_id][1] for task_id in ids if task_id in self._cache}

    def cancel(self, slurm_job_id: str) -> None:
        """scancel an array ('1234', every task) or one task ('1234_0'); a finished job is no error."""
        self._output(["scancel", _check_task_id(slurm_job_id)])
        for task_id in list(self._cache):
            if task_id == slurm_job_id or _array_id(task_id) == slurm_job_id:
                del self._cache[task_id]
        self._last_round = -float("inf")  # the next status() asks SLURM again

    def _fresh(self, task_id: str, now: float) -> bool:
        cached = self._cache.get(task_id)
        if cached is None:
            return False
        fetched_at, task_status = cached
        settled = task_status.change.final and not task_status.change.requeue
        return settled or now - fetched_at < self.settings.poll_interval_s

    def _uses_sacct(self) -> bool:
        source = self.settings.state_source
        if source != "auto":
            return source == "sacct"
        if self._sacct_works is None:
            self._sacct_works = self._run(["sacct", "-n", "-X", "-o", "JobID", "-j", "1"]).returncode == 0
        return self._sacct_works

    def _query(self, ids: list[str], now: float) -> list[SlurmTaskStatus]:
        # 1. SLURM's own record: sacct, or squeue then scontrol for jobs that just left the queue
        found: dict[str, tuple[str, StatusSource]] = {}
        arrays = sorted({_array_id(i) for i in ids}, key=int)
        if self._uses_sacct():
            command = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)]
            found.update((k, (v, "sacct")) for k, v in parse_pipe_table(self._output(command)).items())
        else:
            live = parse_pipe_table(self._output(["squeue", "--me", "--array", "-h", "-o", "%i|%T"]))
            found.update((k, (v, "squeue")) for k, v in live.items())
            for array in arrays:
                if any(i not in found for i in ids if _array_id(i) == array):
                    done = self._run(["scontrol", "-o", "show", "job", array])
                    gone = parse_scontrol(done.stdout) if done.returncode == 0 else {}
                    found.update((k, (v, "scontrol")) for k, v in gone.items() if k not in found)
        # 2. then submitit's result file, then the grace period after submission
        statuses = []
        for task_id in ids:
            if task_id in found:
                state, source = found[task_id]
                statuses.append(SlurmTaskStatus(task_id, state, map_slurm_state(state), source))
            else:
                statuses.append(self._unlisted(task_id, now))
        return statuses

    def _output(self, command: list[str]) -> str:
        done = self._run(command)
        if done.returncode != 0:
            raise SlurmError(f"{shlex.join(command)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def _unlisted(self, task_id: str, now: float) -> SlurmTaskStatus:
        folder = self._folders.get(task_id)
        result = read_task_result(folder, task_id) if folder else None
        if result is not None:
            state = "COMPLETED" if result.ok else "FAILED"
            return SlurmTaskStatus(task_id, state, map_slurm_state(state), "result_file")
        if now - self._tracked_since[task_id] < _LOST_AFTER_S:
            return SlurmTaskStatus(task_id, "PENDING", map_slurm_state("PENDING"), "submitted")
        change = RunStateChange(
            State.FAILED, True, "unknown to SLURM and no result file; retry resumes from the checkpoint"
        )
        return SlurmTaskStatus(task_id, "UNKNOWN", change, "lost")
