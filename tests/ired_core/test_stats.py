"""ired_core.stats against scipy on fixed vectors, hand-checked formulas, and the degenerate cases."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from ired_core.failures import FailedRuns
from ired_core.stats import (
    Baseline,
    bootstrap_delta_pct_ci,
    describe,
    hedges_g,
    hedges_g_one_sample,
    holm_adjust,
    paired_tests,
)
from ired_core.verdict import (
    BUILTIN_BASELINES,
    IN_HOUSE_BASELINE,
    MEASURED_HERE,
    PLAN_BASELINE_MSE,
    Q201,
    Q202,
    Q203,
    Q204,
    baseline_config,
    builtin_baseline,
    choose_baseline,
    compare,
    success_level,
)

# two fixed samples in the range of the study's val_mse
X = np.array([0.00951, 0.00948, 0.00955, 0.00946, 0.00950, 0.00953, 0.00949, 0.00947])
Y = np.array([0.00969, 0.00971, 0.00966, 0.00972, 0.00968, 0.00970, 0.00967])


def row_of(comparison, name):
    return next(row for row in comparison.rows if row.name == name)


# --- description ------------------------------------------------------------------------------


def test_describe_matches_numpy_and_the_scipy_t_interval():
    desc = describe(X)
    ci = stats.ttest_1samp(X, 0.0).confidence_interval(0.95)
    assert desc.n == 8
    assert desc.mean == pytest.approx(X.mean(), rel=1e-12)
    assert desc.sd == pytest.approx(np.std(X, ddof=1), rel=1e-12)
    assert desc.median == pytest.approx(np.median(X))
    assert (desc.min, desc.max) == (X.min(), X.max())
    assert (desc.ci_low, desc.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_t_interval_by_hand():
    # x̄ = 2, s = 1, n = 3: half width t_{0.975, 2}·1/√3 = 4.302653/√3 = 2.484138
    desc = describe(np.array([1.0, 2.0, 3.0]))
    assert (desc.ci_low, desc.ci_high) == pytest.approx((2 - 2.4841377, 2 + 2.4841377), abs=1e-6)
    narrower = describe(np.array([1.0, 2.0, 3.0]), alpha=0.1)
    assert narrower.ci_high - narrower.ci_low < desc.ci_high - desc.ci_low


# --- tests against each kind of baseline ---------------------------------------------------------


def test_raw_baseline_matches_scipy_welch_student_and_mann_whitney():
    row = row_of(compare({"x": X}, Baseline.from_values("y", Y)), "x")
    welch = stats.ttest_ind(X, Y, equal_var=False)
    student = stats.ttest_ind(X, Y, equal_var=True)
    mann_whitney = stats.mannwhitneyu(X, Y, alternative="two-sided")
    assert row.welch_t == pytest.approx(welch.statistic, rel=1e-10)
    assert row.welch_p == pytest.approx(welch.pvalue, rel=1e-8)
    assert row.welch_df == pytest.approx(welch.df, rel=1e-10)
    assert row.student_t == pytest.approx(student.statistic, rel=1e-10)
    assert row.student_p == pytest.approx(student.pvalue, rel=1e-8)
    assert row.mannwhitney_u == mann_whitney.statistic
    assert row.mannwhitney_p == pytest.approx(mann_whitney.pvalue, rel=1e-10)
    assert row.delta == pytest.approx(X.mean() - Y.mean(), rel=1e-12)
    assert row.delta_pct == pytest.approx(100 * (X.mean() - Y.mean()) / Y.mean(), rel=1e-12)


def test_summary_baseline_uses_the_from_stats_forms():
    lab10 = builtin_baseline("lab10")
    row = row_of(compare({"x": X}, lab10), "x")
    moments = dict(mean1=X.mean(), std1=np.std(X, ddof=1), nobs1=8, mean2=0.00969245, std2=0.0000227, nobs2=10)
    welch = stats.ttest_ind_from_stats(**moments, equal_var=False)
    student = stats.ttest_ind_from_stats(**moments, equal_var=True)
    assert row.welch_t == pytest.approx(welch.statistic, rel=1e-10)
    assert row.welch_p == pytest.approx(welch.pvalue, rel=1e-8)
    assert row.student_t == pytest.approx(student.statistic, rel=1e-10)
    assert row.student_p == pytest.approx(student.pvalue, rel=1e-8)
    assert row.mannwhitney_p is None  # needs raw values


def test_summary_of_a_sample_gives_the_same_tests_as_its_raw_values():
    summary = Baseline.summary("y", Y.mean(), np.std(Y, ddof=1), len(Y))
    from_summary = row_of(compare({"x": X}, summary), "x")
    from_values = row_of(compare({"x": X}, Baseline.from_values("y", Y)), "x")
    assert from_summary.welch_df == pytest.approx(stats.ttest_ind(X, Y, equal_var=False).df, rel=1e-10)
    for name in ("welch_t", "welch_p", "welch_df", "student_t", "student_p", "hedges_g"):
        assert getattr(from_summary, name) == pytest.approx(getattr(from_values, name), rel=1e-9), name


def test_constant_baseline_is_the_one_sample_t_test():
    row = row_of(compare({"x": X}, builtin_baseline("plan")), "x")
    one_sample = stats.ttest_1samp(X, PLAN_BASELINE_MSE)
    assert row.welch_t == pytest.approx(one_sample.statistic, rel=1e-10)
    assert row.welch_p == pytest.approx(one_sample.pvalue, rel=1e-8)
    assert row.welch_df == len(X) - 1
    assert row.student_p is None and row.mannwhitney_p is None


def test_builtin_baselines_hold_the_spec_numbers_and_say_they_were_measured_elsewhere():
    elsewhere = "measured elsewhere, on another held-out set"
    assert BUILTIN_BASELINES["plan"] == Baseline.constant("plan", 0.0096761, origin=elsewhere)
    assert BUILTIN_BASELINES["lab10"] == Baseline.summary("lab10", 0.00969245, 0.0000227, 10, origin=elsewhere)
    published = Baseline.summary("ired_published", 0.00977702, 0.0000245, 10, origin=elsewhere)
    assert BUILTIN_BASELINES["ired_published"] == published
    assert BUILTIN_BASELINES["plan"].describe() == f"plan (constant 0.0096761, {elsewhere})"
    with pytest.raises(ValueError, match="plan, lab10, ired_published"):
        builtin_baseline("lab11")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Baseline.summary("b", 0.01, -1e-5, 10),
        lambda: Baseline.summary("b", 0.01, 1e-5, 0),
        lambda: Baseline.constant("b", float("nan")),
        lambda: Baseline.from_values("b", []),
    ],
)
def test_invalid_baselines_are_refused(make):
    with pytest.raises(ValueError, match="b"):
        make()


# --- effect size and family-wise correction ------------------------------------------------------


def test_hedges_g_by_hand():
    # [1,2,3] vs [2,3,5,7]: Δ = −2.25, s_p² = (2·1 + 3·14.75/3)/5 = 3.35, J = 1 − 3/19
    assert hedges_g(2.0, 1.0, 3, 4.25, np.sqrt(14.75 / 3), 4) == pytest.approx(-1.0352053, abs=1e-7)
    # one sample [1,2,3] vs 1: d = 1, J(2) = 1 − 3/7
    assert hedges_g_one_sample(2.0, 1.0, 3, 1.0) == pytest.approx(4 / 7, rel=1e-12)
    row = row_of(compare({"x": [1.0, 2.0, 3.0]}, Baseline.from_values("y", [2.0, 3.0, 5.0, 7.0])), "x")
    assert row.hedges_g == pytest.approx(-1.0352053, abs=1e-7)


def test_holm_on_a_known_example():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([None, 0.02, 0.5]) == [None, pytest.approx(0.04), pytest.approx(0.5)]
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0]
    assert holm_adjust([]) == []


def test_compare_applies_holm_to_the_welch_p_of_testable_rows_only():
    values = {"a": X, "b": Y, "c": X + 0.0001, "single": [0.0095], "y": Y}
    comparison = compare(values, Baseline.from_values("y", Y))
    testable = [row for row in comparison.rows if row.welch_p is not None]
    assert [row.name for row in testable] == ["a", "b", "c"]
    expected = holm_adjust([row.welch_p for row in testable])
    assert [row.holm_p for row in testable] == pytest.approx(expected)
    assert row_of(comparison, "single").holm_p is None
    assert row_of(comparison, "y").is_baseline and row_of(comparison, "y").holm_p is None


# --- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_brackets_the_point_estimate():
    baseline = Baseline.from_values("y", Y)
    first = bootstrap_delta_pct_ci(X, baseline, seed=3)
    assert first == bootstrap_delta_pct_ci(X, baseline, seed=3)
    assert first != bootstrap_delta_pct_ci(X, baseline, seed=4)
    point = 100 * (X.mean() - Y.mean()) / Y.mean()
    assert first[0] < point < first[1]


def test_bootstrap_with_a_fixed_baseline_matches_the_t_interval_for_a_large_sample():
    values = np.random.default_rng(0).normal(0.0095, 0.00002, size=400)
    low, high = bootstrap_delta_pct_ci(values, Baseline.constant("c", 0.0097))
    desc = describe(values)
    t_low, t_high = (100 * (desc.ci_low - 0.0097) / 0.0097, 100 * (desc.ci_high - 0.0097) / 0.0097)
    width = t_high - t_low
    assert low == pytest.approx(t_low, abs=0.1 * width)
    assert high == pytest.approx(t_high, abs=0.1 * width)


def test_bootstrap_resamples_a_raw_baseline_but_not_a_summary():
    raw = bootstrap_delta_pct_ci(X, Baseline.from_values("y", Y))
    fixed = bootstrap_delta_pct_ci(X, Baseline.summary("y", Y.mean(), np.std(Y, ddof=1), len(Y)))
    assert raw[1] - raw[0] > 1.2 * (fixed[1] - fixed[0])


def test_a_row_does_not_depend_on_the_other_configs():
    alone = row_of(compare({"x": X}, builtin_baseline("plan")), "x")
    with_others = row_of(compare({"z": Y, "x": X}, builtin_baseline("plan")), "x")
    assert (alone.delta_pct_ci_low, alone.delta_pct_ci_high) == (
        with_others.delta_pct_ci_low,
        with_others.delta_pct_ci_high,
    )


# --- degenerate cases -----------------------------------------------------------------------------


def test_n_equal_one_reports_the_value_and_no_invented_statistics():
    row = row_of(compare({"x": [0.0095]}, builtin_baseline("lab10")), "x")
    assert (row.n, row.mean, row.median, row.min, row.max) == (1, 0.0095, 0.0095, 0.0095, 0.0095)
    assert row.delta_pct == pytest.approx(100 * (0.0095 - 0.00969245) / 0.00969245)
    for name in (
        "sd",
        "ci_low",
        "ci_high",
        "delta_pct_ci_low",
        "welch_t",
        "welch_p",
        "student_p",
        "mannwhitney_p",
        "hedges_g",
        "holm_p",
    ):
        assert getattr(row, name) is None, name
    assert any("n = 1" in note for note in row.notes)


def test_baseline_with_one_value_gives_no_tests():
    row = row_of(compare({"x": X}, Baseline.from_values("y", [0.0097])), "x")
    assert row.welch_p is None and row.mannwhitney_p is None
    assert any("baseline n = 1" in note for note in row.notes)
    summary_row = row_of(compare({"x": X}, Baseline.summary("s", 0.0097, 0.0, 1)), "x")
    assert summary_row.welch_p is None


def test_empty_config_is_a_row_with_n_zero():
    row = row_of(compare({"x": []}, builtin_baseline("plan")), "x")
    assert row.n == 0 and row.mean is None and row.delta is None and row.notes == ("no values",)


def test_zero_variance_against_a_constant_gives_no_t_test():
    row = row_of(compare({"x": [0.0095] * 4}, builtin_baseline("plan")), "x")
    assert row.sd == 0.0
    assert row.welch_t is None and row.welch_p is None and row.hedges_g is None
    assert any("zero variance" in note for note in row.notes)


def test_zero_variance_in_both_groups_keeps_the_rank_test():
    row = row_of(compare({"x": [0.0095] * 4}, Baseline.from_values("y", [0.0097] * 5)), "x")
    assert row.welch_p is None and row.student_p is None and row.hedges_g is None
    assert any("zero variance in both groups" in note for note in row.notes)
    expected = stats.mannwhitneyu([0.0095] * 4, [0.0097] * 5, alternative="two-sided").pvalue
    assert row.mannwhitney_p == pytest.approx(expected)
    summary_row = row_of(compare({"x": [0.0095] * 4}, Baseline.summary("s", 0.0097, 0.0, 5)), "x")
    assert summary_row.welch_p is None


def test_zero_variance_in_one_group_is_still_tested():
    spread = [1.2, 1.5, 0.9, 1.1, 1.3]
    row = row_of(compare({"x": [1.0] * 4}, Baseline.from_values("y", spread)), "x")
    # s1 = 0: t = (1 − ȳ)/√(s2²/n2), Satterthwaite df = n2 − 1
    t = (1.0 - np.mean(spread)) / np.sqrt(np.var(spread, ddof=1) / 5)
    assert row.welch_t == pytest.approx(t, rel=1e-10)
    assert row.welch_df == pytest.approx(4.0)
    assert row.welch_p == pytest.approx(2 * stats.t.sf(abs(t), 4), rel=1e-8)


def test_identical_groups_give_p_one():
    row = row_of(compare({"x": X}, Baseline.from_values("y", X)), "x")
    assert row.welch_t == 0.0 and row.welch_p == 1.0 and row.student_p == 1.0
    assert row.mannwhitney_p == 1.0 and row.hedges_g == 0.0 and row.delta_pct == 0.0
    constant = row_of(compare({"x": [1.0, 1.0]}, Baseline.from_values("y", [1.0, 1.0])), "x")
    assert constant.welch_p is None and constant.mannwhitney_p == 1.0


def test_non_finite_values_are_refused_with_the_config_name():
    with pytest.raises(ValueError, match="q204"):
        compare({"q204": [0.0095, float("nan")]}, builtin_baseline("plan"))
    with pytest.raises(ValueError, match="alpha"):
        compare({"x": X}, builtin_baseline("plan"), alpha=1.5)


def test_to_dict_is_strict_json_even_for_degenerate_rows():
    values = {Q201: Y, Q204: X, "one": [0.0095], "flat": [0.0095] * 3, "none": []}
    document = compare(values, builtin_baseline("plan")).to_dict()
    decoded = json.loads(json.dumps(document, allow_nan=False))
    flat = next(row for row in decoded["rows"] if row["name"] == "flat")
    assert flat["welch_p"] is None and flat["sd"] == 0.0
    assert decoded["baseline"]["mean"] == PLAN_BASELINE_MSE
    assert decoded["success"]["level"] in ("none", "minimum", "moderate", "maximum")


# --- ablation and success level ----------------------------------------------------------------------


def test_ablation_uses_the_pairs_present():
    values = {Q201: Y, Q202: X, Q204: X - 0.0001}
    steps = compare(values, builtin_baseline("plan")).ablation
    assert [(s.config, s.reference) for s in steps] == [(Q202, Q201)]  # Q-203 missing: two pairs dropped
    step = steps[0]
    assert step.delta_mean == pytest.approx(X.mean() - Y.mean(), rel=1e-12)
    assert step.delta_pct == pytest.approx(100 * (X.mean() - Y.mean()) / Y.mean(), rel=1e-12)
    assert step.welch_p == pytest.approx(stats.ttest_ind(X, Y, equal_var=False).pvalue, rel=1e-8)
    assert step.hedges_g < 0


def test_full_ablation_in_plan_order():
    values = {Q204: X - 0.0002, Q203: X - 0.0001, Q202: X, Q201: Y}
    steps = compare(values, builtin_baseline("plan")).ablation
    assert [(s.config, s.reference) for s in steps] == [(Q202, Q201), (Q203, Q202), (Q204, Q203)]
    assert steps[2].delta_mean == pytest.approx(-0.0001, rel=1e-9)


def tight(mean: float) -> list[float]:
    """Ten values around `mean` with a tiny spread, so every difference is significant."""
    return list(mean + np.linspace(-1e-5, 1e-5, 10))


@pytest.mark.parametrize(
    ("q204_mean", "level"),
    [
        (0.94, "maximum"),
        (0.969, "maximum"),
        (0.971, "moderate"),
        (0.989, "moderate"),
        (0.995, "minimum"),
        (1.01, "none"),
    ],
)
def test_success_level_thresholds_on_q204(q204_mean, level):
    success = compare({Q201: tight(1.02), Q204: tight(q204_mean)}, Baseline.constant("c", 1.0)).success
    assert success.level == level
    assert success.significant is (level != "none")
    assert success.significant_level == level
    assert success.q204_better_pct == pytest.approx(100 * (1 - q204_mean))
    assert any("above the plan's 3–5%" in note for note in success.notes) is (q204_mean < 0.95)


def test_minimum_from_another_plan_config_and_not_from_other_presets():
    baseline = Baseline.constant("c", 1.0)
    assert compare({Q203: tight(0.999), Q204: tight(1.01)}, baseline).success.level == "minimum"
    assert compare({"q100_denoise_only": tight(0.9), Q204: tight(1.01)}, baseline).success.level == "none"


def test_an_improvement_without_significance_is_flagged():
    noisy_q204 = [0.90, 1.06]  # mean 0.98 (2% better), p ≈ 0.6
    success = compare({Q204: noisy_q204}, Baseline.constant("c", 1.0)).success
    assert success.level == "moderate"
    assert success.significant is False and success.significant_level == "none"


def test_q204_as_the_baseline_cannot_reach_moderate():
    comparison = compare({Q203: tight(0.9), Q204: tight(1.0)}, Baseline.from_values(Q204, tight(1.0)))
    assert comparison.success.level == "minimum"
    assert comparison.success.q204_better_pct is None
    assert any("Q-204" in note for note in comparison.success.notes)


def test_success_level_counts_holm_adjusted_p():
    rows = compare({Q202: tight(0.99), Q204: tight(0.98)}, Baseline.constant("c", 1.0)).rows
    strict = [replace(row, holm_p=0.2) for row in rows]
    success = success_level(strict, alpha=0.05)
    assert success.level == "moderate" and success.significant_level == "none"


def test_baseline_config_is_none_for_builtins_and_canonical_for_any_alias_of_a_config() -> None:
    assert [baseline_config(name) for name in BUILTIN_BASELINES] == [None] * len(BUILTIN_BASELINES)
    assert {baseline_config(name) for name in ("q201", "Q-201", Q201)} == {Q201}
    with pytest.raises(ValueError, match=r"'lab11' is neither a built-in baseline \(plan, lab10, ired_published\)"):
        baseline_config("lab11")


# --- paired tests by seed, held-out error, the default baseline, failed runs -------------------------

# per-seed values of two configs whose seeds share a component (initial weights, data stream)
SEEDS = [0, 1, 2, 3, 4, 5, 6]
SHARED = np.array([3.0, -1.0, 2.0, -2.0, 0.5, 1.5, -3.0]) * 1e-5
BASE = 0.00970 + SHARED + np.array([1, -2, 1, 0, 2, -1, -1]) * 1e-6
ARM = 0.00965 + SHARED + np.array([-1, 1, 2, -2, 0, 1, -1]) * 1e-6


def test_paired_tests_match_scipy_on_the_seeds_both_sides_have():
    baseline = Baseline.from_values("b", BASE[1:], seeds=SEEDS[1:])  # seed 0 missing on the baseline side
    paired = paired_tests(ARM.tolist(), SEEDS, baseline)
    t_test, wilcoxon = stats.ttest_rel(ARM[1:], BASE[1:]), stats.wilcoxon(ARM[1:], BASE[1:])
    assert paired.n == 6
    assert paired.mean_difference == pytest.approx((ARM[1:] - BASE[1:]).mean(), rel=1e-12)
    assert (paired.t, paired.p) == pytest.approx((t_test.statistic, t_test.pvalue), rel=1e-10)
    assert paired.wilcoxon_p == pytest.approx(wilcoxon.pvalue, rel=1e-10)


def test_pairing_removes_the_shared_seed_component_the_unpaired_test_keeps():
    row = row_of(compare({"arm": ARM}, Baseline.from_values("b", BASE, seeds=SEEDS), seeds={"arm": SEEDS}), "arm")
    assert row.paired_n == 7 and row.paired_p < 1e-4 < row.welch_p


def test_paired_p_values_are_holm_adjusted_as_one_family():
    values = {"arm": ARM, "same": BASE + np.array([1, -1, 2, -2, 1, -1, 0]) * 1e-7}
    comparison = compare(values, Baseline.from_values("b", BASE, seeds=SEEDS), seeds={name: SEEDS for name in values})
    raw = [row_of(comparison, name).paired_p for name in values]
    assert [row_of(comparison, name).paired_holm_p for name in values] == pytest.approx(holm_adjust(raw))


def test_no_paired_tests_without_seeds_on_both_sides():
    assert paired_tests(ARM.tolist(), SEEDS, Baseline.from_values("b", BASE)).n == 0
    assert paired_tests(ARM.tolist(), SEEDS, builtin_baseline("plan")).p is None
    too_few = paired_tests(ARM[:1].tolist(), SEEDS[:1], Baseline.from_values("b", BASE, seeds=SEEDS))
    assert too_few.p is None and "1 seed(s) in common" in too_few.notes[0]


def test_held_out_standard_error_of_a_mean_over_seeds_is_the_mean_of_theirs():
    row = row_of(compare({"x": X}, builtin_baseline("plan"), held_out_se={"x": [2e-5, 4e-5]}), "x")
    assert row.held_out_se == pytest.approx(3e-5)
    assert row_of(compare({"x": X}, builtin_baseline("plan")), "x").held_out_se is None


def test_default_baseline_is_q100_trained_here_when_it_has_results():
    found = {IN_HOUSE_BASELINE: [0.0097, 0.00971], Q204: [0.0095, 0.0096]}
    chosen = choose_baseline("auto", found, {IN_HOUSE_BASELINE: [0, 1]})
    assert (chosen.name, chosen.kind, chosen.seeds, chosen.origin) == (
        IN_HOUSE_BASELINE,
        "values",
        (0, 1),
        MEASURED_HERE,
    )
    assert choose_baseline("auto", {Q204: [0.0095]}) == BUILTIN_BASELINES["plan"]
    assert choose_baseline("q201", {Q201: [0.0097, 0.0098]}).name == Q201
    with pytest.raises(ValueError, match="q203_dcd_replay has no succeeded val_mse results"):
        choose_baseline("Q-203", found)


def test_success_level_names_its_baseline():
    in_house = Baseline.from_values(IN_HOUSE_BASELINE, Y, seeds=range(7), origin=MEASURED_HERE)
    success = compare({Q204: X}, in_house).success
    assert success.baseline == in_house.describe() and MEASURED_HERE in success.baseline
    assert "measured elsewhere" in compare({Q204: X}, builtin_baseline("plan")).success.baseline


def test_a_config_with_failed_runs_never_counts_towards_success():
    failed = FailedRuns(
        Q204, runs=10, diverged=2, failed=0, first_step=180, last_step=260, reasons=("collapse: loss_denoise",)
    )
    comparison = compare({Q204: X}, builtin_baseline("plan"), failures={Q204: failed})
    row = row_of(comparison, Q204)
    assert row.delta_pct < 0 and row.runs_failed == 2
    assert row.failure == "2 diverged of 10 runs at steps 180–260 (collapse: loss_denoise)"
    assert comparison.success.level == "none" and comparison.success.failed_configs == (Q204,)
    assert compare({Q204: X}, builtin_baseline("plan")).success.level == "moderate"  # without the failures


def test_an_arm_whose_every_run_diverged_is_a_row_with_no_values_and_its_failure():
    failed = FailedRuns(Q202, runs=5, diverged=5, failed=0, first_step=250, last_step=250, reasons=())
    row = row_of(compare({Q202: []}, builtin_baseline("plan"), failures={Q202: failed}), Q202)
    assert (row.n, row.mean, row.failure) == (0, None, "5 diverged of 5 runs at step 250")
