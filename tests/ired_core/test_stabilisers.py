"""The stabilisers of contrastive divergence (docs/stability.md): each fails its test when it is wrong."""

import pytest
import torch

from ired_core.losses import cd_loss, energy_loss
from ired_core.model import EnsembleEnergyModel
from ired_core.samplers import PLAIN_STEP, SamplerStep, langevin_step
from ired_core.schedule import energy_temperature, make_schedule


def test_energy_l2_adds_alpha_times_the_squared_energies():
    e_pos, e_neg = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]])
    expected = (e_pos - e_neg) + 0.1 * (e_pos**2 + e_neg**2)
    assert torch.allclose(cd_loss(e_pos, e_neg, reg_weight=0.1), expected)
    assert torch.allclose(energy_loss("cd", e_pos, e_neg, 0.1), expected)


def _energies_after_cd_training(tiny_config, **loss_options) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a tiny model on CD alone with fixed positives and negatives → its final (E⁺, E⁻), (1, 64) each."""
    cfg = tiny_config("q202")
    model = EnsembleEnergyModel(cfg, [0])
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 64, cfg.rank**2, generator=g)
    y_pos = 0.3 * torch.randn(1, 64, cfg.rank**2, generator=g)
    y_neg = y_pos + torch.randn(1, 64, cfg.rank**2, generator=g)
    t = torch.randint(cfg.timesteps, (1, 64), generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        cd_loss(model.energy(a, y_pos, t), model.energy(a, y_neg, t), **loss_options).mean().backward()
        optimizer.step()
    with torch.no_grad():
        return model.energy(a, y_pos, t), model.energy(a, y_neg, t)


def test_energy_l2_holds_the_sample_energy_near_one_over_two_alpha(tiny_config):
    """−E⁻ + αE⁻² is smallest at E⁻ = 1/(2α) = 50; without α, CD pushes E⁻ up without bound."""
    _, unbounded = _energies_after_cd_training(tiny_config)
    _, bounded = _energies_after_cd_training(tiny_config, reg_weight=0.01)
    assert unbounded.mean() > 1000
    assert 25 < bounded.mean() < 75


def test_cd_margin_stops_the_push_once_the_sample_energy_is_margin_above_the_data():
    e_pos = torch.tensor([[1.0, 1.0]], requires_grad=True)
    e_neg = torch.tensor([[3.0, 30.0]], requires_grad=True)  # gaps 2 and 29 against a margin of 10
    loss = cd_loss(e_pos, e_neg, margin=10.0)
    assert loss.tolist() == [[-2.0, -10.0]]
    loss.sum().backward()
    assert e_neg.grad.tolist() == [[-1.0, 0.0]] and e_pos.grad.tolist() == [[1.0, 0.0]]


def test_cd_margin_training_comes_to_rest_where_plain_cd_runs_away(tiny_config):
    """With a margin every sample ends at the loss floor −m, where the gradient is 0: training stops moving."""
    pos, neg = _energies_after_cd_training(tiny_config, margin=5.0)
    assert torch.equal(cd_loss(pos, neg, margin=5.0), torch.full_like(pos, -5.0))
    pos, neg = _energies_after_cd_training(tiny_config)
    assert cd_loss(pos, neg).mean() < -1000


def test_sampler_gradient_clip_caps_each_samples_norm_at_c_root_d():
    schedule = make_schedule(10)
    t = torch.tensor([[3, 3]])
    grad = torch.stack([torch.full((16,), 100.0), torch.full((16,), 0.01)]).unsqueeze(0)  # (1, 2, 16)
    eta = schedule.step_size[3].item()
    drift = SamplerStep(grad_clip=0.5).drift(grad, t, schedule)
    assert drift[0, 0].norm().item() == pytest.approx(eta * 0.5 * 4.0, rel=1e-5)  # c·√D = 0.5·√16
    assert torch.allclose(drift[0, 1], eta * grad[0, 1])  # small gradients pass unchanged
    assert torch.allclose(PLAIN_STEP.drift(grad, t, schedule), eta * grad)


def test_step_multiplier_scales_the_drift_and_the_langevin_variance_alike():
    schedule = make_schedule(10)
    t = torch.tensor([[5]])
    grad = torch.ones(1, 1, 4)
    eta = schedule.step_size[5].item()
    step = SamplerStep(step_mult=0.25)
    assert torch.allclose(step.drift(grad, t, schedule), 0.25 * eta * grad)
    assert step.noise_scale(t, schedule, 1.0).item() == pytest.approx((2 * 0.25 * eta) ** 0.5, rel=1e-6)


def test_temperature_sigma_t_is_the_noise_level_of_each_samples_timestep():
    schedule = make_schedule(10)
    t = torch.tensor([[0, 4, 9]])
    assert torch.equal(energy_temperature("sigma_t", t, schedule), schedule.sqrt_one_minus[t])
    assert torch.equal(energy_temperature("unit", t, schedule), torch.ones(1, 3))
    with pytest.raises(ValueError, match="valid: unit, sigma_t"):
        energy_temperature("cold", t, schedule)


class _QuadraticEnergy:
    """E(y) = k/2 ‖y‖²: its tempered density exp(−E/τ) is N(0, τ/k) in every entry."""

    def __init__(self, k: float) -> None:
        self.k = k

    def energy_and_grad(self, a, y, t, cond=None):
        return 0.5 * self.k * y.pow(2).sum(-1), self.k * y


@pytest.mark.parametrize("kind", ["unit", "sigma_t"])
def test_tempered_langevin_samples_exp_of_minus_energy_over_tau(kind):
    """Unadjusted Langevin on a Gaussian: stationary variance (τ/k)·2/(2 − a), a = m·η·k (exact for ULA)."""
    schedule = make_schedule(10)
    t = torch.zeros(1, 2000, dtype=torch.long)  # t = 0: τ = σ_0 ≈ 0.167 for sigma_t
    temperature = energy_temperature(kind, t, schedule)
    how = SamplerStep(step_mult=0.25, temperature=temperature if kind != "unit" else None)
    model, k = _QuadraticEnergy(k=4.0), 4.0
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(1, 2000, 4)
    for _ in range(300):
        y = langevin_step(model, y, y, t, schedule, torch.randn(y.shape, generator=g), 1.0, how)
    tau = temperature[0, 0].item()
    a = 0.25 * schedule.step_size[0].item() * k
    assert y.var().item() == pytest.approx(tau / k * 2 / (2 - a), rel=0.05)
