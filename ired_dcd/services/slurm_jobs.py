"""The SLURM executor of the job service: submit a job's runs as one array job, cancel it, collect results.

Compute nodes never talk to the database or the API (docs/slurm.md says why). A submission is the
sbatch script `ired-dcd sbatch` prints (`ired_dcd.slurm.sbatch`), written beside the job's resolved
config: each task runs `ired-dcd train` on that config for its seed group, into a directory of the job
on the shared filesystem (the layout of `ired_core.run_files.JobDirectory`). The collector on the server
reads those files and SLURM's view of the tasks back into the database, with the functions the Celery
worker uses (`upsert_metrics`, `record_outcome`, `register_checkpoint`, the state machine).

A run held by SLURM names its array task as its lease owner (`slurm:1234_0`, the run's `worker` in
the API); the collector renews the lease while SLURM runs the task. Every submission of a run counts
one attempt: a task that ended for an infrastructure reason (time limit, preemption, node failure,
lost) is submitted again into the same directory and resumes from its checkpoint, until the run has
used `max_attempts`.

Every submission survives a crash of the server at any point. Its **intent** is committed first: the
runs' lease owner becomes `slurm-submit:<token>` (with their checkpoint paths, which fix the directory
and the seed groups), then sbatch runs under the job's row lock with the SLURM job name
`ired-job<id>-<token>`, then the task ids replace the intent in the same transaction that commits
them. A collector pass finds intents that nobody is submitting (the row lock is free, and the intent is
older than INTENT_GRACE_SECONDS or this process wrote it) and asks SLURM for that name: it adopts the
job sbatch started before the crash, or submits the intent when SLURM never had it. A job is submitted
once however the server died.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ired_core.configs import TrainConfig
from ired_core.input_rules import check_json_text
from ired_core.run_files import CONFIG_FILE, METRICS_FILE, RESULT_FILE, JobDirectory
from ired_dcd.db import session_scope
from ired_dcd.models import Job, Run, utcnow
from ired_dcd.services.artifacts import job_folder
from ired_dcd.services.errors import InvalidInput, Unavailable
from ired_dcd.services.runs import lock_runs, record_outcome, register_checkpoint, set_state, upsert_metrics
from ired_dcd.settings import get_settings
from ired_dcd.slurm.cluster import SlurmError, SlurmExecutor, SlurmTaskStatus, array_id
from ired_dcd.slurm.sbatch import log_folder, render_sbatch, seed_groups, task_log
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.states import ACTIVE, State

log = logging.getLogger(__name__)

EXECUTOR = "slurm"
CONFIG_FILE_NAME = "job_config.json"
"""The job's resolved config, written into each submission's directory for its tasks to train."""
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
        check_json_text(overrides)  # stored as JSON with the job
        get_settings().slurm.merged(overrides)
    except ValueError as exc:
        raise InvalidInput(f"slurm: {exc}") from None
    return overrides


# --- submitting and cancelling ----------------------------------------------------------------------

INTENT_PREFIX = "slurm-submit:"
"""A run's lease owner `slurm-submit:<token>` from the decision to submit it until the tasks sbatch
started are recorded: the intent, committed before sbatch runs."""
INTENT_GRACE_SECONDS = 10.0
"""Another process's intent is recovered once this old: the process that wrote it takes the job's row
lock within milliseconds of its commit, and holds it until sbatch's answer is committed."""


def intent_token(run: Run) -> str | None:
    """The token of the submission intent on `run`, or None."""
    owner = run.lease_owner or ""
    return owner.removeprefix(INTENT_PREFIX) if owner.startswith(INTENT_PREFIX) else None


def submission_name(job_id: int, token: str) -> str:
    """The SLURM job name of one submission: what finds it again after a crash."""
    return f"ired-job{job_id}-{token}"


