"""How the trainer wires the DCD components together: each test fails when one wire is cut or crossed.

The components have their own tests (test_pitfalls, test_stabilisers); these check what the trainer
hands them and what it does with their answers. docs/testing.md lists the mutation each test catches.
"""

from collections.abc import Callable

import pytest
import torch

from ired_core.losses import cd_loss
from ired_core.rng import SeedStreams
from ired_core.samplers import SamplerStep, reverse_step_init, run_chain, to_x0
from ired_core.schedule import energy_temperature, energy_weight, q_sample
from ired_core.trainer import DIAGNOSTICS, Trainer

LOSS, LOSS_DENOISE, LOSS_ENERGY = (DIAGNOSTICS.index(n) for n in ("loss", "loss_denoise", "loss_energy"))
ENERGY_WEIGHT, FILTERED = DIAGNOSTICS.index("energy_weight"), DIAGNOSTICS.index("filtered_frac")


def _first_step(trainer: Trainer) -> torch.Tensor:
    return trainer.train_step()  # (S, len(DIAGNOSTICS))


def test_filtered_negatives_carry_their_filter_weight_into_the_loss(tiny_config):
    """τ above every residual filters every negative: weight 0 leaves the denoising loss alone, 0.5 halves
    the energy term (the window is all of t and there is no warm-up, so only the filter weighs)."""
    everything_filtered = {"residual_filter_tau": 1e9, "energy_t_min_frac": 0.0, "energy_t_max_frac": 1.0}
    dropped = _first_step(Trainer(tiny_config("q204", energy_warmup_frac=0.0, **everything_filtered), [0]))
    assert dropped[0, FILTERED] == 1.0
    assert dropped[0, LOSS] == dropped[0, LOSS_DENOISE]

    weighted_cfg = tiny_config("q204", energy_warmup_frac=0.0, residual_filter_weight=0.5, **everything_filtered)
    halved = _first_step(Trainer(weighted_cfg, [0]))
    w = weighted_cfg.energy_weight_max
    expected = halved[0, LOSS_DENOISE] + w * 0.5 * halved[0, LOSS_ENERGY]
    assert halved[0, LOSS].item() == pytest.approx(expected.item(), rel=1e-5)


def test_warmup_weight_reaches_the_loss(tiny_config):
    """At step 0 the ramp gives w = 0, so the loss is the denoising loss; the diagnostic follows w(step)."""
    cfg = tiny_config("q204", train_steps=10, energy_warmup_frac=0.5, energy_t_min_frac=0.0, energy_t_max_frac=1.0)
    trainer = Trainer(cfg, [0])
    for step in range(6):
        diagnostics = trainer.train_step()
        w = energy_weight(step, cfg.train_steps, cfg.energy_weight_max, cfg.energy_warmup_frac)
        assert diagnostics[0, ENERGY_WEIGHT].item() == pytest.approx(w)
        if step == 0:
            assert diagnostics[0, LOSS] == diagnostics[0, LOSS_DENOISE]
    assert diagnostics[0, LOSS] != diagnostics[0, LOSS_DENOISE]


def test_timestep_window_reaches_the_loss(tiny_config):
    """A window no timestep falls in ([0.95·T, 0.95·T]) removes the energy term; the full window keeps it."""
    closed = tiny_config("q202", energy_t_min_frac=0.95, energy_t_max_frac=0.95)
    diagnostics = _first_step(Trainer(closed, [0]))
    assert diagnostics[0, LOSS] == diagnostics[0, LOSS_DENOISE]
    diagnostics = _first_step(Trainer(tiny_config("q202"), [0]))
    assert diagnostics[0, LOSS] != diagnostics[0, LOSS_DENOISE]


def test_gradient_clipping_fires_and_stays_per_seed(tiny_config):
    """With a clip far below the raw norms every seed's gradient ends with norm exactly grad_clip."""
    clip = 1e-4
    trainer = Trainer(tiny_config("q201", grad_clip=clip), [0, 1, 2])
    trainer.train_step()
    grads = [p.grad for p in trainer.model.parameters()]
    per_seed = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
    assert per_seed.tolist() == pytest.approx([clip] * 3, rel=1e-3)


