"""Negative samplers: short-run chains on the energy landscape at a fixed timestep t.

    gd_reject (IRED baseline):  y' = y − η_t ∇_y E(y);  keep y where E(y') > E(y)
    langevin  (DCD):            y' = y − η_t ∇_y E(y) + σ_t ξ,   σ_t = mult · √(2 η_t),  ξ ~ N(0, I)

Every step clamps y to ±2√ᾱ_t, with each sample's own t. Chains never carry gradient to the
model's parameters: what leaves `run_chain` is detached.
"""

from __future__ import annotations

from typing import Literal

import torch

from ired_core.model import EnsembleEnergyModel
from ired_core.rng import SeedStreams
from ired_core.schedule import DiffusionSchedule, extract


def clamp_to_scale(y: torch.Tensor, t: torch.Tensor, schedule: DiffusionSchedule) -> torch.Tensor:
    """Clamp each sample to ±2√ᾱ_t of its own t (the reference used the first sample's t)."""
    bound = 2 * extract(schedule.sqrt_alphas_cumprod, t)
    return torch.maximum(torch.minimum(y, bound), -bound)


def langevin_sigma(t: torch.Tensor, schedule: DiffusionSchedule, sigma_mult: float) -> torch.Tensor:
    """σ_t = mult · √(2 η_t), shaped to broadcast over the entries: (S, B, 1)."""
    return sigma_mult * torch.sqrt(2 * extract(schedule.step_size, t))


def gd_reject_step(
    model: EnsembleEnergyModel, a: torch.Tensor, y: torch.Tensor, t: torch.Tensor, schedule: DiffusionSchedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient step with uphill rejection → (y, accepted (S, B) bool)."""
    energy, grad = model.energy_and_grad(a, y, t)
    proposal = clamp_to_scale(y - extract(schedule.step_size, t) * grad, t, schedule)
    with torch.no_grad():
        accepted = model.energy(a, proposal, t) <= energy
    return torch.where(accepted.unsqueeze(-1), proposal, y).detach(), accepted


def langevin_step(
    model: EnsembleEnergyModel,
    a: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    schedule: DiffusionSchedule,
    noise: torch.Tensor,
    sigma_mult: float,
) -> torch.Tensor:
    """One unadjusted Langevin step (no rejection)."""
    _, grad = model.energy_and_grad(a, y, t)
    step = extract(schedule.step_size, t) * grad
    return clamp_to_scale(y - step + langevin_sigma(t, schedule, sigma_mult) * noise, t, schedule).detach()


def run_chain(
    model: EnsembleEnergyModel,
    a: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    schedule: DiffusionSchedule,
    *,
    sampler: Literal["gd_reject", "langevin"],
    steps: int,
    sigma_mult: float,
    streams: SeedStreams,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k sampler steps from y at t → (detached y, accept rate per seed (S,); 1 for langevin)."""
    accepted = torch.zeros(y.shape[:2], device=y.device)  # (S, B) accepted steps
    y = y.detach()
    for _ in range(steps):
        if sampler == "gd_reject":
            y, step_accepted = gd_reject_step(model, a, y, t, schedule)
            accepted = accepted + step_accepted.float()
        elif sampler == "langevin":
            y = langevin_step(model, a, y, t, schedule, streams.randn(*y.shape[1:]), sigma_mult)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; valid: gd_reject, langevin")
    if sampler == "gd_reject" and steps:
        return y, accepted.mean(dim=1) / steps
    return y, torch.ones(y.shape[0], device=y.device)


def reverse_step_init(
    model: EnsembleEnergyModel,
    a: torch.Tensor,
    y_next: torch.Tensor,
    t: torch.Tensor,
    schedule: DiffusionSchedule,
) -> torch.Tensor:
    """DCD-style chain start: from y_{t+1}, the model's own reverse step to t.

    x̂ = clamp((y_{t+1} − √(1−ᾱ_{t+1}) ε̂) / √ᾱ_{t+1}, ±2),   y_t = √ᾱ_t · x̂
    At t = T−1 there is no t+1: the step denoises and rescales at t itself.
    """
    t_next = torch.clamp(t + 1, max=schedule.timesteps - 1)
    _, eps_hat = model.energy_and_grad(a, y_next, t_next)
    x0 = (y_next - extract(schedule.sqrt_one_minus, t_next) * eps_hat) / extract(schedule.sqrt_alphas_cumprod, t_next)
    return (extract(schedule.sqrt_alphas_cumprod, t) * x0.clamp(-2, 2)).detach()


def to_x0(y: torch.Tensor, t: torch.Tensor, schedule: DiffusionSchedule) -> torch.Tensor:
    """Map a chain state at t to x₀ space: x̂ = clamp(y / √ᾱ_t, ±2)."""
    return (y / extract(schedule.sqrt_alphas_cumprod, t)).clamp(-2, 2)
