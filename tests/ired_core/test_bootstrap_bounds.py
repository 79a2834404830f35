"""The bootstrap's memory is bounded whatever n is, and its numbers did not change for the study's sizes.

Issue 16: 65,000 imported rows made the bootstrap build a 10,000 × n index matrix (10 GiB). These tests
pin the chunked bootstrap to the unchunked one it replaced, and measure its peak allocation.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ired_core.stats import BOOTSTRAP_EXACT_MAX_N, Baseline, bootstrap_delta_pct_ci, describe

MIB = 1 << 20


def unchunked_ci(values: np.ndarray, baseline: Baseline, *, n_resamples: int = 10_000, seed: int = 0) -> tuple:
    """The bootstrap as it was before issue 16: one (B, n) index matrix per side."""
    rng = np.random.default_rng(seed)
    config_means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    raw = np.asarray(baseline.values)
    baseline_means = raw[rng.integers(0, raw.size, size=(n_resamples, raw.size))].mean(axis=1)
    delta_pct = 100.0 * (config_means - baseline_means) / baseline_means
    low, high = np.quantile(delta_pct, [0.025, 0.975])
    return float(low), float(high)


@pytest.mark.parametrize("n", [2, 10, 64, 105, 1000, 4096])
def test_chunked_bootstrap_gives_the_numbers_of_the_unchunked_one(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.normal(0.0095, 0.00002, size=n)
    baseline = Baseline.from_values("b", rng.normal(0.0097, 0.00002, size=max(2, n // 2)))
    assert bootstrap_delta_pct_ci(values, baseline, seed=7) == unchunked_ci(values, baseline, seed=7)


def peak_mib(action) -> float:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("n", [BOOTSTRAP_EXACT_MAX_N, 200_000])
def test_bootstrap_memory_is_bounded_by_a_chunk_not_by_n_times_resamples(n: int) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0.0095, 0.00002, size=n)
    baseline = Baseline.from_values("b", rng.normal(0.0097, 0.00002, size=n))
    # the unchunked form needed n · 10,000 · 16 bytes: 1.5 GiB at n = 10,000, 30 GiB at 200,000
    assert peak_mib(lambda: bootstrap_delta_pct_ci(values, baseline)) < 40


def test_a_very_large_sample_is_seeded_and_matches_the_t_interval() -> None:
    values = np.random.default_rng(1).gamma(2.0, 0.005, size=3 * BOOTSTRAP_EXACT_MAX_N)  # skewed
    constant = Baseline.constant("c", 0.0097)
    first = bootstrap_delta_pct_ci(values, constant, seed=3)
    assert first == bootstrap_delta_pct_ci(values, constant, seed=3)
    assert first != bootstrap_delta_pct_ci(values, constant, seed=4)
    desc = describe(values)
    t_low, t_high = (100 * (desc.ci_low - 0.0097) / 0.0097, 100 * (desc.ci_high - 0.0097) / 0.0097)
    width = t_high - t_low
    assert first[0] == pytest.approx(t_low, abs=0.05 * width)
    assert first[1] == pytest.approx(t_high, abs=0.05 * width)
