"""The divergence rules: on the real H200 curves, rule by rule, and in the trainer.

The curves are `tests/fixtures/h200-2026-11-29/curve_*.json`, copied unchanged from
`shared/measurements/h200-2026-11-29/` (batch 2048, rank 20, 10,000 steps asked, a row every 250 steps).
"""

import json
import math
from pathlib import Path

import pytest
import torch

from ired_core.configs import resolve_config
from ired_core.divergence import Divergence, DivergenceMonitor
from ired_core.trainer import Trainer

CURVES = Path(__file__).resolve().parents[1] / "fixtures" / "h200-2026-11-29"
HEALTHY = [
    "curve_q100_10k.json",
    "curve_q100_shared_gpu_300s.json",
    "curve_q200_10k.json",
    "curve_q200_shared_gpu_300s.json",
    "curve_q201_shared_gpu_300s.json",
]
BLOWN_UP = ["curve_q202_shared_gpu_300s.json", "curve_q203_shared_gpu_300s.json", "curve_q204_shared_gpu_300s.json"]
FAR_ABOVE_HEALTHY_ENERGY = 1e6
"""A row is bad when E⁻ exceeds this: the healthy curves never pass 1.5·10³ (q200), the blown-up ones reach 10¹⁶."""
PREDICT_MEAN_MSE = 0.01415  # the held-out set's predict-the-mean MSE at rank 20 (SPEC §2: 0.0142)


def _seed_curves(name: str) -> tuple[str, int, dict[int, list[tuple[int, dict[str, float]]]]]:
    """(preset, steps asked, seed → [(step, {diagnostic: value})]) of one curve file."""
    data = json.loads((CURVES / name).read_text())
    curves: dict[int, list[tuple[int, dict[str, float]]]] = {seed: [] for seed in data["seeds"]}
    for row in data["curve"]:
        for seed in data["seeds"]:
            suffix = f"_s{seed}"
            values = {k.removesuffix(suffix): v for k, v in row.items() if k.endswith(suffix)}
            curves[seed].append((row["step"], values))
    return data["preset"], data["steps_asked"], curves


def _first_divergence(preset: str, steps_asked: int, rows: list[tuple[int, dict[str, float]]]) -> Divergence | None:
    monitor = DivergenceMonitor(resolve_config(preset, {"train_steps": steps_asked}))
    for step, values in rows:
        found = monitor.check_interval(step, values)
        if found is None and "val_mse" in values:
            found = monitor.check_validation(step, values["val_mse"], PREDICT_MEAN_MSE)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_gpu_curves_never_trip_the_rules(name):
    preset, steps_asked, curves = _seed_curves(name)
    for seed, rows in curves.items():
        assert _first_divergence(preset, steps_asked, rows) is None, f"{name} seed {seed}"


@pytest.mark.parametrize("name", BLOWN_UP)
def test_blown_up_gpu_curves_trip_in_their_first_bad_interval(name):
    preset, steps_asked, curves = _seed_curves(name)
    for seed, rows in curves.items():
        first_bad = next(step for step, values in rows if values["energy_neg"] > FAR_ABOVE_HEALTHY_ENERGY)
        found = _first_divergence(preset, steps_asked, rows)
        assert found is not None and found.step == first_bad, f"{name} seed {seed}: {found}"


def test_the_first_bad_intervals_are_the_ones_the_measurements_describe():
    """q202 and q203 are already blown up at their first row (step 250); q204 goes at step 500."""
    for name, expected in zip(BLOWN_UP, (250, 250, 500), strict=True):
        preset, steps_asked, curves = _seed_curves(name)
        assert {_first_divergence(preset, steps_asked, rows).step for rows in curves.values()} == {expected}


def _monitor(**overrides):
    return DivergenceMonitor(resolve_config("q202", {"rank": 4, "train_steps": 10_000, **overrides}))


def _interval(loss_denoise=0.5, energy_pos=50.0, energy_neg=55.0, **extra):
    return {"loss_denoise": loss_denoise, "energy_pos": energy_pos, "energy_neg": energy_neg, **extra}


def test_denoiser_blow_up_is_loss_denoise_above_its_limit():
    assert _monitor().check_interval(100, _interval(loss_denoise=9.9)) is None
    found = _monitor().check_interval(100, _interval(loss_denoise=10.5))
    assert (found.rule, found.diagnostic, found.value) == ("denoiser blow-up", "loss_denoise", 10.5)
    assert found.threshold == 10
    assert _monitor(diverge_denoise_max=None).check_interval(100, _interval(loss_denoise=1e9)) is None


def test_energy_blow_up_is_growth_over_the_largest_earlier_interval():
    monitor = _monitor()
    assert monitor.check_interval(100, _interval(energy_neg=200.0)) is None
    assert monitor.check_interval(200, _interval(energy_neg=150_000.0)) is None  # 750× the largest so far
    found = monitor.check_interval(300, _interval(energy_pos=-2e8))  # |E⁺| counts too
    assert (found.rule, found.diagnostic, found.threshold) == ("energy blow-up", "energy_pos", 1000 * 150_000.0)


def test_energy_growth_is_measured_from_at_least_the_energy_unit():
    """Tiny energies at initialisation do not make ordinary growth look like a blow-up (D = rank² = 16)."""
    monitor = _monitor()
    assert monitor.check_interval(5, _interval(energy_pos=0.001, energy_neg=0.002)) is None
    assert monitor.check_interval(10, _interval(energy_pos=15_000.0, energy_neg=15_900.0)) is None
    assert monitor.check_interval(15, _interval(energy_neg=17e6)).rule == "energy blow-up"


