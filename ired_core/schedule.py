"""Diffusion schedule and training schedules: pure functions of t or of the step.

Schedule math is computed in float64 and stored as float32 (as diffusers does), so the same
numbers come out on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ at the T+1 grid points of the cosine schedule (Nichol & Dhariwal 2021), float64.

    f(x) = cos²(((x/T) + s)/(1 + s) · π/2),  ᾱ(x) = f(x)/f(0),  x = 0 … T.
    """
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    return f / f[0]


def cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """β_t = 1 − ᾱ(t+1)/ᾱ(t), clipped to [0, 0.999], float64 of shape (T,)."""
    grid = cosine_alphas_cumprod(timesteps, s)
    return torch.clip(1 - grid[1:] / grid[:-1], 0, 0.999)


@dataclass(frozen=True)
class DiffusionSchedule:
    """Per-timestep constants, float32 tensors of shape (T,) on one device.

    alphas_cumprod:        ᾱ_t = Π_{i≤t} (1 − β_i)
    sqrt_alphas_cumprod:   √ᾱ_t
    sqrt_one_minus:        √(1 − ᾱ_t)
    step_size:             η_t = β_t · √(1 / (1 − ᾱ_t))   (IRED's opt_step_size)
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus: torch.Tensor
    step_size: torch.Tensor

    @property
    def timesteps(self) -> int:
        return self.betas.shape[0]


def make_schedule(timesteps: int, s: float = 0.008, device: torch.device | str = "cpu") -> DiffusionSchedule:
    # 1. β_t from the cosine ᾱ grid, in float64
    betas = cosine_betas(timesteps, s)
    # 2. ᾱ_t = Π (1 − β)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    # 3. η_t = β_t √(1/(1 − ᾱ_t))
    step_size = betas * torch.sqrt(1 / (1 - alphas_cumprod))

    def as32(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=torch.float32)

    return DiffusionSchedule(
        betas=as32(betas),
        alphas_cumprod=as32(alphas_cumprod),
        sqrt_alphas_cumprod=as32(alphas_cumprod.sqrt()),
        sqrt_one_minus=as32((1 - alphas_cumprod).sqrt()),
        step_size=as32(step_size),
    )


def extract(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values[t] with a trailing axis so it broadcasts over the 400 entries: (…,) → (…, 1)."""
    return values[t].unsqueeze(-1)


def q_sample(y0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: DiffusionSchedule) -> torch.Tensor:
    """q(y_t | y_0): √ᾱ_t · y_0 + √(1 − ᾱ_t) · ε."""
    return extract(schedule.sqrt_alphas_cumprod, t) * y0 + extract(schedule.sqrt_one_minus, t) * noise


def energy_temperature(kind: str, t: torch.Tensor, schedule: DiffusionSchedule) -> torch.Tensor:
    """τ_t of the model density p_θ(y | A, t) ∝ exp(−E/τ_t), per sample: t (…) → (…).

    unit:     τ_t = 1, the plan's choice.
    sigma_t:  τ_t = √(1 − ᾱ_t). Denoising makes ∇E = ε̂ ≈ −√(1−ᾱ_t)·∇ log p_t, so E ≈ −τ_t log p_t + c:
              exp(−E/τ_t) is the noisy-data density p_t itself, and chains at that temperature sample
              what the positives are drawn from. At unit temperature they sample p_t^{τ_t}, a hotter
              density, so E⁻ − E⁺ stays positive even for a perfect model and CD never stops pushing.
    """
    if kind == "unit":
        return torch.ones_like(t, dtype=schedule.sqrt_one_minus.dtype)
    if kind == "sigma_t":
        return schedule.sqrt_one_minus[t]
    raise ValueError(f"unknown energy_temperature {kind!r}; valid: unit, sigma_t")


def energy_weight(step: int, total_steps: int, max_weight: float, warmup_frac: float) -> float:
    """w(step): linear ramp 0 → max_weight over the first warmup_frac of training, then flat."""
    warmup_steps = warmup_frac * total_steps
    if warmup_steps <= 0:
        return max_weight
    return max_weight * min(1.0, step / warmup_steps)


def timestep_window(t: torch.Tensor, timesteps: int, min_frac: float, max_frac: float) -> torch.Tensor:
    """1.0 where t ∈ [min_frac·T, max_frac·T], else 0.0 (float, same shape as t)."""
    return ((t >= min_frac * timesteps) & (t <= max_frac * timesteps)).float()


def ema_decay(step: int, max_decay: float, start_step: int = 100, power: float = 2 / 3) -> float:
    """EMA decay at `step`, warmed up as in ema_pytorch (the EMA IRED trains with).

    decay = 0 (copy the weights) until `start_step`, then min(max_decay, 1 − (1 + n)^(−power))
    with n = step − start_step − 1.
    """
    n = step - start_step - 1
    if n <= 0:
        return 0.0
    return min(max_decay, 1 - (1 + n) ** -power)
