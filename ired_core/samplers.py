"""Negative samplers: short-run chains on the energy landscape at a fixed timestep t.

    gd_reject (IRED baseline):  y' = y − m·η_t g;  keep y where E(y') > E(y)
    langevin  (DCD):            y' = y − m·η_t g + σ_t ξ,   σ_t = mult · √(2 m η_t τ_t),  ξ ~ N(0, I)

with g = ∇_y E(y), clipped per sample to ‖g‖ ≤ c·√D when a clip c is set (Du & Mordatch 2019 clip
the sampler's gradient the same way), m the step multiplier and τ_t the energy's temperature
(`schedule.energy_temperature`): Langevin with step h on exp(−E/τ_t) is y − (h/τ_t)∇E + √(2h) ξ, and
h = m·η_t·τ_t gives the line above. With m = 1 and τ_t = 1 these are the plan's samplers.

Every step clamps y to ±2√ᾱ_t, with each sample's own t. Chains never carry gradient to the
model's parameters: what leaves `run_chain` is detached. A chain's A and t never change, so their part of
the energy (`model.Conditioning`) can be made once and passed as `cond` to every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ired_core.model import Conditioning, EnsembleEnergyModel
from ired_core.rng import SeedStreams
from ired_core.schedule import DiffusionSchedule, extract


@dataclass(frozen=True)
class SamplerStep:
    """How one chain step moves: step multiplier m, gradient clip c (None: none), temperature τ_t (S, B)."""

    step_mult: float = 1.0
    grad_clip: float | None = None
    temperature: torch.Tensor | None = None  # None: τ_t = 1

    def drift(self, grad: torch.Tensor, t: torch.Tensor, schedule: DiffusionSchedule) -> torch.Tensor:
        """m·η_t·g with g clipped to ‖g‖ ≤ c·√D per sample: (S, B, D)."""
        if self.grad_clip is not None:
            max_norm = self.grad_clip * math.sqrt(grad.shape[-1])
            grad = grad * (max_norm / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
        return self.step_mult * extract(schedule.step_size, t) * grad

    def noise_scale(self, t: torch.Tensor, schedule: DiffusionSchedule, sigma_mult: float) -> torch.Tensor:
        """σ_t = mult·√(2 m η_t τ_t), shaped to broadcast over the entries: (S, B, 1)."""
        variance = 2 * self.step_mult * extract(schedule.step_size, t)
        if self.temperature is not None:
            variance = variance * self.temperature.unsqueeze(-1)
        return sigma_mult * torch.sqrt(variance)


PLAIN_STEP = SamplerStep()
"""The plan's step: m = 1, no clip, τ = 1 (also IRED's inference)."""


def clamp_to_scale(y: torch.Tensor, t: torch.Tensor, schedule: DiffusionSchedule) -> torch.Tensor:
    """Clamp each sample to ±2√ᾱ_t of its own t (the reference used the first sample's t)."""
    bound = 2 * extract(schedule.sqrt_alphas_cumprod, t)
    return torch.maximum(torch.minimum(y, bound), -bound)


def gd_reject_step(
    model: EnsembleEnergyModel,
    a: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    schedule: DiffusionSchedule,
    how: SamplerStep = PLAIN_STEP,
    cond: Conditioning | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient step with uphill rejection → (y, accepted (S, B) bool)."""
    energy, grad = model.energy_and_grad(a, y, t, cond=cond)
    proposal = clamp_to_scale(y - how.drift(grad, t, schedule), t, schedule)
    with torch.no_grad():
        accepted = model.energy(a, proposal, t, cond=cond) <= energy
    return torch.where(accepted.unsqueeze(-1), proposal, y).detach(), accepted


def langevin_step(
    model: EnsembleEnergyModel,
    a: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    schedule: DiffusionSchedule,
    noise: torch.Tensor,
    sigma_mult: float,
    how: SamplerStep = PLAIN_STEP,
    cond: Conditioning | None = None,
) -> torch.Tensor:
    """One unadjusted Langevin step (no rejection)."""
    _, grad = model.energy_and_grad(a, y, t, cond=cond)
    step = how.drift(grad, t, schedule)
    return clamp_to_scale(y - step + how.noise_scale(t, schedule, sigma_mult) * noise, t, schedule).detach()


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
    how: SamplerStep = PLAIN_STEP,
    cond: Conditioning | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k sampler steps from y at t → (detached y, accept rate per seed (S,); 1 for langevin)."""
    accepted = torch.zeros(y.shape[:2], device=y.device)  # (S, B) accepted steps
    y = y.detach()
    for _ in range(steps):
        if sampler == "gd_reject":
            y, step_accepted = gd_reject_step(model, a, y, t, schedule, how, cond)
            accepted = accepted + step_accepted.float()
        elif sampler == "langevin":
            y = langevin_step(model, a, y, t, schedule, streams.randn(*y.shape[1:]), sigma_mult, how, cond)
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