class _Intents:
    """This process's intents: `reserved` ones a request is about to submit itself (the collector leaves
    them alone), `fresh` ones the collector wrote and sbatch has not seen yet (no need to ask SLURM)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: set[str] = set()
        self._fresh: set[str] = set()

    def add(self, token: str, *, reserve: bool) -> None:
        with self._lock:
            (self._reserved if reserve else self._fresh).add(token)

    def reserved(self, token: str) -> bool:
        with self._lock:
            return token in self._reserved

    def fresh(self, token: str) -> bool:
        with self._lock:
            return token in self._fresh

    def done(self, token: str) -> None:
        with self._lock:
            self._reserved.discard(token)
            self._fresh.discard(token)


INTENTS = _Intents()


def plan_submission(job: Job, runs: Sequence[Run]) -> str:
    """Record the intent to submit `runs` from scratch into a new directory of the job (the caller
    commits it with the job, then calls `submit_runs`); returns its token."""
    out_dir = f"{job_folder(job.id)}/slurm-{uuid.uuid4().hex[:8]}"
    return mark_intent(job, runs, out_dir=out_dir, array_mode=None, reserve=True)


def mark_intent(job: Job, runs: Sequence[Run], *, out_dir: str, array_mode: str | None, reserve: bool) -> str:
    """Mark `runs` with a new intent to submit them into `out_dir` (seed groups by `array_mode`, default
    the job's): lease owner `slurm-submit:<token>`, the checkpoint path of each run's group, and the
    time in `heartbeat_at`. Not committed here. ValueError on bad settings."""
    settings = get_settings()
    token = uuid.uuid4().hex[:12]
    mode = _job_settings(job, array_mode=array_mode).array_mode
    by_seed = {run.seed: run for run in runs}
    root, config, now = settings.artifacts_path / out_dir, TrainConfig(**job.config), utcnow()
    for group in seed_groups(sorted(by_seed), mode):
        checkpoint = JobDirectory(root, config, group).checkpoint_path
        for seed in group:
            run = by_seed[seed]
            run.lease_owner, run.lease_expires_at, run.heartbeat_at = INTENT_PREFIX + token, None, now
            run.checkpoint_path = str(checkpoint.relative_to(settings.artifacts_path))
    INTENTS.add(token, reserve=reserve)
    return token


def submit_runs(job: Job, runs: list[Run]) -> None:
    """`SlurmArrayExecutor.start`: sbatch the committed intent on `runs` and record the tasks (the caller
    commits). ValueError on bad settings, SlurmError when sbatch fails."""
    token = intent_token(runs[0])
    if token is None:
        raise ValueError(f"job {job.id}: runs to submit to SLURM carry no intent (plan_submission)")
    session = Session.object_session(job)
    if session is None:
        raise ValueError(f"job {job.id}: submit_runs needs the job in the caller's session")
    try:
        _lock_job(session, job.id, skip_locked=False)
        _submit_intent(session, job, token, SlurmExecutor(get_settings().slurm), found=[])
    finally:
        INTENTS.done(token)


def _lock_job(session: Session, job_id: int, *, skip_locked: bool) -> bool:
    """Lock the job's row (held until the caller's commit); False when another transaction holds it
    and `skip_locked`, or when the job is gone."""
    query = select(Job.id).where(Job.id == job_id).with_for_update(skip_locked=skip_locked)
    return session.scalar(query) is not None


def _intent_runs(session: Session, job_id: int, token: str) -> list[Run]:
    """The job's active runs still carrying the intent, re-read (another process may have moved on)."""
    query = (
        select(Run)
        .where(Run.job_id == job_id, Run.lease_owner == INTENT_PREFIX + token, Run.state.in_(list(ACTIVE)))
        .order_by(Run.seed)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(query))


def _submit_intent(session: Session, job: Job, token: str, executor: SlurmExecutor, *, found: list[str]) -> None:
    """Under the job's row lock: adopt the tasks SLURM already has for the intent (`found`, in array
    order), else sbatch it; then record the tasks on the runs, one attempt each. Nothing when the runs
    no longer carry the intent (submitted, cancelled or failed meanwhile)."""
    runs = _intent_runs(session, job.id, token)
    if not runs:
        return
    groups: dict[str | None, list[Run]] = {}
    for run in runs:  # the checkpoint paths fixed the seed groups when the intent was written
        groups.setdefault(run.checkpoint_path, []).append(run)
    seed_groups_ = list(groups.values())
    if found:
        task_ids = found
        log.info("job %d: adopted SLURM job %s, submitted before a restart (%s)", job.id, array_id(found[0]), token)
    else:
        task_ids = _sbatch(job, runs, token, executor, per_seed=len(seed_groups_) > 1)
        log.info("job %d: seeds %s submitted to SLURM as %s", job.id, [run.seed for run in runs], task_ids)
    array = array_id(task_ids[0])
    if len(task_ids) != len(seed_groups_):
        raise SlurmError(f"SLURM job {array} has {len(task_ids)} task(s) for {len(seed_groups_)} seed group(s)")
    for task_id, group in zip(task_ids, seed_groups_, strict=True):
        for run in group:
            run.lease_owner = OWNER_PREFIX + task_id
            run.lease_expires_at = None
            run.attempts += 1
    job.executor_ref = array


