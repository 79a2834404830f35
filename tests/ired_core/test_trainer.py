import pytest
import torch

from ired_core.configs import list_presets
from ired_core.data import held_out_set
from ired_core.trainer import DIAGNOSTICS, Trainer


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
    longer = Trainer(tiny_config("q201", train_steps=500), [0, 1])  # extending a run is allowed
    longer.load_checkpoint(tmp_path / "c.pt")


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
