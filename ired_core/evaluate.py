"""IRED inference and the validation metrics of SPEC §4.

    y ~ N(0, I)
    for t = T−1 … 0:
        x̂ = clamp((y − √(1−ᾱ_t) ε̂(y, t)) / √ᾱ_t, ±2);   y = √ᾱ_t x̂
        `steps` gd_reject steps at t (clamped to ±2√ᾱ_t)
        x̂ = y / √ᾱ_t;   if t > 0: y = √ᾱ_{t−1} x̂

The reference scores the final y (x_t scale at t = 0, i.e. ×√ᾱ₀); `val_mse` keeps that so numbers
stay comparable with the lab's baseline, `val_mse_x0` scores the unscaled x̂. Every sample's path
depends only on its own input and its own slice of the starting noise, so the answer does not
depend on the evaluation batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ired_core.data import HeldOutSet
from ired_core.model import EnsembleEnergyModel
from ired_core.samplers import gd_reject_step
from ired_core.schedule import DiffusionSchedule

INFERENCE_NOISE_SALT = 7919


def infer(
    model: EnsembleEnergyModel,
    a: torch.Tensor,
    y: torch.Tensor,
    schedule: DiffusionSchedule,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run inference from starting noise y → (final y, final x̂), each (S, B, r²)."""
    sqrt_ac = schedule.sqrt_alphas_cumprod
    x0 = y
    for step in reversed(range(schedule.timesteps)):
        t = torch.full(y.shape[:2], step, dtype=torch.long, device=y.device)
        cond = model.condition(a, t)  # one per timestep: the steps below move only y
        _, eps_hat = model.energy_and_grad(a, y, t, cond=cond)
        x0 = ((y - schedule.sqrt_one_minus[step] * eps_hat) / sqrt_ac[step]).clamp(-2, 2)
        y = sqrt_ac[step] * x0
        for _ in range(steps):
            y, _ = gd_reject_step(model, a, y, t, schedule, cond=cond)
        x0 = y / sqrt_ac[step]
        if step > 0:
            y = sqrt_ac[step - 1] * x0
    return y.detach(), x0.detach()


@dataclass(frozen=True)
class HeldOutScore:
    """Mean squared error over a held-out set per seed, and its standard error, each (S,).

    With e_i the squared error of sample i averaged over its r² entries, mse = mean_i e_i and
    se = sd_i(e_i) / √N (ddof = 1): how much another held-out set of the same size could move mse.
    """

    mse: torch.Tensor
    se: torch.Tensor


def _score(sum_e: torch.Tensor, sum_e2: torch.Tensor, count: int) -> HeldOutScore:
    """From Σe_i and Σe_i² (float64) over N samples: mean and sd/√N."""
    mean = sum_e / count
    variance = ((sum_e2 - count * mean.pow(2)) / max(count - 1, 1)).clamp(min=0)
    return HeldOutScore(mse=mean.float(), se=(variance / count).sqrt().float())


def held_out_mse(
    model: EnsembleEnergyModel,
    held_out: HeldOutSet,
    schedule: DiffusionSchedule,
    *,
    steps: int,
    batch_size: int,
    noise_seed: int,
) -> tuple[HeldOutScore, HeldOutScore]:
    """(score of final y, score of final x̂) per seed over the whole held-out set.

    The starting noise is drawn once for the whole set from `noise_seed` (on the CPU, so every
    device and every batch size sees the same noise), then the set is processed in chunks; the
    per-sample errors are reduced to their sum and sum of squares in float64 as they come.
    """
    device = next(model.parameters()).device
    seeds = model.num_seeds
    size, dim = held_out.inputs.shape
    noise = torch.randn((size, dim), generator=torch.Generator().manual_seed(noise_seed + INFERENCE_NOISE_SALT))
    sums = {kind: torch.zeros(2, seeds, dtype=torch.float64, device=device) for kind in ("y", "x0")}
    for start in range(0, size, batch_size):
        chunk = slice(start, start + batch_size)
        a = held_out.inputs[chunk].to(device).expand(seeds, -1, -1)
        target = held_out.targets[chunk].to(device).expand(seeds, -1, -1)
        y, x0 = infer(model, a, noise[chunk].to(device).expand(seeds, -1, -1), schedule, steps)
        for kind, prediction in (("y", y), ("x0", x0)):
            per_sample = (prediction - target).pow(2).mean(dim=-1).double()  # e_i, (S, chunk)
            sums[kind] += torch.stack([per_sample.sum(dim=1), per_sample.pow(2).sum(dim=1)])
    return _score(*sums["y"], size), _score(*sums["x0"], size)


def predict_mean_mse(held_out: HeldOutSet) -> float:
    """MSE of predicting the held-out set's mean target for every input: a model that learns nothing
    about A scores this (SPEC §2: 0.0142 at rank 20); every trained model must beat it."""
    targets = held_out.targets.double()
    return float((targets - targets.mean(dim=0)).pow(2).mean())
