"""Errors that end a run at once with a clear message instead of a hung or endlessly retried job:
CUDA out of memory (raised in-process: there is no GPU here) and a full disk under the checkpoints
(a real 64 KiB tmpfs as the artifacts folder of a real worker; needs root to mount it)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ired_core.trainer import Trainer
from ired_dcd.services.execution import execute_runs
from tests.conftest import Lab
from tests.utils.services import ended, follow_states, job_body

pytestmark = pytest.mark.services


def submit(lab: Lab, **changes: Any) -> dict[str, Any]:
    response = lab.http.post("/jobs", json=job_body(**changes))
    assert response.status_code == 201, response.text
    return response.json()


def test_cuda_out_of_memory_fails_the_runs_at_once(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*_args: Any, **_kwargs: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    monkeypatch.setattr(Trainer, "run", out_of_memory)
    job = submit(lab, seeds=[0, 1])
    started = time.monotonic()
    execute_runs([run["id"] for run in job["runs"]])  # the task's body, as a worker runs it
    assert time.monotonic() - started < 30
    job = lab.job(job["id"])
    assert job["state"] == "failed"
    for run in job["runs"]:
        assert (run["state"], run["attempts"], run["worker"]) == ("failed", 1, None)
        assert run["error"] == (
            "CUDA out of memory: lower batch_size, or train fewer seeds per task (IRED_SPLIT_SEEDS=true), "
            "then retry the job (CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total))"
        )


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A 64 KiB tmpfs: a tiny model's first checkpoint (≈ 90 KB) does not fit."""
    folder = Path(tempfile.mkdtemp(prefix="ired-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)
    folder.rmdir()


def test_disk_full_fails_the_runs_with_a_clear_error(lab: Lab, full_disk: Path) -> None:
    worker = lab.start_worker("full-disk", IRED_ARTIFACTS_DIR=str(full_disk))
    job = submit(lab, seeds=[0], checkpoint_every=10, train_steps=40)
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    run = job["runs"][0]
    assert (job["state"], run["state"], run["attempts"]) == ("failed", "failed", 1)
    assert run["error"].startswith(f"disk full: no space left on the device while writing {full_disk}/job-")
    assert run["error"].endswith(".pt; free space, then retry the job")
    assert not list(full_disk.rglob("*.tmp-*"))  # the partial checkpoint was removed
    worker.kill()
