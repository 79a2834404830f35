"""The SLURM executor of the job service: submit a job's runs as one array job, cancel it, collect results.

Compute nodes never talk to the database or the API (docs/slurm.md says why). Each array task trains
its seed group into a directory of the job on the shared filesystem (`worker.slurm_entry`, in the
layout of `ired_core.run_files.JobDirectory`); the collector on the server reads those files and
SLURM's view of the tasks back into the database, with the functions the Celery worker uses
(`upsert_metrics`, `record_outcome`, `register_checkpoint`, the state machine).

A run held by SLURM names its array task as its lease owner (`slurm:1234_0`, the run's `worker` in
the API); the collector renews the lease while SLURM runs the task. Every submission of a run counts
one attempt: a task that ended for an infrastructure reason (time limit, preemption, node failure,
lost) is submitted again into the same directory and resumes from its checkpoint, until the run has
used `max_attempts`.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ired_core.configs import TrainConfig
from ired_core.run_files import JobDirectory
from ired_dcd.db import session_scope
from ired_dcd.models import Job, Run, utcnow
from ired_dcd.services.artifacts import job_folder
from ired_dcd.services.errors import InvalidInput, Unavailable
from ired_dcd.services.runs import lock_runs, record_outcome, register_checkpoint, set_state, upsert_metrics
from ired_dcd.settings import get_settings
from ired_dcd.states import ACTIVE, State
from worker.slurm import (
    SlurmError,
    SlurmExecutor,
    SlurmSubmission,
    SlurmTaskStatus,
    read_task_result,
    submission_folder,
)
from worker.slurm_entry import ENTRY

log = logging.getLogger(__name__)

EXECUTOR = "slurm"
OWNER_PREFIX = "slurm:"
"""A run's lease owner `slurm:<array task id>`: the SLURM task that trains it."""


def slurm_task(run: Run) -> str | None:
    """The SLURM array task ('1234_0') holding `run`, or None."""
    owner = run.lease_owner or ""
    return owner.removeprefix(OWNER_PREFIX) if owner.startswith(OWNER_PREFIX) else None


def available() -> bool:
    """True when this server can submit to SLURM: the client tools (sbatch) are on PATH."""
    return shutil.which("sbatch") is not None


