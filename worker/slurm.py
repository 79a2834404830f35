"""SLURM dispatch: settings, hand-submittable sbatch scripts, state mapping and a submitit executor.

Pure apart from `subprocess` calls to the SLURM client tools and submitit's pickles on the shared
filesystem: no database, queue or web imports, so the job service can wrap it and tests can use it alone.

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

Preemption and time limits
--------------------------
Jobs are submitted with `--requeue`, so SLURM requeues preempted tasks and tasks on failed nodes
by itself. `--signal=USR2@signal_seconds` warns a task before its time limit; `run_slurm_task` then
asks the entry function to stop (it checkpoints), requeues the task with `scontrol requeue` and
exits; the requeued task runs the same entry again, which resumes from its checkpoint.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import submitit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from submitit.core.utils import FailedJobError, FailedSubmissionError, JobPaths, pickle_load

from ired_core.configs import canonical_preset, format_seeds, resolve_config
from ired_core.input_rules import check_seeds
from ired_dcd.states import TERMINAL, State

ArrayMode = Literal["per_seed", "all_seeds_one_task"]
StateSource = Literal["auto", "sacct", "squeue"]
StatusSource = Literal["sacct", "squeue", "scontrol", "result_file", "submitted", "lost"]

# Fields only the server sets: they choose paths and commands that run on the cluster.
SERVER_ONLY_FIELDS = frozenset(
    {"python", "log_dir", "setup_commands", "signal_seconds", "poll_interval_s", "state_source"}
)
# sbatch options that the generated scripts set themselves or that would move files or environments.
_RESERVED_SBATCH_OPTIONS = frozenset(
    {
        "array", "output", "error", "input", "open-mode", "requeue", "no-requeue", "signal", "job-name",
        "chdir", "export", "export-file", "wrap", "uid", "gid", "partition", "account", "qos", "time",
        "cpus-per-task", "gpus-per-task", "mem",
    }
)  # fmt: skip
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.+,-]+")
_SBATCH_LINE = re.compile(r"(?:#SBATCH\s+)?--([A-Za-z][A-Za-z0-9-]*)(?:(?:=|\s+)(.+))?")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class SlurmError(RuntimeError):
    """A SLURM client command failed."""


class SlurmSettings(BaseModel):
    """Where and how jobs run on the cluster; server defaults, some fields overridable per job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # per job (API overrides allowed)
    partition: str | None = Field(None, description="partition(s), comma-separated; None: cluster default")
    account: str | None = Field(None, description="account to charge; None: the user's default")
    qos: str | None = Field(None, description="quality of service; None: default")
    time_minutes: int = Field(240, ge=1, le=525_600, description="time limit of one task (it requeues)")
    gpus_per_task: int = Field(1, ge=0, le=64, description="0 trains on the CPU")
    cpus_per_task: int = Field(4, ge=1, le=1024)
    mem_gb: float | None = Field(32, gt=0, le=100_000, description="memory per task; None: cluster default")
    extra_sbatch_lines: list[str] = Field(
        default_factory=list, description="more options, e.g. '--constraint=a100' or '#SBATCH --exclusive'"
    )
    array_mode: ArrayMode = Field(
        "per_seed", description="per_seed: one array task per seed; all_seeds_one_task: one task trains all"
    )
    max_parallel: int = Field(16, ge=1, le=10_000, description="array tasks running at once (%N)")

    # server only
    python: str | None = Field(
        None, description="shell command starting Python on the nodes (executor); None: this interpreter"
    )
    log_dir: str | None = Field(
        None, description="SLURM logs and submitit pickles, on a shared filesystem; None: <out_dir>/slurm"
    )
    setup_commands: list[str] = Field(
        default_factory=list, description="shell lines run first in every task, e.g. 'module load cuda'"
    )
    signal_seconds: int = Field(120, ge=10, le=3600, description="warning before the time limit")
    poll_interval_s: float = Field(30.0, ge=0, description="at most one round of SLURM queries per interval")
    state_source: StateSource = Field("auto", description="auto: sacct if accounting works, else squeue")

    @field_validator("partition", "account", "qos")
    @classmethod
    def _slurm_name(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_NAME.fullmatch(value):
            raise ValueError("use letters, digits and _ . + , - only")
        return value

    @field_validator("extra_sbatch_lines")
    @classmethod
    def _normalise_sbatch_lines(cls, lines: list[str]) -> list[str]:
        return [_normalise_sbatch_line(line) for line in lines]

    @field_validator("setup_commands")
    @classmethod
    def _one_line_each(cls, lines: list[str]) -> list[str]:
        if any(_CONTROL_CHARS.search(line) for line in lines):
            raise ValueError("each command must be one line without control characters")
        return lines

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SlurmSettings:
        """Validated settings; ValueError names every bad field."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as error:
            raise ValueError(_format_error(error)) from None

    def merged(self, overrides: Mapping[str, Any] | None) -> SlurmSettings:
        """These settings with a job's overrides applied; ValueError names the bad or server-only field."""
        overrides = dict(overrides or {})
        for name in sorted(overrides):
            if name in SERVER_ONLY_FIELDS:
                raise ValueError(f"{name}: set by the server, cannot be overridden per job")
        return self.from_mapping({**self.model_dump(), **overrides})

    def sbatch_options(self) -> dict[str, str | bool]:
        """`extra_sbatch_lines` as option → value (True for a bare flag)."""
        options: dict[str, str | bool] = {}
        for line in self.extra_sbatch_lines:
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            options[key] = shlex.split(value)[0] if value else True
        return options


def _format_error(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'settings'}: {item['msg']}" for item in error.errors())


def _normalise_sbatch_line(line: str) -> str:
    """'--constraint=a100', '--constraint a100' or '#SBATCH --constraint=a100' → '#SBATCH --constraint=a100'."""
    if _CONTROL_CHARS.search(line):
        raise ValueError(f"{line!r}: one line without control characters")
    match = _SBATCH_LINE.fullmatch(line.strip())
    if not match:
        raise ValueError(f"{line!r}: expected a long option such as '--constraint=a100'")
    key, raw = match[1], match[2]
    if key in _RESERVED_SBATCH_OPTIONS:
        raise ValueError(f"{line!r}: --{key} is set from the settings or by the script itself")
    if raw is None:
        return f"#SBATCH --{key}"
    try:
        words = shlex.split(raw)
    except ValueError:
        raise ValueError(f"{line!r}: unbalanced quotes") from None
    if len(words) != 1:
        raise ValueError(f"{line!r}: one value per option (quote values with spaces)")
    return f"#SBATCH --{key}={shlex.quote(words[0])}"


# --- sbatch scripts for researchers who submit by hand ---------------------------------------------


def _override_arg(key: str, value: Any) -> str:
    """`key=value` that `parse_overrides` reads back as exactly `value` (JSON unless a plain string)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def _mem_option(mem_gb: float) -> str:
    return f"{int(mem_gb)}G" if float(mem_gb).is_integer() else f"{round(mem_gb * 1024)}M"


def render_sbatch(
    preset: str,
    seeds: list[int],
    settings: SlurmSettings,
    out_dir: str,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """A ready-to-submit sbatch script running `ired-dcd train` for `preset` and `seeds`.

    per_seed: an array with one task per seed (`SLURM_ARRAY_TASK_ID` indexes `SEEDS`);
    all_seeds_one_task: one task training every seed as an ensemble. Either way every task writes
    under `out_dir` (`<preset>/seed_<k>/…`, a checkpoint per seed group, see `ired_core.run_files`).
    Tasks requeue on preemption, node failure and (via the USR1 warning) the time limit, and resume
    from their checkpoint. ValueError names a bad preset, seed or override.
    """
    # 1. validate what the job will run with
    seeds = check_seeds(seeds)
    stem = canonical_preset(preset)
    overrides = dict(overrides or {})
    resolve_config(stem, overrides)
    per_seed = settings.array_mode == "per_seed"
    q = shlex.quote
    log_dir = settings.log_dir or f"{out_dir.rstrip('/') or '.'}/slurm"
    log_name = f"{stem}_%A_%a.out" if per_seed else f"{stem}_%j.out"

    # 2. #SBATCH header
    options: list[tuple[str, Any]] = [
        ("job-name", f"ired-{stem.split('_', 1)[0]}"),
        ("partition", settings.partition),
        ("account", settings.account),
        ("qos", settings.qos),
        ("time", settings.time_minutes),
        ("cpus-per-task", settings.cpus_per_task),
        ("gpus-per-task", settings.gpus_per_task or None),
        ("mem", _mem_option(settings.mem_gb) if settings.mem_gb else None),
        ("array", f"0-{len(seeds) - 1}%{min(settings.max_parallel, len(seeds))}" if per_seed else None),
        ("output", f"{log_dir}/{log_name}"),
        ("open-mode", "append"),
        ("requeue", True),
        ("signal", f"B:USR1@{settings.signal_seconds}"),
    ]
    header = [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={q(str(v))}" for k, v in options if v is not None]
    header += settings.extra_sbatch_lines

    # 3. the training command; SEED / OUT are shell variables set below
    device = "cuda" if settings.gpus_per_task else "cpu"
    command = ["ired-dcd", "train", "--config", stem]
    command_tail = ["--device", device]
    for key in overrides:
        command_tail += ["--set", _override_arg(key, overrides[key])]
    seeds_arg = '"$SEED"' if per_seed else q(format_seeds(seeds))
    train = " ".join([*map(q, command), "--seeds", seeds_arg, "--out", '"$OUT"', *map(q, command_tail)])

    mode = "one array task per seed" if per_seed else "one task for all seeds"
    lines = [
        "#!/bin/bash",
        f"# ired-dcd {stem}, seeds {format_seeds(seeds)}, {mode}. Generated by `ired-dcd sbatch`.",
        f"# Submit: mkdir -p {q(log_dir)} && sbatch <this file>",
        *header,
        "",
        *settings.setup_commands,
        "set -euo pipefail",
        "",
    ]
    if per_seed:
        lines += [
            f"SEEDS=({' '.join(map(str, seeds))})",
            'SEED="${SEEDS[$SLURM_ARRAY_TASK_ID]}"',
        ]
    lines += [
        f"OUT={q(out_dir)}",
        "",
        "# USR1 comes signal_seconds before the time limit: stop training (SIGTERM makes it checkpoint),",
        "# then requeue this task; it resumes from its checkpoint. Preemption sends SIGTERM: pass it on",
        "# and wait for the checkpoint; with --requeue SLURM puts the task back in the queue.",
        'stop_training() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; }',
        'on_time_limit() { stop_training; scontrol requeue "$SLURM_JOB_ID"; exit 0; }',
        "on_term() { stop_training; exit 143; }",
        "trap on_time_limit USR1",
        "trap on_term TERM",
        "",
        f"{train} &",
        "pid=$!",
        'wait "$pid"',
        "",
    ]
    return "\n".join(lines)


# --- SLURM states → run states ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunStateChange:
    """What a SLURM state means for our run.

    `requeue` (always with state failed): the attempt ended for an infrastructure reason
    (preemption, time limit, node or boot failure). SLURM has not put it back (a task it requeues
    itself reads PENDING again), so retry the seed group (failed → queued), which resumes from its
    checkpoint, unless the run has used up its attempts.
    """

    state: State
    requeue: bool
    reason: str

    @property
    def final(self) -> bool:
        """True when SLURM will do nothing more with this task (a requeue is then up to us)."""
        return self.state in TERMINAL


_STATE_TABLE: dict[str, tuple[State, bool, str]] = {
    "PENDING": (State.QUEUED, False, "waiting for resources or priority"),
    "CONFIGURING": (State.QUEUED, False, "nodes allocated, booting"),
    "REQUEUED": (State.QUEUED, False, "requeued by SLURM"),
    "REQUEUE_HOLD": (State.QUEUED, False, "requeued and held (scontrol release to run)"),
    "REQUEUE_FED": (State.QUEUED, False, "requeued by the federation"),
    "RESV_DEL_HOLD": (State.QUEUED, False, "held: its reservation was deleted"),
    "RUNNING": (State.RUNNING, False, "running"),
    "COMPLETING": (State.RUNNING, False, "finishing"),
    "SUSPENDED": (State.RUNNING, False, "suspended; resumes in place"),
    "STOPPED": (State.RUNNING, False, "stopped (SIGSTOP); resumes in place"),
    "RESIZING": (State.RUNNING, False, "changing size"),
    "SIGNALING": (State.RUNNING, False, "being signalled"),
    "STAGE_OUT": (State.RUNNING, False, "staging out"),
    "COMPLETED": (State.SUCCEEDED, False, "exit code 0"),
    "FAILED": (State.FAILED, False, "non-zero exit code"),
    "OUT_OF_MEMORY": (State.FAILED, False, "out of memory; ask for more mem_gb"),
    "DEADLINE": (State.FAILED, False, "deadline reached"),
    "SPECIAL_EXIT": (State.FAILED, False, "special exit state (held for inspection)"),
    "CANCELLED": (State.CANCELLED, False, "cancelled"),
    "REVOKED": (State.CANCELLED, False, "revoked: a sibling cluster runs it"),
    "PREEMPTED": (State.FAILED, True, "preempted; retry resumes from the checkpoint"),
    "TIMEOUT": (State.FAILED, True, "time limit reached; retry resumes from the checkpoint"),
    "NODE_FAIL": (State.FAILED, True, "node failure; retry resumes from the checkpoint"),
    "BOOT_FAIL": (State.FAILED, True, "node failed to boot; retry resumes from the checkpoint"),
}


def map_slurm_state(state: str) -> RunStateChange:
    """Map a SLURM job state (`squeue %T`, `sacct State`, `scontrol JobState`) onto our run states.

    Accepts decorations SLURM adds: 'CANCELLED by 1000', 'CANCELLED+' (sacct's truncation).
    ValueError on a state SLURM does not define.
    """
    words = state.strip().upper().split()
    key = words[0].rstrip("+") if words else ""
    if key not in _STATE_TABLE:
        raise ValueError(f"unknown SLURM state {state!r}; valid: {', '.join(sorted(_STATE_TABLE))}")
    run_state, requeue, reason = _STATE_TABLE[key]
    if key == "CANCELLED" and len(words) == 3 and words[1] == "BY":
        reason = f"cancelled by uid {words[2]}"
    return RunStateChange(run_state, requeue, reason)


# --- what runs on the compute node ------------------------------------------------------------------


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


# --- submission and polling from the server ---------------------------------------------------------


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
        "mem": _mem_option(settings.mem_gb) if settings.mem_gb else None,
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
