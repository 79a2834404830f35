import pytest
import torch

from ired_core.model import EnsembleEnergyModel


@pytest.mark.parametrize("head", ["vector", "scalar"])
def test_analytic_energy_gradient_matches_autograd(tiny_config, head):
    cfg = tiny_config("q201", energy_head=head)
    model = EnsembleEnergyModel(cfg, [0, 1])
    g = torch.Generator().manual_seed(0)
    a, y = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g, requires_grad=True)
    t = torch.randint(cfg.timesteps, (2, 5), generator=g)
    energy, grad = model.energy_and_grad(a, y, t)
    (reference,) = torch.autograd.grad(model.energy(a, y, t).sum(), y)
    torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-6)
    assert energy.shape == (2, 5) and not grad.requires_grad


def test_denoising_gradient_wrt_parameters_matches_double_backward(tiny_config):
    """Training differentiates through ε̂ = ∇_y E: the written-out gradient must give the same
    parameter gradients as autograd's gradient-of-a-gradient."""
    cfg = tiny_config("q100")
    model = EnsembleEnergyModel(cfg, [0])
    g = torch.Generator().manual_seed(1)
    a, y = torch.randn(1, 6, 16, generator=g), torch.randn(1, 6, 16, generator=g)
    t = torch.randint(cfg.timesteps, (1, 6), generator=g)
    eps = torch.randn(1, 6, 16, generator=g)
    params = list(model.parameters())

    _, eps_hat = model.energy_and_grad(a, y, t, create_graph=True)
    analytic = torch.autograd.grad((eps_hat - eps).pow(2).mean(), params)

    y_req = y.clone().requires_grad_(True)
    (eps_auto,) = torch.autograd.grad(model.energy(a, y_req, t).sum(), y_req, create_graph=True)
    reference = torch.autograd.grad((eps_auto - eps).pow(2).mean(), params, allow_unused=True)
    for got, want in zip(analytic, reference, strict=True):
        torch.testing.assert_close(got, want if want is not None else torch.zeros_like(got), rtol=1e-4, atol=1e-6)


def test_seeds_have_their_own_initialisation(tiny_config):
    model = EnsembleEnergyModel(tiny_config("q201"), [0, 1])
    alone = EnsembleEnergyModel(tiny_config("q201"), [1])
    assert not torch.equal(model.fc1.weight[0], model.fc1.weight[1])
    assert torch.equal(model.fc1.weight[1], alone.fc1.weight[0])