def check_job_options(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job's SLURM overrides, checked against the server's settings; InvalidInput naming the field."""
    if not available():
        raise InvalidInput("executor: 'slurm' needs the SLURM client tools (sbatch) on this server's PATH")
    overrides = dict(overrides or {})
    try:
        get_settings().slurm.merged(overrides)
    except ValueError as exc:
        raise InvalidInput(f"slurm: {exc}") from None
    return overrides


# --- submitting and cancelling ----------------------------------------------------------------------


def submit_runs(job: Job, runs: list[Run]) -> None:
    """`EXECUTORS["slurm"]`: start `runs` from scratch as one array job, in a new directory of the job."""
    _submit(job, runs, f"{job_folder(job.id)}/slurm-{uuid.uuid4().hex[:8]}", SlurmExecutor(get_settings().slurm))


def _submit(
    job: Job, runs: Sequence[Run], out_dir: str, executor: SlurmExecutor, array_mode: str | None = None
) -> None:
    """Submit `runs` to train under `<artifacts>/<out_dir>`; each run records its task and one attempt.

    `array_mode` overrides the job's (a resubmission keeps the seed groups of its checkpoints).
    ValueError on bad settings, SlurmError when sbatch fails; nothing is recorded then.
    """
    settings = get_settings()
    overrides = {**(job.executor_options or {}), **({"array_mode": array_mode} if array_mode else {})}
    root = settings.artifacts_path / out_dir
    by_seed = {run.seed: run for run in runs}
    options = {
        "config": job.config,
        "overrides": job.overrides,
        "device": "cuda" if settings.slurm.merged(overrides).gpus_per_task else "cpu",
    }
    submission = executor.submit(
        job.id, sorted(by_seed), entry=ENTRY, out_dir=root, overrides=overrides, options=options
    )
    config = TrainConfig(**job.config)
    for task_id, group in zip(submission.task_ids, submission.seed_groups, strict=True):
        checkpoint = JobDirectory(root, config, group).checkpoint_path
        for seed in group:
            run = by_seed[seed]
            run.lease_owner = OWNER_PREFIX + task_id
            run.lease_expires_at = None
            run.attempts += 1
            run.checkpoint_path = str(checkpoint.relative_to(settings.artifacts_path))
    job.executor_ref = submission.slurm_job_id
    log.info("job %d: seeds %s submitted to SLURM as %s", job.id, sorted(by_seed), submission.task_ids)


def cancel_runs(runs: Sequence[Run]) -> None:
    """scancel the SLURM tasks holding `runs`, then end the runs cancelled; Unavailable if SLURM refuses.

    Each task gets SIGTERM, checkpoints and exits without a result file, so nothing reads it later.
    """
    executor = SlurmExecutor(get_settings().slurm)
    arrays = sorted({task.split("_")[0] for task in map(slurm_task, runs) if task})
    try:
        for array in arrays:
            executor.cancel(array)
    except SlurmError as exc:
        raise Unavailable(f"SLURM did not cancel job(s) {', '.join(arrays)} ({exc}); try again") from None
    now = utcnow()
    for run in runs:
        set_state(run, State.CANCELLED, now=now)


# --- collecting ---------------------------------------------------------------------------------------


class SlurmCollector:
    """Follows the runs SLURM holds: their tasks' states and the files they write, into the database.

    `collect()` is one pass; `start()` runs passes every `poll_interval_s` (at least 1 s) in a
    daemon thread until `stop()`. Passes on several servers are safe: each job is updated under its
    row lock, and a run is only touched while it still names the task the pass asked SLURM about.
    """

    def __init__(self, executor: SlurmExecutor | None = None) -> None:
        self.settings = get_settings()
        self.executor = executor or SlurmExecutor(self.settings.slurm)
        self.interval = max(self.settings.slurm.poll_interval_s, 1.0)
        self.lease_seconds = max(self.settings.lease_seconds, 3 * self.interval)  # renewed every pass
        self._tracked: set[str] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ired-slurm-collector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self.collect()
            except Exception:  # the database or the filesystem is briefly away: try again next pass
                log.exception("SLURM collector pass failed; trying again in %.0f s", self.interval)
            self._stopped.wait(self.interval)

    def collect(self) -> None:
        """One pass: ask SLURM about every task holding an active run, then update each job's runs."""
        # 1. the tasks holding active runs
        with session_scope() as session:
            held = session.execute(
                select(Run.job_id, Run.id, Run.seed, Run.lease_owner, Run.checkpoint_path)
                .join(Job)
                .where(Job.executor == EXECUTOR, Run.state.in_(list(ACTIVE)), Run.lease_owner.startswith(OWNER_PREFIX))
            ).all()
        if not held:
            return
        runs_by_job: dict[int, list[int]] = defaultdict(list)
        seeds_by_task: dict[tuple[int, str, str], list[int]] = defaultdict(list)
        for job_id, run_id, seed, owner, checkpoint in held:
            runs_by_job[job_id].append(run_id)
            seeds_by_task[job_id, owner.removeprefix(OWNER_PREFIX), checkpoint].append(seed)
        for (job_id, task_id, checkpoint), seeds in seeds_by_task.items():
            self._track(job_id, task_id, checkpoint, seeds)
        # 2. one batched round of SLURM queries (at most one per poll interval); files are read anyway
        try:
            statuses = self.executor.status(task_id for _, task_id, _ in seeds_by_task)
        except SlurmError as exc:
            log.warning("SLURM does not answer (%s); reading progress from the files only", exc)
            statuses = {}
        # 3. each job under its row lock; one job's trouble (say, a damaged file) does not stop the others
        for job_id, run_ids in runs_by_job.items():
            try:
                with session_scope() as session:
                    self._update_job(session, run_ids, statuses)
            except Exception:
                log.exception("SLURM collector: job %d not updated; trying again next pass", job_id)

    def _track(self, job_id: int, task_id: str, checkpoint: str, seeds: list[int]) -> None:
        """Tell the executor where a task's submitit files are (its fallback when SLURM forgot the task)."""
        if task_id in self._tracked:
            return
        folder = str(_submitit_folder(job_id, checkpoint))
        array = task_id.split("_")[0]
        self.executor.track(
            SlurmSubmission(job_id=job_id, slurm_job_id=array, task_ids=[task_id], seed_groups=[seeds], folder=folder)
        )
        self._tracked.add(task_id)

    def _update_job(self, session: Session, run_ids: list[int], statuses: Mapping[str, SlurmTaskStatus]) -> None:
        groups: dict[str, list[Run]] = defaultdict(list)
        for run in lock_runs(session, run_ids):
            task_id = slurm_task(run)
            if run.state in ACTIVE and task_id:
                groups[task_id].append(run)
        for task_id, group in groups.items():
            self._update_task(session, task_id, group, statuses.get(task_id))

    def _update_task(self, session: Session, task_id: str, group: list[Run], status: SlurmTaskStatus | None) -> None:
        """Progress from the files; the outcome from `result.json`, else what SLURM says happened."""
        job = group[0].job
        directory = _directory(job, group)
        started = [_read_progress(session, run, directory) for run in group]
        results = {run.seed: _read_json(directory.seed_dir(run.seed) / "result.json") for run in group}
        if all(results.values()):
            self._finish(session, job, group, results, directory)
            return
        if status is None or not status.change.final:  # not polled yet, queued or running
            if any(started) or (status is not None and status.change.state is State.RUNNING):  # files before sacct
                _set_running(group, lease_seconds=self.lease_seconds)
            return
        if any(started):
            _set_running(group, lease_seconds=None)
        change = status.change
        what = f"SLURM task {task_id} {status.slurm_state}: {change.reason}"
        if change.state is State.CANCELLED:
            _end(group, State.CANCELLED, what)
        elif change.requeue or change.state is State.SUCCEEDED:
            # a task that returned without result.json stopped early: run it again, it resumes
            self._resubmit(job, group, what if change.requeue else f"{what}, but no result.json was written")
        elif change.state is State.FAILED:
            _end(group, State.FAILED, _failure(job, group[0], task_id, what))

    def _finish(
        self,
        session: Session,
        job: Job,
        group: list[Run],
        results: Mapping[int, dict[str, Any] | None],
        directory: JobDirectory,
    ) -> None:
        _set_running(group, lease_seconds=None)  # a task may start and end between two passes
        for run in group:
            result = results[run.seed] or {}
            started = _read_json(directory.seed_dir(run.seed) / "config.json") or {}
            run.train_seconds += _seconds_between(started.get("started_at"), result.get("finished_at"))
            record_outcome(
                run,
                status=result["status"],
                step=result["step"],
                final_metrics=result.get("metrics") or {},
                error=result.get("error"),
            )
        run_id = group[0].id if len(group) == 1 else None
        register_checkpoint(session, job_id=job.id, checkpoint=directory.checkpoint_path, run_id=run_id)

    def _resubmit(self, job: Job, group: list[Run], what: str) -> None:
        """Submit the task's seed group again into its directory (it resumes), or fail it at max_attempts."""
        attempts = max(run.attempts for run in group)
        if attempts >= self.settings.max_attempts:
            _end(group, State.FAILED, f"gave up after {attempts} attempts (max_attempts); last: {what}")
            return
        try:
            _submit(job, group, _out_dir(group[0].checkpoint_path), self.executor, array_mode="all_seeds_one_task")
        except (SlurmError, ValueError) as exc:
            _end(group, State.FAILED, f"{what}; could not submit it again: {exc}")
            return
        log.info("job %d: %s; submitted again (attempt %d)", job.id, what, attempts + 1)


def _out_dir(checkpoint_path: str | None) -> str:
    """A submission's directory from its runs' checkpoint path (`<out>/<preset>/checkpoint_…`, JobDirectory)."""
    return str(Path(str(checkpoint_path)).parent.parent)


def _directory(job: Job, group: Sequence[Run]) -> JobDirectory:
    """The files of a task's seed group."""
    root = get_settings().artifacts_path / _out_dir(group[0].checkpoint_path)
    return JobDirectory(root, TrainConfig(**job.config), [run.seed for run in group])


def _submitit_folder(job_id: int, checkpoint_path: str | None) -> Path:
    """Where submitit keeps the pickles and logs of the tasks of a submission."""
    out_dir = get_settings().artifacts_path / _out_dir(checkpoint_path)
    return submission_folder(get_settings().slurm, job_id, out_dir)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written atomically by the task, or None while there is none."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _metric_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The complete lines of a metrics.jsonl (a line still being written is left for the next pass)."""
    try:
        text = path.read_text()
    except OSError:
        return
    for line in text.split("\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("%s: skipping a line that is not JSON: %.80s", path, line)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            yield record


def _read_progress(session: Session, run: Run, directory: JobDirectory) -> bool:
    """The task's start record (device, versions, resume step) and metric lines past the run's step.

    Lines up to `run.step` are known already: after a resume the task writes them again, identical.
    Returns whether the seed's training has started (its start record exists).
    """
    seed_dir = directory.seed_dir(run.seed)
    start = _read_json(seed_dir / "config.json")
    if start is not None:
        run.device, run.precision = start.get("device"), start.get("precision")
        run.code_version, run.torch_version = start.get("code_version"), start.get("torch_version")
        run.resume_step = start.get("start_step") or None
    rows, last = [], run.step
    for record in _metric_lines(seed_dir / "metrics.jsonl"):
        step = record.pop("step")
        if step > run.step:
            rows += [(run.id, step, name, value) for name, value in record.items()]
            last = max(last, step)
    upsert_metrics(session=session, rows=rows)
    run.step = last
    return start is not None


def _failure(job: Job, run: Run, task_id: str, what: str) -> str:
    """`what`, with the last line of the task's traceback when submitit recorded one."""
    result = read_task_result(_submitit_folder(job.id, run.checkpoint_path), task_id)
    if result is None or result.ok:
        return what
    lines = [line for line in str(result.value).splitlines() if line.strip()]
    return f"{what}; {lines[-1].strip()}" if lines else what


def _set_running(group: Sequence[Run], *, lease_seconds: float | None) -> None:
    """A started task's queued runs become running; with `lease_seconds` (a live task) the lease is renewed."""
    now = utcnow()
    for run in group:
        if run.state == State.QUEUED:
            set_state(run, State.RUNNING, now=now)
        if lease_seconds is not None:
            run.heartbeat_at = now
            run.lease_expires_at = now + timedelta(seconds=lease_seconds)


def _end(group: Sequence[Run], state: State, error: str) -> None:
    now = utcnow()
    for run in group:
        set_state(run, state, error=error, now=now)


def _seconds_between(start: str | None, end: str | None) -> float:
    """Seconds between two ISO timestamps from the task's files; 0 when either is missing."""
    if not start or not end:
        return 0.0
    return max((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 0.0)