def test_collapse_counts_only_after_warmup_and_the_grace_steps():
    early = _monitor(energy_warmup_frac=0.2)  # warm-up ends at step 2000
    assert early.check_interval(1500, _interval(loss_denoise=1.0)) is None
    found = early.check_interval(2000, _interval(loss_denoise=0.99))
    assert (found.rule, found.threshold) == ("collapse", 0.98)
    assert _monitor().check_interval(999, _interval(loss_denoise=1.0)) is None
    assert _monitor().check_interval(1000, _interval(loss_denoise=0.97)) is None


def test_not_learning_is_val_mse_above_predicting_the_mean_from_the_set_step():
    assert _monitor().check_validation(9_999, 3.9, PREDICT_MEAN_MSE) is None
    found = _monitor().check_validation(10_000, 0.02, PREDICT_MEAN_MSE)
    assert (found.rule, found.diagnostic, found.threshold) == ("not learning", "val_mse", PREDICT_MEAN_MSE)
    assert _monitor().check_validation(10_000, 0.0097, PREDICT_MEAN_MSE) is None
    assert _monitor(diverge_val_after=None).check_validation(10**6, 3.9, PREDICT_MEAN_MSE) is None


def test_a_non_finite_value_diverges_whatever_the_thresholds():
    off = {"diverge_denoise_max": None, "diverge_energy_growth": None, "diverge_collapse_level": None}
    found = _monitor(**off).check_interval(5, _interval(energy_neg=math.inf))
    assert (found.rule, found.diagnostic) == ("not finite", "energy_neg")
    assert _monitor(**off).check_validation(5, math.nan, PREDICT_MEAN_MSE).rule == "not finite"


def test_divergence_record_survives_strict_json_with_a_non_finite_value():
    record = Divergence(7, "not finite", "loss", math.nan, math.inf)
    # allow_nan=False: strict JSON, as Postgres' JSON type wants it (it refuses NaN and Infinity)
    again = Divergence.from_dict(json.loads(json.dumps(record.to_dict(), allow_nan=False)))
    assert again.step == 7 and math.isnan(again.value) and again.threshold == math.inf
    assert record.message == "diverged at step 7 (not finite): loss = nan, threshold inf"


def _blow_up_seed(trainer: Trainer, index: int) -> None:
    """Scale one seed's output head so that its ε̂ = ∇E is ~1000× too large: loss_denoise ≫ 10."""
    with torch.no_grad():
        trainer.model.fc4.weight[index].mul_(1000.0)


def test_a_diverged_seed_stops_while_the_others_train_on_as_if_alone(tiny_config):
    cfg = tiny_config("q202", train_steps=20, log_every=5, eval_every=20)
    ensemble = Trainer(cfg, [0, 1])
    _blow_up_seed(ensemble, 1)
    events = []
    outcomes = ensemble.run(on_metrics=events.append)
    assert [o.status for o in outcomes] == ["succeeded", "diverged"]
    diverged = outcomes[1]
    assert (diverged.step, diverged.divergence.rule, diverged.divergence.diagnostic) == (
        5,
        "denoiser blow-up",
        "loss_denoise",
    )
    assert diverged.error == diverged.divergence.message and diverged.divergence.value > 10
    # its blow-up is reported once, for the interval it happened in, then nothing more
    assert [e.step for e in events if 1 in e.per_seed] == [5]
    assert events[0].per_seed[1]["loss_denoise"] == diverged.divergence.value
    # seed 0 trains exactly as it would alone
    alone = Trainer(cfg, [0])
    alone_outcome = alone.run()[0]
    assert outcomes[0].final_metrics == pytest.approx(alone_outcome.final_metrics, rel=1e-4)


def test_a_diverged_seeds_weights_stop_changing(tiny_config):
    cfg = tiny_config("q202", train_steps=20, log_every=5, eval_every=20)
    trainer = Trainer(cfg, [0, 1])
    _blow_up_seed(trainer, 1)
    trainer.run(should_stop=lambda: trainer.step >= 10)  # seed 1 is judged at step 5
    assert trainer.divergences[1].step == 5
    frozen = {name: p[1].clone() for name, p in trainer.model.state_dict().items()}
    moving = {name: p[0].clone() for name, p in trainer.model.state_dict().items()}
    for _ in range(3):
        trainer.train_step()
    for name, p in trainer.model.state_dict().items():
        assert torch.equal(p[1], frozen[name]), name
    assert any(not torch.equal(p[0], moving[name]) for name, p in trainer.model.state_dict().items())


def test_divergence_and_its_record_survive_a_checkpoint(tiny_config, tmp_path):
    cfg = tiny_config("q202", train_steps=20, log_every=5, eval_every=20, checkpoint_every=10)
    first = Trainer(cfg, [0, 1])
    _blow_up_seed(first, 1)
    first.run(should_stop=lambda: first.step >= 10, checkpoint_path=tmp_path / "c.pt")
    resumed = Trainer(cfg, [0, 1])
    resumed.load_checkpoint(tmp_path / "c.pt")
    outcomes = resumed.run()
    assert [o.status for o in outcomes] == ["succeeded", "diverged"]
    assert outcomes[1].divergence == first.divergences[1]
    assert resumed.monitors[0].largest_energy >= first.monitors[0].largest_energy > 0
