"""Runs that did not succeed, summarised per config, so that a comparison shows them instead of
quietly dropping them: "Q-202: 5 of 5 diverged at steps 125–250 (denoiser blow-up: loss_denoise)".

A run counts as failed when its status is `diverged` (ired_core.divergence) or `failed` (an error:
out of memory, a lost worker). Cancelled runs were stopped by someone and are not failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FAILED_STATUSES = ("diverged", "failed")


@dataclass(frozen=True)
class RunRecord:
    """One run's outcome as a comparison needs it: its status, last step and why it failed."""

    config: str
    seed: int
    status: str
    step: int | None = None
    reason: str | None = None  # "denoiser blow-up: loss_denoise" or an error's first line

    @classmethod
    def from_outcome(
        cls,
        config: str,
        seed: int,
        status: str,
        step: int | None,
        divergence: Mapping[str, Any] | None,
        error: str | None,
    ) -> RunRecord:
        """From a result.json or a database run: the divergence's rule and diagnostic, else the error."""
        if divergence:
            reason = f"{divergence['rule']}: {divergence['diagnostic']}"
        else:
            reason = error.splitlines()[0][:120] if error else None
        return cls(config=config, seed=seed, status=status, step=step, reason=reason)


@dataclass(frozen=True)
class FailedRuns:
    """How many of a config's runs failed, at which steps and why."""

    config: str
    runs: int  # every run of the config in the selection, failed or not
    diverged: int
    failed: int
    first_step: int | None
    last_step: int | None
    reasons: tuple[str, ...]

    @property
    def count(self) -> int:
        return self.diverged + self.failed

    def describe(self) -> str:
        """'5 of 5 diverged at steps 125–250 (denoiser blow-up: loss_denoise)'."""
        parts = [f"{n} {what}" for n, what in ((self.diverged, "diverged"), (self.failed, "failed")) if n]
        text = f"{' and '.join(parts)} of {self.runs} run{'s' if self.runs != 1 else ''}"
        if self.first_step is not None:
            steps = (
                f"step {self.first_step}"
                if self.first_step == self.last_step
                else f"steps {self.first_step}–{self.last_step}"
            )
            text += f" at {steps}"
        return text + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


def summarise_failures(records: Iterable[RunRecord]) -> dict[str, FailedRuns]:
    """Per config with at least one failed run: the counts, the step range and the distinct reasons."""
    by_config: dict[str, list[RunRecord]] = {}
    for record in records:
        by_config.setdefault(record.config, []).append(record)
    summaries = {}
    for config, runs in by_config.items():
        failed = [r for r in runs if r.status in FAILED_STATUSES]
        if not failed:
            continue
        steps = [r.step for r in failed if r.step is not None]
        summaries[config] = FailedRuns(
            config=config,
            runs=len(runs),
            diverged=sum(r.status == "diverged" for r in failed),
            failed=sum(r.status == "failed" for r in failed),
            first_step=min(steps) if steps else None,
            last_step=max(steps) if steps else None,
            reasons=tuple(sorted({r.reason for r in failed if r.reason})),
        )
    return summaries