def _sbatch(job: Job, runs: Sequence[Run], token: str, executor: SlurmExecutor, *, per_seed: bool) -> list[str]:
    """Write the job's resolved config and the submission's script into the runs' directory, sbatch it;
    the task ids, one per seed group."""
    settings = _job_settings(job, array_mode="per_seed" if per_seed else "all_seeds_one_task")
    root = _submission_root(runs[0].checkpoint_path)
    config_file = root / CONFIG_FILE_NAME
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(job.config, indent=2))
    name = submission_name(job.id, token)
    # the overrides again on their own resolved config change nothing, and are recorded with the runs;
    # tasks compute a step with the engine the Celery workers use
    seeds, engine = [run.seed for run in runs], get_settings().engine
    script = render_sbatch(str(config_file), seeds, settings, str(root), job.overrides, job_name=name, engine=engine)
    return executor.submit(script, Path(script.log_dir) / f"{name}.sbatch")


def recover_intents(executor: SlurmExecutor) -> None:
    """Submit or adopt every intent nobody is submitting: this process's collector's own (fresh), and
    other processes' ones older than INTENT_GRACE_SECONDS whose job row is not locked (its writer died
    before sbatch, or between sbatch and the commit of its answer)."""
    with session_scope() as session:
        pending = session.execute(
            select(Run.job_id, Run.lease_owner, func.min(Run.heartbeat_at))
            .join(Job)
            .where(Job.executor == EXECUTOR, Run.state.in_(list(ACTIVE)), Run.lease_owner.startswith(INTENT_PREFIX))
            .group_by(Run.job_id, Run.lease_owner)
        ).all()
    now = utcnow()
    for job_id, owner, marked_at in pending:
        token = owner.removeprefix(INTENT_PREFIX)
        fresh = INTENTS.fresh(token)
        young = marked_at is not None and (now - marked_at).total_seconds() < INTENT_GRACE_SECONDS
        if INTENTS.reserved(token) or (young and not fresh):
            continue
        try:
            with session_scope() as session:
                if not _lock_job(session, job_id, skip_locked=True):
                    continue  # being submitted by a live process right now
                job, runs = session.get(Job, job_id), _intent_runs(session, job_id, token)
                if job is None or not runs:
                    continue
                found = [] if fresh else executor.find(submission_name(job_id, token))
                try:
                    _submit_intent(session, job, token, executor, found=found)
                except (SlurmError, ValueError) as exc:
                    _end(_intent_runs(session, job_id, token), State.FAILED, f"could not be submitted to SLURM: {exc}")
        except SlurmError as exc:  # SLURM did not answer whether it has the job: ask again next pass
            log.warning("job %d: SLURM intent %s not recovered yet (%s)", job_id, token, exc)
        else:
            INTENTS.done(token)


def cancel_runs(runs: Sequence[Run]) -> None:
    """scancel the SLURM tasks holding `runs`, then end the runs cancelled; Unavailable if SLURM refuses.

    Each task gets SIGTERM, checkpoints and exits without a result file, so nothing reads it later. A
    run still carrying an intent may belong to a job sbatch started just before a crash: that job is
    looked up by name and cancelled too.
    """
    executor = SlurmExecutor(get_settings().slurm)
    tasks = [task for task in map(slurm_task, runs) if task]
    try:
        for token in sorted({token for token in map(intent_token, runs) if token}):
            tasks += executor.find(submission_name(runs[0].job_id, token))
        arrays = sorted({array_id(task) for task in tasks})
        for array in arrays:
            executor.cancel(array)
    except SlurmError as exc:
        raise Unavailable(f"SLURM did not cancel job(s) {', '.join(tasks) or '-'} ({exc}); try again") from None
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
        """One pass: ask SLURM about every task holding an active run, then update each job's runs, then
        submit what needs submitting (intents: left by a crash, or written by this pass's resubmissions)."""
        recover_intents(self.executor)
        self._follow()
        recover_intents(self.executor)

    def _follow(self) -> None:
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
        self.executor.track(task_id for _, task_id, _ in seeds_by_task)  # stored ones too, after a restart
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
        results = {run.seed: _read_json(directory.seed_dir(run.seed) / RESULT_FILE) for run in group}
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
            started = _read_json(directory.seed_dir(run.seed) / CONFIG_FILE) or {}
            run.train_seconds += _seconds_between(started.get("started_at"), result.get("finished_at"))
            record_outcome(
                run,
                status=result["status"],
                step=result["step"],
                final_metrics=result.get("metrics") or {},
                error=result.get("error"),
                divergence=result.get("divergence"),
            )
        run_id = group[0].id if len(group) == 1 else None
        register_checkpoint(session, job_id=job.id, checkpoint=directory.checkpoint_path, run_id=run_id)

    def _resubmit(self, job: Job, group: list[Run], what: str) -> None:
        """Submit the task's seed group again into its directory (it resumes), or fail it at max_attempts.

        Written as an intent, committed with this job's update; the pass submits it right after.
        """
        attempts = max(run.attempts for run in group)
        if attempts >= self.settings.max_attempts:
            _end(group, State.FAILED, f"gave up after {attempts} attempts (max_attempts); last: {what}")
            return
        try:
            out_dir = _out_dir(group[0].checkpoint_path)
            mark_intent(job, group, out_dir=out_dir, array_mode="all_seeds_one_task", reserve=False)
        except ValueError as exc:
            _end(group, State.FAILED, f"{what}; could not submit it again: {exc}")
            return
        log.info("job %d: %s; submitting it again (attempt %d)", job.id, what, attempts + 1)


