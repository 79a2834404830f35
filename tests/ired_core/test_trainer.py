import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from ired_core.configs import list_presets
from ired_core.data import held_out_set
from ired_core.model import energy_and_grad_chain
from ired_core.trainer import DIAGNOSTICS, Trainer, code_version


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in {
            **trainer.model.state_dict(),
            **{f"ema.{k}": v for k, v in trainer.ema.state_dict().items()},
        }.items()
    }


@pytest.mark.parametrize("preset", ["q201", "q204"])
def test_resume_from_checkpoint_gives_identical_parameters(tiny_config, tmp_path, preset):
    cfg = tiny_config(preset, train_steps=20, checkpoint_every=10, ema_every=3)
    straight = Trainer(cfg, [0, 1])
    straight.run()

    first = Trainer(cfg, [0, 1])
    calls = iter(range(1000))
    first.run(should_stop=lambda: next(calls) >= 10, checkpoint_path=tmp_path / "ckpt.pt")
    assert first.step == 10
    resumed = Trainer(cfg, [0, 1])
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    events = []
    outcomes = resumed.run(on_metrics=events.append)
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    assert events[0].step == 15
    for name, value in _params(straight).items():
        assert torch.equal(value, _params(resumed)[name]), name


def test_checkpoint_with_other_architecture_or_seeds_is_refused(tiny_config, tmp_path):
    trainer = Trainer(tiny_config("q201"), [0, 1])
    trainer.save_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="architecture"):
        Trainer(tiny_config("q201", hidden_dim=48), [0, 1]).load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="seeds"):
        Trainer(tiny_config("q201"), [0, 2]).load_checkpoint(tmp_path / "c.pt")


