"""What a SLURM array task of a service job runs on the compute node (no database, no network).

The task trains its seed group into the job's output directory on the shared filesystem, in the
layout of `ired_core.run_files.JobDirectory` (the same files `ired-dcd train` writes), resuming from
the group's checkpoint when one is there. The server's collector (`ired_dcd.services.slurm_jobs`) reads
those files back into the database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ired_core.configs import TrainConfig
from ired_core.run_files import JobDirectory


def run_seeds(
    *,
    job_id: int,
    seeds: list[int],
    out_dir: str,
    should_stop: Callable[[], bool],
    config: dict[str, Any],
    overrides: dict[str, Any],
    device: str,
) -> None:
    """Train `seeds` with the job's resolved `config` into `out_dir` on `device`.

    `job_id` is part of `run_slurm_task`'s calling convention (`out_dir` already belongs to the job).
    When `should_stop()` turns True (SIGTERM, time-limit warning) the trainer checkpoints and no
    `result.json` is written; `run_slurm_task` then ends the task without a result.
    """
    from ired_core.trainer import Trainer  # here: the server imports this module to check it, without torch

    trainer = Trainer(TrainConfig(**config), seeds, device=device)
    directory = JobDirectory(Path(out_dir), trainer.config, seeds)
    directory.resume(trainer)
    directory.train(trainer, overrides, should_stop=should_stop)
