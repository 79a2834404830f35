"""The cluster as the server sees it: submit sbatch scripts (`ired_dcd.slurm.sbatch`), find jobs by
name, follow their states, cancel them. Pure apart from `subprocess` calls to the SLURM client tools: no
database, so the job service wraps it (`ired_dcd.services.slurm_jobs`) and tests can use it alone.

How job state is tracked (decision)
-----------------------------------
`sacct` answers only where accounting storage (slurmdbd) runs. Real clusters almost always run it,
and `sacct` is the one source that still knows a job's final state hours later and does not load the
controller, so `state_source="auto"` uses it whenever it works. Without accounting (`sacct` fails) the
executor polls `squeue --me` (one call for all live jobs), then `scontrol show job` for jobs that just
left the queue (slurmctld keeps them for MinJobAge). A task none of them knows is `submitted` for a
grace period, then `lost` (the collector reads a task's result files before its state, so a task that
finished is never taken for lost). Both paths run against the local single-node cluster in CI
(`.ci/slurm-setup.sh` starts slurmdbd on MariaDB); tests force each one.
Polling is batched (one command round for every requested task), rate limited (at most one round per
`poll_interval_s`) and cached (succeeded, failed and cancelled are never asked again).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ired_dcd.slurm.sbatch import SbatchScript
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.slurm.states import RunStateChange, map_slurm_state
from ired_dcd.states import State

StatusSource = Literal["sacct", "squeue", "scontrol", "submitted", "lost"]


class SlurmError(RuntimeError):
    """A SLURM client command failed."""


@dataclass(frozen=True)
class SlurmTaskStatus:
    """The latest known state of one task."""

    task_id: str
    slurm_state: str
    change: RunStateChange
    source: StatusSource


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


def array_id(task_id: str) -> str:
    """The job id of a task: '1234_5' → '1234'; a plain job's id is its own."""
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
    """Submits sbatch scripts; polls and cancels their tasks without hammering SLURM."""

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
        self._tracked_since: dict[str, float] = {}
        self._sacct_works: bool | None = None

    def submit(self, script: SbatchScript, path: Path) -> list[str]:
        """Write `script` to `path` and sbatch it; the task ids it started ('1234_0', … or '1234').

        The script holds everything the tasks need, so a job sbatch accepted is complete: after a crash
        it can be adopted as it is (`find`). SlurmError when sbatch refuses or does not answer.
        """
        _check_job_name(script.job_name)
        Path(script.log_dir).mkdir(parents=True, exist_ok=True)  # SLURM does not create it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script.text)
        answer = self._output(["sbatch", "--parsable", str(path)]).strip()
        slurm_job_id = answer.split(";")[0]  # '1234' or '1234;cluster'
        if not slurm_job_id.isdigit():
            raise SlurmError(f"sbatch answered {answer!r}, not a job id")
        task_ids = script.task_ids(slurm_job_id)
        self.track(task_ids)
        return task_ids

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
        newest = max((array_id(task) for task in known), key=int, default=None)
        tasks = [task for task in known if array_id(task) == newest]
        return sorted(tasks, key=lambda task: [int(part) for part in task.split("_")])

    def track(self, task_ids: Iterable[str]) -> None:
        """Start the grace period of these tasks (a stored submission's, after a server restart): SLURM
        may not list a task it accepted a moment ago."""
        now = self._clock()
        for task_id in task_ids:
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
            if task_id == slurm_job_id or array_id(task_id) == slurm_job_id:
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
        arrays = sorted({array_id(i) for i in ids}, key=int)
        if self._uses_sacct():
            command = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)]
            found.update((k, (v, "sacct")) for k, v in parse_pipe_table(self._output(command)).items())
        else:
            live = parse_pipe_table(self._output(["squeue", "--me", "--array", "-h", "-o", "%i|%T"]))
            found.update((k, (v, "squeue")) for k, v in live.items())
            for array in arrays:
                if any(i not in found for i in ids if array_id(i) == array):
                    done = self._run(["scontrol", "-o", "show", "job", array])
                    gone = parse_scontrol(done.stdout) if done.returncode == 0 else {}
                    found.update((k, (v, "scontrol")) for k, v in gone.items() if k not in found)
        # 2. then the grace period after submission
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
        if now - self._tracked_since[task_id] < _LOST_AFTER_S:
            return SlurmTaskStatus(task_id, "PENDING", map_slurm_state("PENDING"), "submitted")
        change = RunStateChange(State.FAILED, True, "unknown to SLURM; retry resumes from the checkpoint")
        return SlurmTaskStatus(task_id, "UNKNOWN", change, "lost")
