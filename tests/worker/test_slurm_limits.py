"""Service jobs that SLURM itself stops, on the real single-node SLURM (.ci/slurm-setup.sh): a real time
limit, resubmission until max attempts, and a task that fails on the node. tests/worker/test_slurm_collector.py
covers the same decisions with SLURM's answers scripted.

SLURM's shortest time limit is one minute (`--time=0:20` is rounded up to 1:00); slurmctld checks limits
every 30 s and kills KillWait (10 s) after SIGTERM, so an attempt that runs into it lasts 60–100 s.

This module's server limits every task's address space (`ulimit -v` in its setup commands, which srun
passes on to the task), as a node's memory limit would.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Lab
from tests.utils.services import ADDRESS_SPACE, TOO_BIG, TOO_BIG_ALLOCATION, ended, follow_states
from tests.utils.slurm import ended_in_slurm, slurm_body, submit_slurm_job, task_logs

pytestmark = [pytest.mark.slurm, pytest.mark.services]

SLURM_SERVER_SETTINGS = {  # read by the slurm_lab fixture (tests/worker/conftest.py)
    "IRED_SLURM__SETUP_COMMANDS": f'["ulimit -v {ADDRESS_SPACE // 1024}"]',  # KiB
    "IRED_SLURM__SIGNAL_SECONDS": "10",  # the time-limit warning: the smallest the settings allow
}
# Step 1 is trained and checkpointed; the first evaluation, at step 2, runs 10⁶ problems one at a time (hours
# on any machine) and polls no stop request, so the time-limit warning cannot stop it: SLURM kills the task.
OUTLASTS_THE_LIMIT = {
    "checkpoint_every": 1,
    "log_every": 1,
    "eval_every": 2,
    "val_size": 1_000_000,
    "eval_batch_size": 1,
}
TWO_ATTEMPTS_S = 420  # two attempts of up to 100 s each, queueing and interpreter start-up on a busy machine
LIMIT_S = 120


def curve_steps(lab: Lab, run_id: int, name: str) -> list[int]:
    series = lab.http.get(f"/runs/{run_id}/metrics", params={"names": name}).json()["series"]
    return series[0]["steps"] if series else []


def test_time_limit_resubmits_from_the_checkpoint_until_max_attempts(slurm_lab: Lab, slurm_jobs: list[str]) -> None:
    job = submit_slurm_job(slurm_lab, slurm_body([0], slurm={"time_minutes": 1}, **OUTLASTS_THE_LIMIT), slurm_jobs)
    first = job["runs"][0]["worker"].removeprefix("slurm:")

    def moved_on(job: dict[str, Any]) -> bool:  # held by another SLURM task, or ended
        # not by the submission's intent (`slurm-submit:<token>`): that is held only until sbatch answers
        worker = job["runs"][0]["worker"] or ""
        return (worker.startswith("slurm:") and worker != f"slurm:{first}") or ended(job)

    _, job = follow_states(lambda: slurm_lab.job(job["id"]), until=moved_on, timeout=TWO_ATTEMPTS_S)
    assert job["runs"][0]["worker"], f"ended without being submitted again: {job}\n{task_logs(job['id'])}"
    second = job["runs"][0]["worker"].removeprefix("slurm:")
    slurm_jobs.append(second)  # cancelled after the test if left behind
    _, job = follow_states(lambda: slurm_lab.job(job["id"]), until=ended, timeout=TWO_ATTEMPTS_S)

    run = job["runs"][0]
    assert (job["state"], run["state"], run["attempts"]) == ("failed", "failed", 2), f"{run}\n{task_logs(job['id'])}"
    assert run["error"] == (
        f"gave up after 2 attempts (max_attempts); last: SLURM task {second} TIMEOUT: "
        "time limit reached; retry resumes from the checkpoint"
    )
    assert run["resume_step"] == 1  # the second attempt started from the first one's checkpoint
    assert curve_steps(slurm_lab, run["id"], "loss") == [1]  # written by the first attempt, not repeated
    in_slurm = ended_in_slurm([first, second], timeout=LIMIT_S)
    assert {task: status.slurm_state for task, status in in_slurm.items()} == {first: "TIMEOUT", second: "TIMEOUT"}


def test_a_task_that_fails_on_the_node_fails_its_run_with_the_error(slurm_lab: Lab, slurm_jobs: list[str]) -> None:
    job = submit_slurm_job(slurm_lab, slurm_body([0], **TOO_BIG), slurm_jobs)
    task = job["runs"][0]["worker"].removeprefix("slurm:")
    _, job = follow_states(lambda: slurm_lab.job(job["id"]), until=ended, timeout=LIMIT_S)

    run = job["runs"][0]
    assert (job["state"], run["state"], run["attempts"], run["step"]) == ("failed", "failed", 1, 1), task_logs(
        job["id"]
    )
    # the error its traceback ends with, from the task's log on the shared filesystem
    assert run["error"].startswith(
        f"SLURM task {task} FAILED: non-zero exit code; RuntimeError: [enforce fail at alloc_cpu.cpp"
    ), run["error"]
    assert TOO_BIG_ALLOCATION in run["error"]
    assert ended_in_slurm([task], timeout=LIMIT_S)[task].slurm_state == "FAILED"
