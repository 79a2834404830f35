"""ired_dcd.slurm against the real single-node SLURM that `.ci/slurm-setup.sh` starts.

Each test submits the script `ired-dcd sbatch` prints (and the server submits), whose tasks run the
real `ired-dcd train` on a tiny config with this interpreter.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ired_core.configs import resolve_config
from ired_dcd.slurm.cluster import SlurmExecutor, SlurmTaskStatus
from ired_dcd.slurm.sbatch import render_sbatch
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.states import State
from tests.utils.services import LONG_STEPS, tiny, wait_for
from tests.utils.slurm import SERVER_SLURM, require_sacct, settled_in_slurm

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

LIMIT_S = 90.0
NAME = resolve_config("q204").name


@pytest.fixture(params=["sacct", "squeue"])
def state_source(request: pytest.FixtureRequest) -> str:
    if request.param == "sacct":
        require_sacct()
    return request.param


def cpu_settings(**changes: object) -> SlurmSettings:
    base = {"gpus_per_task": 0, "cpus_per_task": 1, "mem_gb": None, "time_minutes": 5, "poll_interval_s": 0.5}
    return SlurmSettings.from_mapping({**base, "python": SERVER_SLURM["IRED_SLURM__PYTHON"], **changes})


def submit(tmp_path: Path, seeds: list[int], overrides: dict[str, Any], **settings: object) -> tuple[list[str], Path]:
    """Render and sbatch a tiny training of q204 for `seeds` into tmp_path/out; (task ids, out)."""
    out = tmp_path / "out"
    script = render_sbatch("q204", seeds, cpu_settings(**settings), str(out), overrides, job_name=tmp_path.name)
    return SlurmExecutor(cpu_settings(**settings)).submit(script, tmp_path / "job.sbatch"), out


def wait_until(
    executor: SlurmExecutor,
    task_ids: list[str],
    done: Callable[[SlurmTaskStatus], bool],
    describe: Callable[[], str] = str,
) -> dict[str, SlurmTaskStatus]:
    latest: dict[str, SlurmTaskStatus] = {}

    def check() -> bool:
        latest.update(executor.status(task_ids))
        return len(latest) == len(task_ids) and all(done(s) for s in latest.values())

    try:
        wait_for(check, timeout=LIMIT_S, what=f"tasks {task_ids}", interval=0.5)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}: {latest}\n{describe()}") from None
    return latest


def logs(out: Path) -> Callable[[], str]:
    """The task logs under out/slurm, for assertion messages."""
    return lambda: "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(out.glob("slurm/*.err")))


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def logged_a_step(out: Path, seed: int) -> bool:
    metrics = out / NAME / f"seed_{seed}" / "metrics.jsonl"
    return metrics.exists() and metrics.read_text().count("\n") > 0


# --- tests ------------------------------------------------------------------------------------------


def test_an_array_of_two_trains_each_seed_and_is_found_by_its_name(
    tmp_path: Path, state_source: str, slurm_jobs: list[str]
) -> None:
    task_ids, out = submit(tmp_path, [3, 4], tiny(train_steps=20, eval_every=10), state_source=state_source)
    slurm_jobs.append(task_ids[0].split("_")[0])
    assert task_ids == [f"{task_ids[0].split('_')[0]}_{index}" for index in (0, 1)]

    executor = SlurmExecutor(cpu_settings(state_source=state_source))
    final = wait_until(executor, task_ids, settled_in_slurm, logs(out))
    assert {s.change.state for s in final.values()} == {State.SUCCEEDED}, logs(out)()
    for seed in (3, 4):
        result = read(out / NAME / f"seed_{seed}" / "result.json")
        assert (result["status"], result["step"]) == ("succeeded", 20)
    # found by name once ended, from squeue alone too: accounting can lag behind a job that just ended
    assert SlurmExecutor(cpu_settings(state_source=state_source)).find(tmp_path.name) == task_ids


def test_one_task_trains_every_seed_together(tmp_path: Path, slurm_jobs: list[str]) -> None:
    task_ids, out = submit(tmp_path, [1, 2], tiny(train_steps=10), array_mode="all_seeds_one_task")
    slurm_jobs += task_ids
    assert len(task_ids) == 1 and task_ids[0].isdigit()  # a plain job, no array

    final = wait_until(SlurmExecutor(cpu_settings()), task_ids, settled_in_slurm, logs(out))
    assert final[task_ids[0]].change.state == State.SUCCEEDED, logs(out)()
    assert (out / NAME / "checkpoint_seeds_1_2.pt").exists()
    assert [read(out / NAME / f"seed_{seed}" / "result.json")["step"] for seed in (1, 2)] == [10, 10]


def test_cancel_stops_training_at_a_checkpoint_without_a_result(
    tmp_path: Path, state_source: str, slurm_jobs: list[str]
) -> None:
    task_ids, out = submit(tmp_path, [0], tiny(train_steps=LONG_STEPS), state_source=state_source)
    slurm_jobs += task_ids
    wait_for(lambda: logged_a_step(out, 0), timeout=LIMIT_S, what="training to log a step", interval=0.5)

    executor = SlurmExecutor(cpu_settings(state_source=state_source))
    executor.cancel(task_ids[0].split("_")[0])
    final = wait_until(executor, task_ids, settled_in_slurm, logs(out))
    change = final[task_ids[0]].change
    assert (change.state, change.requeue) == (State.CANCELLED, False)
    assert not (out / NAME / "seed_0" / "result.json").exists()  # stopped: no result
    assert "checkpoint saved" in (out / "slurm" / f"{NAME}_{task_ids[0]}.err").read_text()


def test_time_limit_warning_checkpoints_requeues_and_resumes(tmp_path: Path, slurm_jobs: list[str]) -> None:
    steps = 1500  # long enough to be running when the warning comes, short enough to finish after it
    task_ids, out = submit(tmp_path, [0], tiny(train_steps=steps, eval_every=500, checkpoint_every=500))
    slurm_jobs += task_ids
    wait_for(lambda: logged_a_step(out, 0), timeout=LIMIT_S, what="training to log a step", interval=0.5)

    # what SLURM sends the batch shell `signal_seconds` before the time limit (--signal=B:USR1@...)
    subprocess.run(["scancel", "--batch", "--signal=USR1", task_ids[0]], check=True, timeout=30)
    final = wait_until(SlurmExecutor(cpu_settings()), task_ids, settled_in_slurm, logs(out))
    assert final[task_ids[0]].change.state == State.SUCCEEDED, logs(out)()
    seed_dir = out / NAME / "seed_0"
    assert read(seed_dir / "result.json")["step"] == steps
    assert 0 < read(seed_dir / "config.json")["start_step"] < steps  # the second start resumed
    assert "stopped at step" in (out / "slurm" / f"{NAME}_{task_ids[0]}.err").read_text()
