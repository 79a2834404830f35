"""Sampler pieces that mutation testing (docs/testing.md) found untested, each against a stand-in model whose
answer is known, so that the expected result is exact.

- `reverse_step_init` (negative_init: diffusion), which no preset uses: with ε̂ = the noise that made
  y_{t+1} = q_sample(x₀, t+1, ε), it must land on √ᾱ_t · x₀.
- `gd_reject_step` must step downhill: an uphill step was rejected by the energy check and went unseen.
- `to_x0`, which the trainer alone used: division by √ᾱ_t and the clamp to ±2.
- `run_chain`: that every step gets the stabilisers' `SamplerStep`, and the acceptance rate it reports.
"""

import pytest
import torch

from ired_core.rng import SeedStreams
from ired_core.samplers import SamplerStep, clamp_to_scale, gd_reject_step, reverse_step_init, run_chain, to_x0
from ired_core.schedule import make_schedule, q_sample

T = 10


class KnownNoise:
    """Stands in for the model: ε̂ = the noise that made y_next; records the A and t it was asked at."""

    def __init__(self, eps: torch.Tensor) -> None:
        self.eps = eps
        self.asked: list[tuple[torch.Tensor, torch.Tensor]] = []

    def energy_and_grad(
        self, a: torch.Tensor, y: torch.Tensor, t: torch.Tensor, cond: object = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.asked.append((a, t.clone()))
        return y.sum(-1), self.eps


def _start(x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, KnownNoise]:
    """(reverse_step_init from y_{t+1}, the schedule's √ᾱ, the stand-in model) with ε̂ exact."""
    schedule = make_schedule(T)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    t_next = (t + 1).clamp(max=T - 1)
    y_next = q_sample(x0, t_next, eps, schedule).requires_grad_()
    model = KnownNoise(eps)
    start = reverse_step_init(model, torch.full_like(x0, 0.3), y_next, t, schedule)
    return start, schedule.sqrt_alphas_cumprod, model


def test_with_the_exact_noise_the_reverse_step_lands_on_the_clean_target_at_t():
    t = torch.tensor([[0, 3, 7, 8]])
    x0 = torch.linspace(-1.5, 1.5, 4 * 9).reshape(1, 4, 9)
    start, sqrt_alphas_cumprod, model = _start(x0, t)
    torch.testing.assert_close(start, sqrt_alphas_cumprod[t].unsqueeze(-1) * x0)
    asked_a, asked_t = model.asked[0]
    assert torch.equal(asked_t, t + 1)  # ε̂ is asked at t+1, where y_next lives, for the same A
    assert torch.equal(asked_a, torch.full_like(x0, 0.3))
    assert not start.requires_grad


def test_at_the_last_timestep_the_reverse_step_denoises_at_t_itself():
    t = torch.full((1, 3), T - 1)
    x0 = torch.linspace(-1.0, 1.0, 3 * 4).reshape(1, 3, 4)
    start, sqrt_alphas_cumprod, model = _start(x0, t)
    torch.testing.assert_close(start, sqrt_alphas_cumprod[T - 1] * x0)
    assert torch.equal(model.asked[0][1], t)


def test_the_reverse_steps_clean_estimate_is_clamped_to_two():
    t = torch.tensor([[2, 2]])
    x0 = torch.tensor([[[5.0, -1.0], [-7.0, 0.5]]])
    start, sqrt_alphas_cumprod, _ = _start(x0, t)
    torch.testing.assert_close(start, sqrt_alphas_cumprod[2] * torch.tensor([[[2.0, -1.0], [-2.0, 0.5]]]))


class Bowl:
    """Stands in for the model: E = ½‖y‖², so ∇E = y and a small enough step towards 0 always lowers E.

    With `misleading`, those samples get −y for a gradient: their step goes uphill and must be rejected.
    """

    def __init__(self, misleading: torch.Tensor | None = None) -> None:
        self.misleading = misleading

    def energy(self, a: torch.Tensor, y: torch.Tensor, t: torch.Tensor, cond: object = None) -> torch.Tensor:
        return 0.5 * y.pow(2).sum(-1)

    def energy_and_grad(
        self, a: torch.Tensor, y: torch.Tensor, t: torch.Tensor, cond: object = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grad = y if self.misleading is None else torch.where(self.misleading.unsqueeze(-1), -y, y)
        return self.energy(a, y, t), grad


def test_a_gd_reject_step_goes_downhill_and_is_accepted():
    schedule = make_schedule(T)
    t = torch.arange(T).view(1, T)  # η_t < 1 at every t, so y ← (1 − η_t)·y lowers ½‖y‖²
    y = torch.linspace(-0.05, 0.05, T * 4).view(1, T, 4)
    moved, accepted = gd_reject_step(Bowl(), torch.zeros_like(y), y, t, schedule)
    assert accepted.all()
    expected = clamp_to_scale((1 - schedule.step_size[t].unsqueeze(-1)) * y, t, schedule)
    torch.testing.assert_close(moved, expected)


def test_to_x0_undoes_the_signal_scale_and_clamps_to_two():
    schedule = make_schedule(T)
    t = torch.tensor([[1, 4, 8]])
    x0 = torch.tensor([[[0.5, -1.5], [3.0, -1.0], [1.0, -4.0]]])
    y = schedule.sqrt_alphas_cumprod[t].unsqueeze(-1) * x0
    torch.testing.assert_close(to_x0(y, t, schedule), torch.tensor([[[0.5, -1.5], [2.0, -1.0], [1.0, -2.0]]]))


def _chain(model: Bowl, sampler: str, how: SamplerStep, steps: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """run_chain on the bowl from y = 0.05 at t = 5, without Langevin noise (σ multiplier 0)."""
    schedule = make_schedule(T)
    y, t = torch.full((1, 4, 2), 0.05), torch.full((1, 4), 5)
    streams = SeedStreams([0], torch.device("cpu"))
    return run_chain(model, y, y, t, schedule, sampler=sampler, steps=steps, sigma_mult=0.0, streams=streams, how=how)


def test_every_chain_step_gets_the_step_multiplier():
    """On the bowl each step multiplies y by (1 − m·η_t); three steps with m = 0.5 give (1 − η_5/2)³ · y."""
    eta = make_schedule(T).step_size[5]
    for sampler in ("gd_reject", "langevin"):
        y, _ = _chain(Bowl(), sampler, SamplerStep(step_mult=0.5))
        torch.testing.assert_close(y, torch.full((1, 4, 2), 0.05) * (1 - 0.5 * eta) ** 3)


def test_the_chain_reports_the_share_of_accepted_gd_reject_steps_and_one_for_langevin():
    half_misled = Bowl(misleading=torch.tensor([[False, True, False, True]]))
    _, rate = _chain(half_misled, "gd_reject", SamplerStep())
    assert rate.tolist() == [0.5]
    _, rate = _chain(half_misled, "langevin", SamplerStep())
    assert rate.tolist() == [1.0]


def test_the_sampler_clip_caps_gradients_below_norm_one_too():
    """A clip c·√D below 1 scales a gradient of norm 0.5 to norm c·√D: the norm's floor only avoids 0/0."""
    schedule = make_schedule(T)
    t = torch.tensor([[3]])
    grad = torch.full((1, 1, 4), 0.25)  # norm 0.5
    drift = SamplerStep(grad_clip=0.01).drift(grad, t, schedule)  # c·√D = 0.02
    assert drift.norm().item() == pytest.approx(schedule.step_size[3].item() * 0.02, rel=1e-5)
