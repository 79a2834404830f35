"""ired_dcd.slurm against the real single-node SLURM that `.ci/slurm-setup.sh` starts.

The `*_entry` functions are what the array tasks run: the tasks import them from this module by
name (`tests.worker.test_slurm_cluster:...`), from the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ired_core.configs import parse_overrides
from ired_dcd.slurm.cluster import SlurmExecutor, SlurmSubmission, SlurmTaskStatus, read_task_result
from ired_dcd.slurm.sbatch import render_sbatch
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.states import State
from tests.utils.services import wait_for
from tests.utils.slurm import require_sacct, settled_in_slurm

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.worker.test_slurm_cluster"
LIMIT_S = 50.0


# --- what the array tasks run ---------------------------------------------------------------------


def square_entry(*, job_id: int, seeds: list[int], out_dir: str, should_stop: Callable[[], bool], scale: int) -> dict:
    """Write one result file per seed (as training does) and return a small summary."""
    for seed in seeds:
        Path(out_dir, f"seed_{seed}.json").write_text(json.dumps({"seed": seed, "value": seed * seed * scale}))
    return {"job_id": job_id, "seeds": seeds, "task": os.environ["SLURM_ARRAY_TASK_ID"]}


def sleep_entry(*, job_id: int, seeds: list[int], out_dir: str, should_stop: Callable[[], bool]) -> str:
    """Sleep up to five minutes, marking in out_dir that it started."""
    Path(out_dir, "started").write_text("")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not should_stop():
        time.sleep(0.2)
    return "stopped"


def counting_entry(*, job_id: int, seeds: list[int], out_dir: str, should_stop: Callable[[], bool], steps: int) -> dict:
    """A resumable 'training': counts to `steps`, checkpointing the count in out_dir when told to stop."""
    checkpoint = Path(out_dir, "checkpoint.json")
    state = json.loads(checkpoint.read_text()) if checkpoint.exists() else {"step": 0, "starts": 0}
    state["starts"] += 1
    while state["step"] < steps and not should_stop():
        state["step"] += 1
        Path(out_dir, "progress").write_text(str(state["step"]))
        time.sleep(0.25)
    checkpoint.write_text(json.dumps(state))
    return {**state, "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0"))}


# --- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(params=["sacct", "squeue"])
def state_source(request: pytest.FixtureRequest) -> str:
    if request.param == "sacct":
        require_sacct()
    return request.param


@pytest.fixture
def in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks start in the submitting directory; from the root they can import `tests.worker...`."""
    monkeypatch.chdir(ROOT)


def cpu_settings(**changes: object) -> SlurmSettings:
    base = {"gpus_per_task": 0, "cpus_per_task": 1, "mem_gb": None, "time_minutes": 5, "poll_interval_s": 0.5}
    return SlurmSettings.from_mapping({**base, **changes})


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


