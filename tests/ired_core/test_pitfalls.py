"""One test per pitfall of SPEC §5: each fails on the bug it names."""

import pytest
import torch

from ired_core.filters import filter_weights, inverse_residual, per_timestep_threshold
from ired_core.losses import cd_loss, denoising_loss, nce_loss
from ired_core.model import EnsembleEnergyModel
from ired_core.replay import ReplayBuffer
from ired_core.rng import SeedStreams
from ired_core.samplers import PLAIN_STEP, clamp_to_scale, langevin_step, run_chain
from ired_core.schedule import make_schedule
from ired_core.trainer import DIAGNOSTICS, Trainer


def _batch(cfg, seeds=(0,), batch=8):
    g = torch.Generator().manual_seed(1)
    dim = cfg.rank**2
    a = torch.randn(len(seeds), batch, dim, generator=g)
    y = torch.randn(len(seeds), batch, dim, generator=g) * 0.3
    t = torch.randint(cfg.timesteps, (len(seeds), batch), generator=g)
    return a, y, t


def test_cd_step_pushes_data_energy_below_sample_energy(tiny_config):
    cfg = tiny_config("q202")
    model = EnsembleEnergyModel(cfg, [0])
    a, y_pos, t = _batch(cfg)
    y_neg = y_pos + 0.5 * torch.randn(y_pos.shape, generator=torch.Generator().manual_seed(2))

    def gap() -> float:  # E⁻ − E⁺: must grow when training on CD
        with torch.no_grad():
            return (model.energy(a, y_neg, t) - model.energy(a, y_pos, t)).mean().item()

    before = gap()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(10):
        optimizer.zero_grad()
        cd_loss(model.energy(a, y_pos, t), model.energy(a, y_neg, t)).mean().backward()
        optimizer.step()
    assert gap() > before + 1e-3


def test_nce_is_softplus_of_energy_difference():
    e_pos, e_neg = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])
    logits = torch.stack([-e_pos, -e_neg], dim=-1)
    expected = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), torch.zeros(2, dtype=torch.long), reduction="none"
    ).view(1, 2)
    assert torch.allclose(nce_loss(e_pos, e_neg), expected)


def test_losses_are_per_sample():
    x = torch.randn(3, 5, 16)
    assert denoising_loss(x, torch.zeros_like(x)).shape == (3, 5)
    e = torch.randn(3, 5)
    assert nce_loss(e, e).shape == cd_loss(e, e, 0.1).shape == (3, 5)


def test_energy_term_is_not_averaged_away(tiny_config):
    """loss = mean_B(L_mse + w·L_E), so loss − loss_denoise must equal w·mean(L_E)."""
    cfg = tiny_config("q201", energy_weight_max=0.5)
    diag = Trainer(cfg, [0]).train_step()[0]
    col = {name: diag[i].item() for i, name in enumerate(DIAGNOSTICS)}
    assert col["loss"] - col["loss_denoise"] == pytest.approx(0.5 * col["loss_energy"], rel=1e-4, abs=1e-6)
    assert col["loss_energy"] > 0.1  # NCE at init ≈ log 2


def test_negatives_and_replay_entries_carry_no_gradient(tiny_config):
    cfg = tiny_config("q203")
    model = EnsembleEnergyModel(cfg, [0])
    a, y, t = _batch(cfg)
    streams = SeedStreams([0], torch.device("cpu"))
    chain, _ = run_chain(
        model,
        a,
        y.requires_grad_(True),
        t,
        make_schedule(cfg.timesteps),
        sampler="langevin",
        steps=2,
        sigma_mult=1.0,
        streams=streams,
    )
    assert not chain.requires_grad and chain.grad_fn is None
    buffer = ReplayBuffer(1, 40, cfg.rank**2, cfg.timesteps, True, torch.device("cpu"))
    buffer.write(a, y, chain + model.fc1.weight.sum(), t)  # a chain that would carry a graph
    assert not any(v.requires_grad for v in buffer.state_dict().values())


def test_replayed_chains_keep_their_own_input_and_target():
    dim, timesteps = 4, 5
    buffer = ReplayBuffer(2, 50, dim, timesteps, True, torch.device("cpu"))
    ids = torch.arange(30, dtype=torch.float32).view(2, 15)
    t = torch.arange(30).view(2, 15) % timesteps
    tag = ids.unsqueeze(-1).expand(-1, -1, dim)
    buffer.write(tag, tag + 1000, tag + 2000, t)
    streams = SeedStreams([0, 1], torch.device("cpu"))
    query_t = torch.randint(timesteps, (2, 64))
    draw = buffer.draw(query_t, 1.0, streams)
    assert draw.replayed.all()
    assert torch.equal(draw.y0, draw.a + 1000) and torch.equal(draw.chain, draw.a + 2000)
    assert torch.equal(draw.t, query_t)  # per-timestep buckets: a chain continues at its own t
    assert torch.equal(draw.t, draw.a[..., 0].long() % timesteps)
    assert (draw.a[0] < 15).all() and (draw.a[1] >= 15).all()  # seeds never share entries


