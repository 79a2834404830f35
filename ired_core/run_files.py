"""The on-disk layout of a training job, as `ired-dcd train` and SLURM tasks write it.

    OUT/<preset>/checkpoint_seeds_<s1>_<s2>….pt      the ensemble checkpoint (exact resume)
    OUT/<preset>/seed_<k>/config.json                resolved config, hash, seed, versions, device, precision,
                                                     the step this start resumed from
    OUT/<preset>/seed_<k>/metrics.jsonl              {"step": n, "name": value, …} per log/eval interval
    OUT/<preset>/seed_<k>/result.json                final status and metrics (written last, atomically)

`ired_core.results_dir` reads `result.json` files back for `ired-dcd analyze` and import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ired_core.configs import TrainConfig, config_hash

if TYPE_CHECKING:  # the paths need no torch: the job server computes them without importing it
    from ired_core.trainer import MetricsEvent, SeedOutcome, Trainer

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class JobDirectory:
    """Writes one job's files; on resume, drops metric lines past the checkpoint's step."""

    def __init__(self, root: Path, config: TrainConfig, seeds: Sequence[int], tags: Sequence[str] = ()) -> None:
        self.root = Path(root) / config.name
        self.config = config
        self.seeds = list(seeds)
        self.tags = list(tags)

    @property
    def checkpoint_path(self) -> Path:
        return self.root / f"checkpoint_seeds_{'_'.join(map(str, self.seeds))}.pt"

    def seed_dir(self, seed: int) -> Path:
        return self.root / f"seed_{seed}"

    def resume(self, trainer: Trainer) -> bool:
        """Load the checkpoint into `trainer` if there is one (exact resume); True when it did."""
        if not self.checkpoint_path.exists():
            return False
        trainer.load_checkpoint(self.checkpoint_path)
        return True

    def train(
        self,
        trainer: Trainer,
        overrides: dict[str, Any],
        *,
        should_stop: Callable[[], bool],
        on_metrics: Callable[[MetricsEvent], None] | None = None,
    ) -> list[SeedOutcome] | None:
        """Train into this directory: config files, metric lines, checkpoints, then the result files.

        Returns the outcomes, or None when `should_stop()` turned True: the trainer has checkpointed
        and no `result.json` is written, so a stopped job is never read as finished.
        """

        def record(event: MetricsEvent) -> None:
            self.append_metrics(event)
            if on_metrics is not None:
                on_metrics(event)

        self.start(trainer, overrides)
        outcomes = trainer.run(on_metrics=record, should_stop=should_stop, checkpoint_path=self.checkpoint_path)
        if should_stop():
            return None
        self.finish(outcomes)
        return outcomes

    def start(self, trainer: Trainer, overrides: dict[str, Any]) -> None:
        """Write each seed's config.json and trim metrics.jsonl to the trainer's current step."""
        import torch

        from ired_core.trainer import code_version

        for seed in self.seeds:
            directory = self.seed_dir(seed)
            directory.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(
                directory / CONFIG_FILE,
                {
                    "preset": self.config.name,
                    "overrides": overrides,
                    "config": self.config.model_dump(),
                    "config_hash": config_hash(self.config),
                    "seed": seed,
                    "code_version": code_version(),
                    "torch_version": torch.__version__,
                    "device": trainer.device_name,
                    "precision": trainer.precision,
                    "start_step": trainer.step,
                    "started_at": datetime.now(UTC).isoformat(),
                },
            )
            self._trim_metrics(directory / METRICS_FILE, trainer.step)

    @staticmethod
    def _trim_metrics(path: Path, last_step: int) -> None:
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
        path.write_text("".join(line + "\n" for line in kept))

    def append_metrics(self, event: MetricsEvent) -> None:
        for seed, values in event.per_seed.items():
            with (self.seed_dir(seed) / METRICS_FILE).open("a") as handle:
                handle.write(json.dumps({"step": event.step, **values}) + "\n")

    def finish(self, outcomes: Sequence[SeedOutcome]) -> None:
        for outcome in outcomes:
            _write_json_atomic(
                self.seed_dir(outcome.seed) / RESULT_FILE,
                {
                    "config": self.config.name,
                    "config_hash": config_hash(self.config),
                    "seed": outcome.seed,
                    "status": outcome.status,
                    "step": outcome.step,
                    "metrics": outcome.final_metrics,
                    "error": outcome.error,
                    "divergence": outcome.divergence.to_dict() if outcome.divergence is not None else None,
                    "tags": self.tags,
                    "finished_at": datetime.now(UTC).isoformat(),
                },
            )
