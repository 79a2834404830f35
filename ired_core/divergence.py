"""Divergence: when a seed's training has failed, judged from its own diagnostics while it trains.

In IRED the denoiser *is* the energy's gradient, ε̂ = ∇_y E, so a training that destroys the energy
destroys the denoiser with it. A seed has diverged when one of these rules holds (each threshold is a
`TrainConfig` field, and None turns that rule off):

1. not finite        the loss or a diagnostic is NaN or ±inf (checked on every step).
2. denoiser blow-up  loss_denoise > `diverge_denoise_max` (10).
                     ε ~ N(0, I), so the null denoiser ε̂ = 0 scores E‖ε‖²/D = 1. A loss ten times
                     that means ‖ε̂ − ε‖ ≈ √10·‖ε‖: the energy's gradient is no longer a denoiser.
                     Healthy runs never exceed 1 (the H200 curves of q100, q200 and q201 peak at 0.84).
3. energy blow-up    max(|E⁺|, |E⁻|) over a log interval > `diverge_energy_growth` (1000) × the
                     largest value of any earlier interval, or of D = rank² when that is larger
                     (E sums D squared entries, so D is its unit). Healthy energies rise at most ~10× per
                     interval while they find their scale (e.g. 13 → 137 over the first 100 steps,
                     then flat within 2×); short-run CD with an unbounded energy multiplies them by
                     10⁴–10⁹ per interval (H200: E⁻ 7·10² at step 250 → 3·10¹² at step 500).
4. collapse          loss_denoise ≥ `diverge_collapse_level` (0.98) once the step is past both the
                     energy warm-up and `diverge_collapse_after` (1000): the denoiser has become the
                     null predictor ε̂ ≈ 0 (SPEC pitfall 6: E pinned near 0 flattens ∇E).
5. not learning      at an evaluation at step ≥ `diverge_val_after` (10,000), val_mse is above the
                     held-out set's predict-the-mean MSE. By 10k steps at full size the sound arms
                     are at 0.0097 against 0.0142 for the mean.

The rules read the interval means the trainer logs every `log_every` steps and its evaluations, so
they cost nothing on the device. A diverged seed is stopped (its loss no longer reaches its weights)
and reported with the rule, the diagnostic, its value and the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ired_core.configs import TrainConfig

NULL_DENOISER_LOSS = 1.0
"""loss_denoise of ε̂ = 0: the mean of ε² over the entries, 1 in expectation for ε ~ N(0, I)."""


@dataclass(frozen=True)
class Divergence:
    """Why and when one seed's training was judged to have failed."""

    step: int
    rule: str  # "not finite", "denoiser blow-up", "energy blow-up", "collapse", "not learning"
    diagnostic: str
    value: float
    threshold: float

    @property
    def message(self) -> str:
        return (
            f"diverged at step {self.step} ({self.rule}): {self.diagnostic} = {self.value:.4g}, "
            f"threshold {self.threshold:.4g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite value or threshold becomes its text ("nan", "inf"), which Postgres'
        JSON type accepts and `from_dict` reads back."""
        record = asdict(self)
        for field in ("value", "threshold"):
            number = record[field]
            record[field] = number if math.isfinite(number) else str(number)
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Divergence:
        return cls(
            step=int(record["step"]),
            rule=str(record["rule"]),
            diagnostic=str(record["diagnostic"]),
            value=float(record["value"]),
            threshold=float(record["threshold"]),
        )


def not_finite(step: int, values: Mapping[str, float]) -> Divergence | None:
    """Rule 1 on one interval's values: the first value that is NaN or ±inf."""
    for name, value in values.items():
        if not math.isfinite(value):
            return Divergence(step, "not finite", name, value, math.inf)
    return None


class DivergenceMonitor:
    """Rules 2–5 for one seed; keeps the largest energy seen so far (rule 3) between intervals."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.warmup_steps = config.energy_warmup_frac * config.train_steps
        self.energy_unit = float(config.rank**2)
        self.largest_energy = 0.0

    def check_interval(self, step: int, diagnostics: Mapping[str, float]) -> Divergence | None:
        """Rules 1–4 on the means of one log interval ending at `step`."""
        cfg = self.config
        found = not_finite(step, diagnostics)
        if found is not None:
            return found
        loss_denoise = diagnostics["loss_denoise"]
        # 2. the denoiser blew up
        if cfg.diverge_denoise_max is not None and loss_denoise > cfg.diverge_denoise_max:
            return Divergence(step, "denoiser blow-up", "loss_denoise", loss_denoise, cfg.diverge_denoise_max)
        # 3. the energy jumped far above anything seen before
        name, energy = max(((k, abs(diagnostics[k])) for k in ("energy_pos", "energy_neg")), key=lambda kv: kv[1])
        if cfg.diverge_energy_growth is not None:
            limit = cfg.diverge_energy_growth * max(self.largest_energy, self.energy_unit)
            if energy > limit:
                return Divergence(step, "energy blow-up", name, energy, limit)
        self.largest_energy = max(self.largest_energy, energy)
        # 4. the denoiser collapsed to the null predictor after warm-up
        past_warmup = step >= max(self.warmup_steps, cfg.diverge_collapse_after)
        if cfg.diverge_collapse_level is not None and past_warmup and loss_denoise >= cfg.diverge_collapse_level:
            return Divergence(step, "collapse", "loss_denoise", loss_denoise, cfg.diverge_collapse_level)
        return None

    def check_validation(self, step: int, val_mse: float, predict_mean_mse: float) -> Divergence | None:
        """Rule 5 at an evaluation: val_mse above the held-out set's predict-the-mean MSE (and rule 1)."""
        if not math.isfinite(val_mse):
            return Divergence(step, "not finite", "val_mse", val_mse, math.inf)
        after = self.config.diverge_val_after
        if after is not None and step >= after and val_mse > predict_mean_mse:
            return Divergence(step, "not learning", "val_mse", val_mse, predict_mean_mse)
        return None

    def state_dict(self) -> dict[str, float]:
        return {"largest_energy": self.largest_energy}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.largest_energy = float(state["largest_energy"])
