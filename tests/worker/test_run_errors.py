"""Errors that end a run at once (one attempt, a clear message) instead of a hung or endlessly retried job.

Both are made for real inside a real worker: an allocation that fails in the real trainer (the worker
runs under an address-space limit; a CUDA device running out of memory cannot be made here, there is no
GPU) and a full disk under the checkpoints (a real 64 KiB tmpfs as the artifacts folder; needs root to
mount it). The wording of each out-of-memory message is checked on `failure_message` with real errors.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ired_dcd.services.execution import failure_message
from ired_dcd.settings import Settings
from tests.conftest import Lab
from tests.utils.gates import unavailable
from tests.utils.services import (
    ADDRESS_SPACE,
    TOO_BIG,
    TOO_BIG_ALLOCATION,
    ServiceProcess,
    ended,
    follow_states,
    job_body,
)

pytestmark = pytest.mark.services

ADVICE = "lower batch_size, or train fewer seeds per task (IRED_SPLIT_SEEDS=true), then retry the job"
CPU_OUT_OF_MEMORY = f"out of memory (CPU: the worker's memory or address-space limit): {ADVICE} ("


def submit(lab: Lab, **changes: Any) -> dict[str, Any]:
    response = lab.http.post("/jobs", json=job_body(**changes))
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def limited_worker(lab: Lab) -> Iterator[ServiceProcess]:
    """The module's only worker while the test runs, under an address-space limit."""
    worker = lab.start_worker("limited", address_space=ADDRESS_SPACE)
    yield worker
    worker.kill()


def test_an_allocation_that_fails_in_the_trainer_fails_the_runs_at_once_as_out_of_memory(
    lab: Lab, limited_worker: ServiceProcess
) -> None:
    fits = submit(lab, seeds=[0])
    _, fits = follow_states(lambda: lab.job(fits["id"]), until=ended, timeout=120)
    assert fits["state"] == "succeeded", fits  # the limit leaves room for training itself

    job = submit(lab, seeds=[0, 1], **TOO_BIG)
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    assert job["state"] == "failed"
    for run in job["runs"]:
        assert (run["state"], run["attempts"], run["worker"], run["step"]) == ("failed", 1, None, 1), run
        assert run["error"].startswith(CPU_OUT_OF_MEMORY), run["error"]
        assert TOO_BIG_ALLOCATION in run["error"]
    assert limited_worker.process.poll() is None, limited_worker.log()[-3000:]  # the worker itself lives on


@pytest.mark.parametrize(
    ("allocate", "detail"),
    [
        (lambda: torch.empty(1 << 62, dtype=torch.uint8), "[enforce fail at alloc_cpu.cpp"),
        (lambda: np.empty(1 << 62, dtype=np.uint8), "Unable to allocate 4.00 EiB"),
    ],
    ids=["torch", "numpy"],
)
def test_a_cpu_allocation_that_fails_is_reported_as_out_of_memory(allocate: Callable[[], object], detail: str) -> None:
    with pytest.raises((RuntimeError, MemoryError)) as failed:
        allocate()  # 4 EiB: more than any address space
    message = failure_message(failed.value, settings=Settings())
    assert message.startswith(CPU_OUT_OF_MEMORY + detail) and message.endswith(")"), message


def test_cuda_out_of_memory_is_reported_with_its_first_line() -> None:
    error = torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nSee the allocator docs"
    )
    assert failure_message(error, settings=Settings()) == (
        f"CUDA out of memory: {ADVICE} (CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total))"
    )


def test_other_training_errors_keep_their_type_and_message() -> None:
    error = ValueError("seeds: need 1–64 distinct seeds, got []")
    assert failure_message(error, settings=Settings()) == "ValueError: seeds: need 1–64 distinct seeds, got []"


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A 64 KiB tmpfs: a tiny model's first checkpoint (≈ 90 KB) does not fit."""
    folder = Path(tempfile.mkdtemp(prefix="ired-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        folder.rmdir()
        unavailable(f"cannot mount a tmpfs here (root needed): {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)
    folder.rmdir()


@pytest.fixture
def full_disk_worker(lab: Lab, full_disk: Path) -> Iterator[ServiceProcess]:
    """The module's only worker while the test runs, with its artifacts on the full tmpfs."""
    worker = lab.start_worker("full-disk", IRED_ARTIFACTS_DIR=str(full_disk))
    yield worker
    worker.kill()


@pytest.mark.usefixtures("full_disk_worker")
def test_disk_full_fails_the_runs_with_a_clear_error(lab: Lab, full_disk: Path) -> None:
    job = submit(lab, seeds=[0], checkpoint_every=10, train_steps=40)
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    run = job["runs"][0]
    assert (job["state"], run["state"], run["attempts"]) == ("failed", "failed", 1)
    assert run["error"].startswith(f"disk full: no space left on the device while writing {full_disk}/job-")
    assert run["error"].endswith(".pt; free space, then retry the job")
    assert not list(full_disk.rglob("*.tmp-*"))  # the partial checkpoint was removed
