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
        _, eps_hat = model.energy_and_grad(a, y, t)
        x0 = ((y - schedule.sqrt_one_minus[step] * eps_hat) / sqrt_ac[step]).clamp(-2, 2)
        y = sqrt_ac[step] * x0
        for _ in range(steps):
            y, _ = gd_reject_step(model, a, y, t, schedule)
        x0 = y / sqrt_ac[step]
        if step > 0:
            y = sqrt_ac[step - 1] * x0
    return y.detach(), x0.detach()


def held_out_mse(
    model: EnsembleEnergyModel,
    held_out: HeldOutSet,
    schedule: DiffusionSchedule,
    *,
    steps: int,
    batch_size: int,
    noise_seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mse of final y, mse of final x̂) per seed, shape (S,), over the whole held-out set.

    The starting noise is drawn once for the whole set from `noise_seed` (on the CPU, so every
    device and every batch size sees the same noise), then the set is processed in chunks.
    """
    device = next(model.parameters()).device
    seeds = model.num_seeds
    size, dim = held_out.inputs.shape
    noise = torch.randn((size, dim), generator=torch.Generator().manual_seed(noise_seed + INFERENCE_NOISE_SALT))
    sq_err_y = torch.zeros(seeds, device=device)
    sq_err_x0 = torch.zeros(seeds, device=device)
    for start in range(0, size, batch_size):
        chunk = slice(start, start + batch_size)
        a = held_out.inputs[chunk].to(device).expand(seeds, -1, -1)
        target = held_out.targets[chunk].to(device).expand(seeds, -1, -1)
        y, x0 = infer(model, a, noise[chunk].to(device).expand(seeds, -1, -1), schedule, steps)
        sq_err_y += (y - target).pow(2).sum(dim=(1, 2))
        sq_err_x0 += (x0 - target).pow(2).sum(dim=(1, 2))
    count = size * dim
    return sq_err_y / count, sq_err_x0 / count
