import math

import pytest
import torch

from ired_core.schedule import (
    cosine_alphas_cumprod,
    cosine_betas,
    ema_decay,
    energy_weight,
    make_schedule,
    q_sample,
    timestep_window,
)


def test_cosine_schedule_pinned_values():
    s = make_schedule(10)
    # √ᾱ₀ ≈ 0.986: the factor the reference's final y carries (SPEC §2)
    assert s.sqrt_alphas_cumprod[0].item() == pytest.approx(0.985948, abs=1e-5)
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])
    assert s.step_size[5].item() == pytest.approx(
        (s.betas[5] * torch.sqrt(1 / (1 - s.alphas_cumprod[5]))).item(), rel=1e-6
    )


def test_schedule_math_is_float64_and_the_grid_starts_at_one():
    """The module's promise: the same numbers on every device, because nothing is computed in float32."""
    assert cosine_alphas_cumprod(10).dtype == cosine_betas(10).dtype == torch.float64
    assert cosine_alphas_cumprod(10)[0].item() == 1.0  # ᾱ(x) = f(x)/f(0)


def test_the_offset_s_reaches_the_schedule():
    """ᾱ₀ = f(1)/f(0) with f(x) = cos²((x/T + s)/(1 + s) · π/2), at a non-default s."""
    s, t = 0.02, 10

    def f(x: float) -> float:
        return math.cos((x / t + s) / (1 + s) * math.pi / 2) ** 2

    assert make_schedule(t, s).alphas_cumprod[0].item() == pytest.approx(f(1) / f(0), rel=1e-6)


def test_signal_and_noise_variances_add_to_one():
    s = make_schedule(10)
    torch.testing.assert_close(s.sqrt_alphas_cumprod**2 + s.sqrt_one_minus**2, torch.ones(10))


def test_q_sample_per_sample_timesteps():
    s = make_schedule(10)
    y0, eps = torch.ones(1, 2, 3), torch.zeros(1, 2, 3)
    out = q_sample(y0, torch.tensor([[0, 9]]), eps, s)
    assert torch.allclose(out[0, 0], s.sqrt_alphas_cumprod[0].expand(3))
    assert torch.allclose(out[0, 1], s.sqrt_alphas_cumprod[9].expand(3))


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (100, 0.025), (200, 0.05), (999, 0.05)])
def test_energy_weight_warms_up_linearly(step, expected):
    assert energy_weight(step, 1000, 0.05, 0.2) == pytest.approx(expected)


def test_energy_weight_without_warmup_is_flat():
    assert energy_weight(0, 1000, 0.5, 0.0) == 0.5


def test_a_one_step_warmup_starts_at_zero():
    assert [energy_weight(step, 10, 0.5, 0.1) for step in range(3)] == [0.0, 0.5, 0.5]


def test_timestep_window_keeps_mid_timesteps():
    mask = timestep_window(torch.arange(10), 10, 0.2, 0.8)
    assert mask.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0]


def test_ema_decay_warms_up_then_caps():
    assert ema_decay(50, 0.995) == 0.0
    assert 0 < ema_decay(200, 0.995) < 0.995
    assert ema_decay(100_000, 0.995) == 0.995
    assert ema_decay(300, 0.995) == pytest.approx(min(0.995, 1 - (1 + 199) ** (-2 / 3)))
    assert math.isfinite(ema_decay(10**9, 0.995))


def test_ema_decay_rises_from_the_second_step_after_the_start():
    """ema_pytorch: n = step − start − 1, so step 101 copies (n = 0) and step 102 has decay 1 − 2^(−2/3)."""
    assert ema_decay(101, 0.995) == 0.0
    assert ema_decay(102, 0.995) == pytest.approx(1 - 2 ** (-2 / 3))
