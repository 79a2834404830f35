"""The SLURM collector's decisions on the real Postgres, with SLURM's answers scripted (no cluster needed).

What each test sets up is what a task leaves on the shared filesystem (`JobDirectory`'s files and the
task's log); what SLURM says about the task comes from `ScriptedSlurm`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ired_core.configs import config_hash, resolve_config
from ired_dcd.db import new_session, session_scope
from ired_dcd.models import Artifact, Job, Metric, Run
from ired_dcd.services.slurm_jobs import SlurmCollector
from ired_dcd.services.users import get_or_create_user
from ired_dcd.settings import get_settings
from ired_dcd.slurm.cluster import SlurmExecutor, SlurmTaskStatus
from ired_dcd.slurm.sbatch import SbatchScript, task_log
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.slurm.states import map_slurm_state
from ired_dcd.states import State
from tests.conftest import TEST_SETTINGS, configure_process, service_env

pytestmark = pytest.mark.services

CONFIG = resolve_config("q204", {"train_steps": 20})


class ScriptedSlurm(SlurmExecutor):
    """A SLURM that reports `states` and hands out array ids from 501 on; it records submissions."""

    def __init__(self) -> None:
        super().__init__(SlurmSettings(poll_interval_s=0))
        self.states: dict[str, str] = {}
        self.submitted: list[dict[str, Any]] = []

    def status(self, task_ids: Sequence[str]) -> dict[str, SlurmTaskStatus]:
        known = [t for t in task_ids if t in self.states]  # other tests' tasks: not polled yet
        return {t: SlurmTaskStatus(t, self.states[t], map_slurm_state(self.states[t]), "sacct") for t in known}

    def submit(self, script: SbatchScript, path: Path) -> list[str]:
        self.submitted.append({"seeds": [s for group in script.seed_groups for s in group], "script": script})
        return script.task_ids(str(500 + len(self.submitted)))


@pytest.fixture(scope="module")
def database(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = dict(os.environ)
    data_dir = tmp_path_factory.mktemp("collector")
    configure_process(service_env(DATABASE_URL=postgres_url, IRED_DATA_DIR=str(data_dir), **TEST_SETTINGS))
    yield
    configure_process(saved)


def held_job(seeds: list[int], task_id: str) -> tuple[int, Path]:
    """A SLURM job whose runs task `task_id` holds (attempt 1), and the directory it trains into."""
    out = f"job-x/slurm-{task_id}"
    checkpoint = f"{out}/{CONFIG.name}/checkpoint_seeds_{'_'.join(map(str, seeds))}.pt"
    with new_session() as session:
        owner_id = get_or_create_user(session=session, name="local").id
    with session_scope() as session:
        job = Job(
            preset=CONFIG.name,
            overrides={},
            config=CONFIG.model_dump(),
            config_hash=config_hash(CONFIG),
            seeds=seeds,
            executor="slurm",
            executor_options={},
            executor_ref=task_id.split("_")[0],
            owner_id=owner_id,
            runs=[
                Run(seed=s, total_steps=20, attempts=1, lease_owner=f"slurm:{task_id}", checkpoint_path=checkpoint)
                for s in seeds
            ],
        )
        session.add(job)
        session.flush()
        return job.id, get_settings().artifacts_path / out / CONFIG.name


def write(path: Path, payload: Mapping[str, Any] | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))


def started(root: Path, seed: int, *, start_step: int = 0) -> None:
    """What `JobDirectory.start` writes when a task starts (or resumes from `start_step`)."""
    record = {
        "device": "cpu (x86_64)",
        "precision": "fp32",
        "code_version": "abc",
        "torch_version": "2.x",
        "start_step": start_step,
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    write(root / f"seed_{seed}" / "config.json", record)


def job_runs(job_id: int) -> list[Run]:
    with new_session() as session:
        return list(session.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.seed)))


def curve(run_id: int, name: str) -> list[tuple[int, float | None]]:
    with new_session() as session:
        query = select(Metric.step, Metric.value).where(Metric.run_id == run_id, Metric.name == name)
        return [tuple(row) for row in session.execute(query.order_by(Metric.step))]


@pytest.mark.usefixtures("database")
def test_progress_is_read_from_the_files_and_the_run_runs() -> None:
    job_id, root = held_job([0], "400_0")
    started(root, 0, start_step=10)
    write(root / "seed_0" / "metrics.jsonl", '{"step": 5, "loss": 1.5}\n{"step": 10, "loss": NaN}\n{"step": 15, "lo')
    slurm = ScriptedSlurm()
    slurm.states["400_0"] = "RUNNING"

    SlurmCollector(slurm).collect()
    [run] = job_runs(job_id)
    assert (run.state, run.step, run.attempts, run.lease_owner) == (State.RUNNING, 10, 1, "slurm:400_0")
    assert run.lease_expires_at is not None and run.heartbeat_at is not None
    assert (run.device, run.precision, run.resume_step) == ("cpu (x86_64)", "fp32", 10)
    assert curve(run.id, "loss") == [(5, 1.5), (10, None)]  # the half-written line waits for the next pass


@pytest.mark.usefixtures("database")
def test_time_limit_submits_the_group_again_into_its_directory_until_max_attempts() -> None:
    job_id, root = held_job([0, 1], "401_0")
    for seed in (0, 1):
        started(root, seed)
    slurm = ScriptedSlurm()
    slurm.states["401_0"] = "TIMEOUT"

    SlurmCollector(slurm).collect()
    [again] = slurm.submitted
    assert again["seeds"] == [0, 1] and f"OUT={root.parent}\n" in again["script"].text  # resumes from the checkpoint
    assert not again["script"].is_array  # the group trains in one task, as before
    config_file = root.parent / "job_config.json"
    assert f"--config {config_file} " in again["script"].text
    assert " --engine reuse" in again["script"].text  # the server's IRED_ENGINE, as its Celery workers use
    assert json.loads(config_file.read_text()) == CONFIG.model_dump()  # the job's config, whatever the presets say
    assert [(r.state, r.attempts, r.lease_owner) for r in job_runs(job_id)] == [(State.RUNNING, 2, "slurm:501")] * 2

    slurm.states["501"] = "PREEMPTED"  # IRED_MAX_ATTEMPTS=2 in the tests
    SlurmCollector(slurm).collect()
    assert len(slurm.submitted) == 1
    for run in job_runs(job_id):
        assert run.state == State.FAILED and run.lease_owner is None
        assert run.error == "gave up after 2 attempts (max_attempts); last: SLURM task 501 PREEMPTED: " + (
            "preempted; retry resumes from the checkpoint"
        )


@pytest.mark.usefixtures("database")
def test_result_files_end_the_runs_with_their_metrics_and_checkpoint() -> None:
    job_id, root = held_job([2, 3], "402_0")
    for seed, status in ((2, "succeeded"), (3, "diverged")):
        started(root, seed)
        write(root / f"seed_{seed}" / "metrics.jsonl", json.dumps({"step": 20, "val_mse": 0.01}) + "\n")
        ok = status == "succeeded"
        result = {
            "status": status,
            "step": 20,
            "metrics": {"val_mse": 0.01} if ok else {},
            "error": None if ok else "diverged at step 7",
            "finished_at": "2026-01-01T00:01:30+00:00",
        }
        write(root / f"seed_{seed}" / "result.json", result)
    write(root / "checkpoint_seeds_2_3.pt", "weights")
    slurm = ScriptedSlurm()
    slurm.states["402_0"] = "RUNNING"  # sacct lags behind the files

    SlurmCollector(slurm).collect()
    good, bad = job_runs(job_id)
    assert (good.state, good.step, good.final_metrics, good.train_seconds) == (
        State.SUCCEEDED,
        20,
        {"val_mse": 0.01},
        90,
    )
    assert (bad.state, bad.error) == (State.DIVERGED, "diverged at step 7")
    assert curve(good.id, "val_mse") == [(20, 0.01)]
    with new_session() as session:
        [artifact] = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        assert (artifact.run_id, artifact.size_bytes) == (None, len("weights"))


@pytest.mark.usefixtures("database")
def test_a_failed_task_fails_its_runs_with_the_error_and_scancel_outside_cancels() -> None:
    failed_job, root = held_job([0], "403_0")
    progress = "q204_dcd_full: 1 seed(s) on cuda\n 10%|█         | 2/20 [00:01<00:09, 1.9step/s]\r 15%|█▌ | 3/20"
    traceback = "\nTraceback (most recent call last):\n  ...\nRuntimeError: CUDA error: out of memory\n"
    closed_at_exit = "\r 15%|█▌ | 3/20 [00:02<00:08, 1.9step/s]\n"  # a progress bar printed after the traceback
    write(task_log(root.parent / "slurm", CONFIG.name, "403_0"), progress + traceback + closed_at_exit)
    cancelled_job, _ = held_job([1], "404_0")
    slurm = ScriptedSlurm()
    slurm.states.update({"403_0": "FAILED", "404_0": "CANCELLED by 0"})

    SlurmCollector(slurm).collect()
    [failed] = job_runs(failed_job)
    assert (failed.state, failed.error) == (
        State.FAILED,
        "SLURM task 403_0 FAILED: non-zero exit code; RuntimeError: CUDA error: out of memory",
    )
    [cancelled] = job_runs(cancelled_job)
    assert (cancelled.state, cancelled.error) == (
        State.CANCELLED,
        "SLURM task 404_0 CANCELLED by 0: cancelled by uid 0",
    )
    assert slurm.submitted == []