def _out_dir(checkpoint_path: str | None) -> str:
    """A submission's directory from its runs' checkpoint path (`<out>/<preset>/checkpoint_…`, JobDirectory)."""
    return str(Path(str(checkpoint_path)).parent.parent)


def _submission_root(checkpoint_path: str | None) -> Path:
    """The absolute directory a submission's tasks train into, and where its config and logs lie."""
    return get_settings().artifacts_path / _out_dir(checkpoint_path)


def _directory(job: Job, group: Sequence[Run]) -> JobDirectory:
    """The files of a task's seed group."""
    root = _submission_root(group[0].checkpoint_path)
    return JobDirectory(root, TrainConfig(**job.config), [run.seed for run in group])


def _job_settings(job: Job, *, array_mode: str | None = None) -> SlurmSettings:
    """The server's SLURM settings with the job's overrides (and `array_mode`); each job logs into a
    folder of its own under the server's `log_dir`, else into `<out_dir>/slurm` (render_sbatch)."""
    overrides = {**(job.executor_options or {}), **({"array_mode": array_mode} if array_mode else {})}
    settings = get_settings().slurm.merged(overrides)
    if settings.log_dir:
        log_dir = Path(settings.log_dir, f"job_{job.id}").expanduser().absolute()
        settings = settings.model_copy(update={"log_dir": str(log_dir)})
    return settings


def _task_log_dir(job: Job, checkpoint_path: str | None) -> Path:
    """Where the tasks of a submission write their logs (as `render_sbatch` told them)."""
    return Path(log_folder(_job_settings(job), str(_submission_root(checkpoint_path))))


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
    start = _read_json(seed_dir / CONFIG_FILE)
    if start is not None:
        run.device, run.precision = start.get("device"), start.get("precision")
        run.code_version, run.torch_version = start.get("code_version"), start.get("torch_version")
        run.resume_step = start.get("start_step") or None
    rows, last = [], run.step
    for record in _metric_lines(seed_dir / METRICS_FILE):
        step = record.pop("step")
        if step > run.step:
            rows += [(run.id, step, name, value) for name, value in record.items()]
            last = max(last, step)
    upsert_metrics(session=session, rows=rows)
    run.step = last
    return start is not None


def _failure(job: Job, run: Run, task_id: str, what: str) -> str:
    """`what`, with the error the task's stderr ends with, when it wrote one."""
    path = task_log(_task_log_dir(job, run.checkpoint_path), job.config["name"], task_id)
    try:
        with path.open("rb") as stream:
            stream.seek(max(path.stat().st_size - 16_384, 0))
            error = last_error(stream.read().decode(errors="replace"))
    except OSError:
        return what
    return f"{what}; {error}" if error else what


def last_error(log: str) -> str | None:
    """The exception line of the last Python traceback in `log` ('RuntimeError: …'), else its last line.

    Progress bars rewrite their line with carriage returns and may print once more at exit, after the
    traceback: lines are split at either, and indented ones (frames, bars) are not the error.
    """
    lines = [line.rstrip() for line in re.split(r"[\r\n]", log) if line.strip()]
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        raised = [line for line in lines[starts[-1] + 1 :] if not line[0].isspace()]
        if raised:
            return raised[0]
    return lines[-1].strip() if lines else None


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