Call = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _record_calls(trainer: Trainer, method: str) -> list[Call]:
    """Record the (A, y, t) of every call of `trainer.model.<method>`; the real method still runs."""
    calls: list[Call] = []
    real: Callable[..., object] = getattr(trainer.model, method)

    def recorded(a: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append((a.detach().clone(), y.detach().clone(), t.clone()))
        return real(a, y, t, *args, **kwargs)

    setattr(trainer.model, method, recorded)
    return calls


def _batch(cfg, seeds: int = 1, batch: int | None = None):
    g = torch.Generator().manual_seed(5)
    batch = batch or cfg.batch_size
    a = torch.randn(seeds, batch, cfg.rank**2, generator=g)
    y0 = 0.2 * torch.randn(seeds, batch, cfg.rank**2, generator=g)
    t = torch.randint(cfg.timesteps, (seeds, batch), generator=g)
    return a, y0, t


def test_replayed_slots_are_scored_with_their_own_input_target_and_timestep(tiny_config):
    """p_replay = 1 and a buffer full of one known entry: every slot is replayed, so every chain step and
    both energies must see that entry's A and t, and the positive must be built from its Y."""
    # a batch of 12 for 16 entries, so that a slot mask shaped for the wrong axis cannot broadcast
    cfg = tiny_config("q203", p_replay=1.0, replay_buckets="global", replay_size=8, batch_size=12)
    trainer = Trainer(cfg, [0])
    a, y0, t = _batch(cfg)
    stored_a, stored_y, stored_t = torch.full_like(a, 0.7), torch.full_like(y0, 1.5), torch.full_like(t, 3)
    trainer.replay.write(stored_a, stored_y, torch.zeros_like(y0), stored_t)
    calls = _record_calls(trainer, "energy")
    chain_steps = _record_calls(trainer, "energy_and_grad")
    terms = trainer._energy_terms(a, y0, t)
    assert terms["replay_frac"].item() == 1.0
    assert len(calls) == 2 and len(chain_steps) == cfg.sampler_steps
    schedule = trainer.schedule
    for called_a, _, called_t in calls + chain_steps:
        assert torch.equal(called_a, stored_a) and torch.equal(called_t, stored_t)
    # the positive is q_sample(Y, 3, ε'): with the stored Y its noise part is standard normal
    noise_parts = [(y - schedule.sqrt_alphas_cumprod[3] * stored_y) / schedule.sqrt_one_minus[3] for _, y, _ in calls]
    assert min(abs(part.std().item() - 1.0) for part in noise_parts) < 0.15
    assert min(abs(part.mean().item()) for part in noise_parts) < 0.15


def test_a_diffusion_chain_start_is_the_models_reverse_step_from_t_plus_one(tiny_config):
    """negative_init: diffusion starts each chain at reverse_step_init from y_{t+1} = q_sample(Y, t+1, c·ε'), with
    t+1 capped at T−1; with no sampler steps and no re-noising the negative is that start."""
    cfg = tiny_config("q202", negative_init="diffusion", negative_renoise=False, sampler_steps=0)
    trainer = Trainer(cfg, [0])
    a, y0, t = _batch(cfg)
    t[0, :3] = torch.tensor([cfg.timesteps - 1, cfg.timesteps - 1, cfg.timesteps - 2])  # at and below the cap
    streams = SeedStreams([0], torch.device("cpu"))
    streams.set_state(trainer.negative_streams.get_state())
    eps_neg = streams.randn(*y0.shape[1:])  # the trainer's next draw of ε'
    t_next = (t + 1).clamp(max=cfg.timesteps - 1)
    y_next = q_sample(y0, t_next, cfg.noise_scale * eps_neg, trainer.schedule)
    expected_start = reverse_step_init(trainer.model, a, y_next, t, trainer.schedule)
    reverse_steps = _record_calls(trainer, "energy_and_grad")
    energies = _record_calls(trainer, "energy")
    trainer._energy_terms(a, y0, t)
    ((called_a, called_y, called_t),) = reverse_steps
    assert torch.equal(called_a, a) and torch.equal(called_t, t_next)
    torch.testing.assert_close(called_y, y_next)
    _, y_neg, _ = energies[1]  # E⁺ first, then E⁻
    torch.testing.assert_close(y_neg, expected_start)


def _trainers_chain(
    trainer: Trainer, a: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, how: SamplerStep
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the chain, ε') that the trainer's next `_energy_terms` makes, rebuilt with run_chain and `how` from a copy
    of its negative stream (no replay)."""
    cfg = trainer.config
    streams = SeedStreams([0], torch.device("cpu"))
    streams.set_state(trainer.negative_streams.get_state())
    eps_neg = streams.randn(*y0.shape[1:])
    start = q_sample(y0, t, cfg.noise_scale * eps_neg, trainer.schedule)
    chain, _ = run_chain(
        trainer.model,
        a,
        start,
        t,
        trainer.schedule,
        sampler=cfg.sampler,
        steps=cfg.sampler_steps,
        sigma_mult=cfg.langevin_sigma_mult,
        streams=streams,
        how=how,
    )
    return chain, eps_neg


def _scored_negative(trainer: Trainer, a: torch.Tensor, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    energies = _record_calls(trainer, "energy")
    trainer._energy_terms(a, y0, t)
    _, y_neg, _ = energies[1]  # E⁺ first, then E⁻
    return y_neg


def test_the_sampler_settings_reach_every_chain(tiny_config):
    """step_mult, the sampler clip and the σ_t temperature all reach run_chain: without re-noising, the negative
    is the chain that run_chain makes from the trainer's own start and noise with exactly those settings."""
    settings = {"sampler_step_mult": 0.5, "sampler_grad_clip": 1e-4, "energy_temperature": "sigma_t"}
    cfg = tiny_config("q202", sampler_steps=2, negative_renoise=False, **settings)
    trainer = Trainer(cfg, [0])
    a, y0, t = _batch(cfg)
    how = SamplerStep(0.5, 1e-4, energy_temperature("sigma_t", t, trainer.schedule))
    chain, _ = _trainers_chain(trainer, a, y0, t, how)
    torch.testing.assert_close(_scored_negative(trainer, a, y0, t), chain)


def test_with_renoise_the_negative_is_the_chains_x0_noised_again(tiny_config):
    """negative_renoise (the default): the scored negative is q_sample(x̂, t, ε') with x̂ = to_x0(chain)."""
    trainer = Trainer(tiny_config("q202", sampler_steps=2), [0])
    a, y0, t = _batch(trainer.config)
    chain, eps_neg = _trainers_chain(trainer, a, y0, t, SamplerStep())
    expected = q_sample(to_x0(chain, t, trainer.schedule), t, eps_neg, trainer.schedule)
    torch.testing.assert_close(_scored_negative(trainer, a, y0, t), expected)


def test_energy_loss_gets_data_energy_first_and_the_regulariser(tiny_config):
    """Per sample, loss_energy = (E⁺ − E⁻)/τ + α((E⁺/τ)² + (E⁻/τ)²) with E⁺ the positive's energy."""
    for temperature in ("unit", "sigma_t"):
        cfg = tiny_config("q202", energy_reg_weight=0.01, energy_temperature=temperature)
        trainer = Trainer(cfg, [0])
        a, y0, t = _batch(cfg)
        terms = trainer._energy_terms(a, y0, t)
        tau = trainer.schedule.sqrt_one_minus[t] if temperature == "sigma_t" else torch.ones_like(y0[..., 0])
        expected = cd_loss(terms["energy_pos"] / tau, terms["energy_neg"] / tau, reg_weight=0.01)
        torch.testing.assert_close(terms["loss_energy"], expected)


def test_the_cd_margin_reaches_the_energy_loss(tiny_config):
    """Per sample, loss_energy = max(E⁺ − E⁻, −m): a margin below the batch's gaps must bind somewhere."""
    margin = 1e-3
    trainer = Trainer(tiny_config("q202", cd_margin=margin, energy_temperature="unit", energy_reg_weight=0.0), [0])
    a, y0, t = _batch(trainer.config)
    terms = trainer._energy_terms(a, y0, t)
    unbounded = cd_loss(terms["energy_pos"], terms["energy_neg"])
    assert (unbounded < -margin).any()
    torch.testing.assert_close(terms["loss_energy"], unbounded.clamp(min=-margin))


def test_a_training_step_lowers_data_energy_relative_to_sample_energy(tiny_config):
    """CD dominates (weight 10, k = 0 sampler steps so negatives are the noised starts): on a fixed batch
    built like the training batches, E⁻ − E⁺ must grow. With E⁺ and E⁻ swapped it shrinks."""
    cfg = tiny_config("q202", energy_weight_max=10.0, sampler_steps=0, lr=1e-3, batch_size=64)
    trainer = Trainer(cfg, [0])
    a, y0, t = _batch(cfg, batch=256)
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(9))
    schedule = trainer.schedule
    y_pos = q_sample(y0, t, noise, schedule)
    start = q_sample(y0, t, cfg.noise_scale * noise, schedule)
    y_neg = q_sample((start / schedule.sqrt_alphas_cumprod[t].unsqueeze(-1)).clamp(-2, 2), t, noise, schedule)

    def gap() -> float:
        with torch.no_grad():
            return (trainer.model.energy(a, y_neg, t) - trainer.model.energy(a, y_pos, t)).mean().item()

    before = gap()
    for _ in range(10):
        trainer.train_step()
    assert gap() > before + 0.1 * abs(before)


def test_without_renoise_the_negative_is_the_chain_state(tiny_config):
    """k = 0 and no re-noise: the negative is the chain start q_sample(Y, t, c·ε'), the positive
    q_sample(Y, t, ε'), so their noise parts are in the ratio c exactly."""
    cfg = tiny_config("q202", sampler_steps=0, negative_renoise=False, noise_scale=1.5)
    trainer = Trainer(cfg, [0])
    a, y0, t = _batch(cfg)
    calls = _record_calls(trainer, "energy")
    trainer._energy_terms(a, y0, t)
    schedule = trainer.schedule
    parts = [y - schedule.sqrt_alphas_cumprod[t].unsqueeze(-1) * y0 for _, y, _ in calls[-2:]]
    small, large = sorted(parts, key=lambda part: part.abs().sum().item())
    torch.testing.assert_close(large, 1.5 * small)