def logs(submission: SlurmSubmission) -> str:
    """Every task log of a submission, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(Path(submission.folder).glob("*.err")))


def wait_for_file(path: Path) -> None:
    wait_for(path.exists, timeout=LIMIT_S, what=f"{path} to appear", interval=0.2)


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("in_repo_root")
def test_array_of_two_completes_with_results(tmp_path: Path, state_source: str, slurm_jobs: list[str]) -> None:
    executor = SlurmExecutor(cpu_settings(state_source=state_source))
    name = f"ired-test-{tmp_path.name}"
    submission = executor.submit(
        7, [3, 4], entry=f"{MODULE}:square_entry", out_dir=tmp_path, options={"scale": 10}, name=name
    )
    slurm_jobs.append(submission.slurm_job_id)
    assert len(submission.task_ids) == 2 and submission.seed_groups == [[3], [4]]
    assert submission.task_ids == [f"{submission.slurm_job_id}_0", f"{submission.slurm_job_id}_1"]

    final = wait_until(executor, submission.task_ids, lambda s: s.change.final, lambda: logs(submission))
    assert {s.change.state for s in final.values()} == {State.SUCCEEDED}, logs(submission)
    # a fresh executor (a restarted server, before it tracks its submissions) learns it from SLURM alone
    from_slurm = wait_until(
        SlurmExecutor(cpu_settings(state_source=state_source)), submission.task_ids, settled_in_slurm
    )
    assert {s.change.state for s in from_slurm.values()} == {State.SUCCEEDED}
    # found by name once ended, from squeue alone too: accounting can lag behind a job that just ended
    assert SlurmExecutor(cpu_settings(state_source=state_source)).find(name) == submission.task_ids
    for index, task_id in enumerate(submission.task_ids):
        result = read_task_result(submission.folder, task_id)
        assert result is not None and result.ok
        assert result.value == {"job_id": 7, "seeds": submission.seed_groups[index], "task": str(index)}
    written = {json.loads(p.read_text())["seed"]: json.loads(p.read_text())["value"] for p in tmp_path.glob("seed_*")}
    assert written == {3: 90, 4: 160}


@pytest.mark.usefixtures("in_repo_root")
def test_cancel_maps_to_cancelled(tmp_path: Path, state_source: str, slurm_jobs: list[str]) -> None:
    executor = SlurmExecutor(cpu_settings(state_source=state_source))
    submission = executor.submit(8, [0], entry=f"{MODULE}:sleep_entry", out_dir=tmp_path)
    slurm_jobs.append(submission.slurm_job_id)
    wait_until(executor, submission.task_ids, lambda s: s.change.state == State.RUNNING, lambda: logs(submission))
    wait_for_file(tmp_path / "started")

    executor.cancel(submission.slurm_job_id)
    final = wait_until(executor, submission.task_ids, settled_in_slurm, lambda: logs(submission))
    change = final[submission.task_ids[0]].change
    assert (change.state, change.requeue) == (State.CANCELLED, False)
    assert read_task_result(submission.folder, submission.task_ids[0]) is None  # stopped: no result


@pytest.mark.usefixtures("in_repo_root")
def test_time_limit_warning_requeues_and_resumes(tmp_path: Path, slurm_jobs: list[str]) -> None:
    executor = SlurmExecutor(cpu_settings())
    submission = executor.submit(9, [0], entry=f"{MODULE}:counting_entry", out_dir=tmp_path, options={"steps": 40})
    slurm_jobs.append(submission.slurm_job_id)
    task_id = submission.task_ids[0]
    wait_for_file(tmp_path / "progress")

    # what SLURM sends `signal_seconds` before the time limit (--signal=USR2@120)
    subprocess.run(["scancel", "--signal=USR2", task_id], check=True, timeout=30)
    final = wait_until(executor, [task_id], lambda s: s.change.final, lambda: logs(submission))
    assert final[task_id].change.state == State.SUCCEEDED, logs(submission)
    result = read_task_result(submission.folder, task_id)
    assert result is not None and result.ok
    assert result.value == {"step": 40, "starts": 2, "restarts": 1}
    # the result file comes before the task's exit: wait for SLURM's own word, which teardown must not preempt
    from_slurm = wait_until(SlurmExecutor(cpu_settings()), [task_id], settled_in_slurm)
    assert from_slurm[task_id].change.state == State.SUCCEEDED


def test_rendered_sbatch_script_runs_an_array(tmp_path: Path, slurm_jobs: list[str]) -> None:
    # the script as `ired-dcd sbatch` prints it, with a stub `ired-dcd` that records its arguments
    bin_dir, out, log_dir = tmp_path / "bin", tmp_path / "out dir", tmp_path / "logs"
    for directory in (bin_dir, out, log_dir):
        directory.mkdir()
    stub = bin_dir / "ired-dcd"
    stub.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "seed = sys.argv[sys.argv.index('--seeds') + 1]\n"
        "open(os.path.join(out, 'argv_' + seed + '.json'), 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    stub.chmod(0o755)
    settings = cpu_settings(log_dir=str(log_dir), setup_commands=[f"export PATH={bin_dir}:$PATH"])
    overrides = {"description": "it's $(odd) `x`", "train_steps": 20}
    script = tmp_path / "q204.sbatch"
    script.write_text(render_sbatch("q204", [2, 5, 9], settings, str(out), overrides))

    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    array_id = submitted.stdout.strip().split(";")[0]
    slurm_jobs.append(array_id)
    task_ids = [f"{array_id}_{i}" for i in range(3)]
    executor = SlurmExecutor(cpu_settings())
    final = wait_until(executor, task_ids, lambda s: s.change.final, lambda: "\n".join(map(str, log_dir.iterdir())))
    assert {s.change.state for s in final.values()} == {State.SUCCEEDED}
    for seed in (2, 5, 9):
        argv = json.loads((out / f"argv_{seed}.json").read_text())
        assert argv[:3] == ["train", "--config", "q204_dcd_full"]
        assert argv[argv.index("--device") + 1] == "cpu"
        assert parse_overrides([argv[i + 1] for i, a in enumerate(argv) if a == "--set"]) == overrides