def test_replay_ring_overwrites_oldest_first_and_samples_with_p_replay():
    buffer = ReplayBuffer(1, 4, 1, 1, False, torch.device("cpu"))
    for k in range(3):
        vals = torch.tensor([[[2.0 * k], [2.0 * k + 1]]])
        buffer.write(vals, vals, vals, torch.zeros(1, 2, dtype=torch.long))
    assert sorted(buffer.a[0, :4, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    streams = SeedStreams([0], torch.device("cpu"))
    draw = buffer.draw(torch.zeros(1, 20000, dtype=torch.long), 0.95, streams)
    assert draw.replayed.float().mean().item() == pytest.approx(0.95, abs=0.01)


def test_empty_bucket_falls_back_to_fresh_chains():
    buffer = ReplayBuffer(1, 20, 1, 2, True, torch.device("cpu"))
    buffer.write(torch.ones(1, 3, 1), torch.ones(1, 3, 1), torch.ones(1, 3, 1), torch.zeros(1, 3, dtype=torch.long))
    draw = buffer.draw(torch.ones(1, 50, dtype=torch.long), 1.0, SeedStreams([0], torch.device("cpu")))
    assert not draw.replayed.any()


def test_residual_filter_drops_exactly_the_quantile_per_timestep():
    torch.manual_seed(0)
    residual = torch.rand(1, 22)  # 11 distinct residuals at each of t = 0, 1
    t = torch.tensor([[0] * 11 + [1] * 11])
    weight, filtered = filter_weights(residual, t, 2, quantiles=0.3, tau=None, filtered_weight=0.0)
    for step in (0, 1):
        assert filtered[t == step].sum().item() == 3  # ⌊0.3 · (11 − 1)⌋
        assert (residual[t == step][filtered[t == step]] < residual[t == step][~filtered[t == step]].min()).all()
    assert torch.equal(weight, (~filtered).float())


def test_residual_filter_per_timestep_quantiles_and_downweighting():
    residual = torch.arange(20, dtype=torch.float32).view(1, 20)
    t = torch.tensor([[0] * 10 + [1] * 10])
    tau = per_timestep_threshold(residual, t, 2, [0.5, 0.0])
    assert tau[0, 0].item() == 4.0 and tau[0, 10].item() == 10.0
    weight, _ = filter_weights(residual, t, 2, quantiles=[0.5, 0.0], tau=None, filtered_weight=0.25)
    assert weight[0, :4].tolist() == [0.25] * 4 and weight[0, 4:].eq(1).all()


def test_inverse_residual_is_zero_at_the_true_inverse():
    a = torch.randn(3, 3) + 3 * torch.eye(3)
    x = torch.linalg.inv(a)
    assert inverse_residual(a.flatten(), x.flatten()).item() == pytest.approx(0.0, abs=1e-5)
    assert inverse_residual(a.flatten(), torch.zeros(9)).item() == pytest.approx(3**0.5, rel=1e-6)


def test_clamp_uses_each_samples_own_timestep():
    s = make_schedule(10)
    y = torch.full((1, 2, 3), 5.0)
    out = clamp_to_scale(y, torch.tensor([[0, 9]]), s)
    assert torch.allclose(out[0, 0], 2 * s.sqrt_alphas_cumprod[0].expand(3))
    assert torch.allclose(out[0, 1], 2 * s.sqrt_alphas_cumprod[9].expand(3))


@pytest.mark.parametrize("mult", [0.25, 0.5])  # σ well inside the ±2√ᾱ_t clamp
def test_langevin_noise_scale_is_mult_sqrt_two_eta(tiny_config, mult):
    cfg = tiny_config("q202")
    model = EnsembleEnergyModel(cfg, [0])
    with torch.no_grad():  # a flat landscape: E = Σ fc4(h)² with fc4 = 0 has zero gradient
        model.fc4.weight.zero_()
        model.fc4.bias.zero_()
    s = make_schedule(cfg.timesteps)
    t = torch.full((1, 4000), 4)
    y = torch.zeros(1, 4000, cfg.rank**2)
    noise = torch.randn_like(y)
    moved = langevin_step(model, torch.zeros_like(y), y, t, s, noise, mult)
    expected = mult * (2 * s.step_size[4]).sqrt().item()
    assert PLAIN_STEP.noise_scale(t, s, mult)[0, 0, 0].item() == pytest.approx(expected)
    assert moved.std().item() == pytest.approx(expected, rel=0.02)


def test_inference_is_independent_of_eval_batch_size(tiny_config):
    cfg = tiny_config("q201", val_size=512, train_steps=30)
    trainer = Trainer(cfg, [0, 1])
    for _ in range(30):
        trainer.train_step()
    small = trainer.evaluate(batch_size=64)
    large = trainer.evaluate(batch_size=512)
    for seed in (0, 1):
        for name in ("val_mse", "val_mse_x0", "val_mse_ood"):
            assert small[seed][name] == pytest.approx(large[seed][name], rel=1e-5)