def test_a_checkpoint_extends_into_a_longer_run_with_its_whole_state(tiny_config, tmp_path):
    """More train_steps is allowed: the longer run starts from the saved step, weights, EMA, optimizer,
    replay buffer and random streams, keeps its own train_steps, and trains on to them."""
    trainer = Trainer(tiny_config("q204", train_steps=12, ema_every=3), [0, 1])
    trainer.run(checkpoint_path=tmp_path / "c.pt")
    longer = Trainer(tiny_config("q204", train_steps=20, ema_every=3), [0, 1])
    longer.load_checkpoint(tmp_path / "c.pt")
    assert longer.step == 12 and longer.config.train_steps == 20
    for name, value in _params(trainer).items():
        assert torch.equal(value, _params(longer)[name]), name
    saved_state = trainer.optimizer.state_dict()["state"]
    for index, state in longer.optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], saved_state[index]["exp_avg"])
    for key, value in trainer.replay.state_dict().items():
        assert torch.equal(value, longer.replay.state_dict()[key]), key
    assert torch.equal(longer.streams.get_state()[0], trainer.streams.get_state()[0])
    assert longer.run()[0].step == 20


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_ensemble_equals_separate_single_seed_runs(tiny_config, preset):
    """Each seed's numbers in an S = 3 ensemble equal that seed trained alone (20 steps)."""
    cfg = tiny_config(preset, energy_warmup_frac=0.0 if preset != "q204_dcd_full" else 0.2)
    seeds = [3, 5, 11]
    ensemble = Trainer(cfg, seeds)
    ensemble_diag = torch.stack([ensemble.train_step() for _ in range(cfg.train_steps)])  # (steps, S, n)
    for index, seed in enumerate(seeds):
        alone = Trainer(cfg, [seed])
        alone_diag = torch.stack([alone.train_step() for _ in range(cfg.train_steps)])[:, 0]
        torch.testing.assert_close(ensemble_diag[:, index], alone_diag, rtol=1e-4, atol=1e-5)
        for (name, p_ens), p_alone in zip(
            ensemble.model.state_dict().items(), alone.model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(p_ens[index], p_alone[0], rtol=1e-4, atol=1e-5, msg=name)
    replay_col = DIAGNOSTICS.index("replay_frac")
    if ensemble.config.replay:
        assert ensemble_diag[-1, :, replay_col].min() > 0.5  # the replay path really ran


@pytest.mark.parametrize("engine", ["reuse", "compiled"])
@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_the_optimised_engines_train_the_same_model_as_the_eager_reference(tiny_config, preset, engine):
    """The conditioning on (A, t) made once per step and shared ("reuse"; "compiled" also runs the energy and
    its gradient through torch.compile) against every energy call making its own ("eager"): the same
    diagnostics and weights over 20 steps, within fp32 rounding (the order in which autograd sums the
    shared conditioning's gradients differs, and Inductor's fused kernels round differently)."""
    cfg = tiny_config(preset, energy_warmup_frac=0.0 if preset != "q204_dcd_full" else 0.2)
    seeds = [3, 5]
    eager, optimised = Trainer(cfg, seeds, engine="eager"), Trainer(cfg, seeds, engine=engine)
    eager_diag = torch.stack([eager.train_step() for _ in range(cfg.train_steps)])
    optimised_diag = torch.stack([optimised.train_step() for _ in range(cfg.train_steps)])
    torch.testing.assert_close(optimised_diag, eager_diag, rtol=1e-4, atol=1e-5)
    for (name, p_eager), p_optimised in zip(
        eager.model.state_dict().items(), optimised.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p_optimised, p_eager, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(optimised.evaluate(), eager.evaluate(), rtol=1e-4, atol=1e-6)
    if engine == "compiled":  # compiled forms for training and for the EMA's evaluation, and Dynamo compiled it
        assert energy_and_grad_chain not in (optimised.model.chain, optimised.ema.chain)
        assert _debug_get_cache_entry_list(energy_and_grad_chain.__code__)


@pytest.mark.parametrize(
    ("preset", "eager_calls", "reuse_calls"),
    [("q100", 1, 1), ("q201", 1 + 2 * 3 + 2, 1), ("q202", 1 + 3 + 2, 1), ("q204", 1 + 3 + 2, 2)],
)
def test_the_reuse_engine_conditions_once_per_step_and_once_more_after_replay(
    tiny_config, preset, eager_calls, reuse_calls
):
    """Conditionings made in one step (sampler_steps 3): eager makes one per energy call (Langevin: one per
    step; gd_reject: two), reuse one, and a second when replay brings other A and t."""
    cfg = tiny_config(preset, energy_warmup_frac=0.0, p_replay=1.0 if preset == "q204" else 0.0)
    for engine, expected in (("eager", eager_calls), ("reuse", reuse_calls)):
        trainer = Trainer(cfg, [0], engine=engine)
        trainer.train_step()  # the replay buffer fills
        made = []
        real = trainer.model.condition
        trainer.model.condition = lambda a, t, real=real, made=made: made.append(1) or real(a, t)
        trainer.train_step()
        assert len(made) == expected, (engine, len(made))


def test_an_energy_call_refuses_a_conditioning_made_for_another_input(tiny_config):
    trainer = Trainer(tiny_config("q202"), [0])
    a, y, t = torch.zeros(1, 4, 16), torch.zeros(1, 4, 16), torch.zeros(1, 4, dtype=torch.long)
    cond = trainer.model.condition(a, t)
    with pytest.raises(ValueError, match="another A or t"):
        trainer.model.energy(a.clone(), y, t, cond=cond)
    with pytest.raises(ValueError, match="another A or t"):
        trainer.model.energy_and_grad(a, y, t.clone(), cond=cond)


def test_an_unknown_engine_is_refused(tiny_config):
    with pytest.raises(ValueError, match="engine"):
        Trainer(tiny_config("q100"), [0], engine="fused")


def test_divergence_stops_with_a_clear_outcome(tiny_config):
    cfg = tiny_config("q100", train_steps=30, lr=1.0)
    trainer = Trainer(cfg, [0])
    with torch.no_grad():
        trainer.model.fc4.weight.mul_(1e30)
    outcomes = trainer.run()
    assert outcomes[0].status == "diverged"
    assert outcomes[0].error.startswith("diverged at step ")
    assert trainer.step < 30  # stopped early once every seed diverged


def test_should_stop_cancels_with_a_checkpoint(tiny_config, tmp_path):
    trainer = Trainer(tiny_config("q202"), [0])
    outcomes = trainer.run(should_stop=lambda: trainer.step >= 7, checkpoint_path=tmp_path / "c.pt")
    assert outcomes[0].status == "cancelled" and outcomes[0].step == 7
    assert (tmp_path / "c.pt").exists()


def test_metrics_carry_every_diagnostic_and_validation(tiny_config):
    events = []
    Trainer(tiny_config("q204"), [0]).run(on_metrics=events.append)
    last = events[-1].per_seed[0]
    assert set(DIAGNOSTICS) | {"steps_per_s", "val_mse", "val_mse_x0", "val_mse_ood"} <= set(last)
    assert [e.step for e in events] == [5, 10, 15, 20]


def test_learns_well_below_the_predict_the_mean_baseline():
    """A reduced config (rank 4) trains on the CPU; val_mse must beat predicting the mean inverse."""
    from ired_core.configs import resolve_config

    cfg = resolve_config(
        "q100",
        {
            "rank": 4,
            "batch_size": 256,
            "hidden_dim": 128,
            "time_dim": 32,
            "train_steps": 400,
            "lr": 1e-3,
            "val_size": 512,
            "eval_every": 400,
            "log_every": 100,
            "ema_decay": 0.99,
            "ema_every": 1,
        },
    )
    held_out = held_out_set(cfg.val_size, cfg.rank, cfg.id_diag, cfg.val_seed)
    predict_mean = (held_out.targets - held_out.targets.mean(0)).pow(2).mean().item()
    trainer = Trainer(cfg, [0])
    outcome = trainer.run()[0]
    assert outcome.final_metrics["val_mse"] < 0.5 * predict_mean


def test_code_version_is_the_commit_an_image_was_built_from_when_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    code_version.cache_clear()
    monkeypatch.setenv("IRED_CODE_VERSION", "git:0123456789ab")
    try:
        assert code_version() == "git:0123456789ab"
    finally:
        code_version.cache_clear()
    monkeypatch.delenv("IRED_CODE_VERSION")
    assert code_version().startswith(("git:", "ired-dcd "))  # this checkout's commit, or the package's version
    code_version.cache_clear()
