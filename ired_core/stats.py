"""Statistics of a metric (lower is better, e.g. `val_mse`) per config against a baseline.

Sign convention everywhere: Δ = mean_config − mean_baseline, Δ% = 100·Δ / mean_baseline, so a
**negative** Δ% is an improvement (lower MSE); Hedges g has the same sign as Δ. "x% better" means
−Δ% = x.

A baseline is one of three kinds (`Baseline`):

- `constant` — a single number with no spread (the plan's 0.0096761). Each config is tested with the
  one-sample t-test against it, reported in the Welch columns: it is Welch's test in the limit of a
  zero-variance baseline (s_b → 0 gives t = (m − c)/(s/√n) and Satterthwaite df = n − 1). Student's
  pooled test and Mann-Whitney need a sampled baseline and are left empty.
- `summary` — mean, sd (ddof = 1) and n of a baseline whose raw values are not available (SPEC §4):
  Welch and Student come from `scipy.stats.ttest_ind_from_stats`; Mann-Whitney is left empty.
- `values` — raw values (another config or tag): Welch, Student and Mann-Whitney U.

Degenerate inputs answer with None and a note, never with an invented number:

- n < 2 (config or baseline): no sd, no CI, no tests, no effect size, no bootstrap interval.
- zero variance in both groups (all values equal; a constant baseline has zero variance by definition):
  t = Δ/0 is undefined, so the t-tests and Hedges g are None. Mann-Whitney is rank-based and stays
  defined with ties, so it is still reported for raw baselines (identical groups give p = 1).
- identical groups with spread give t = 0 and p = 1, as the formulas say.

Bootstrap intervals are seeded (same inputs → same interval) and vectorised.

Paired tests by seed. Runs with the same seed share their initial weights and their data stream
across configs, so when the baseline is a config with raw values per seed, each config is also
compared seed by seed: the paired t-test (`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank test
(`scipy.stats.wilcoxon`) on the differences x_s − b_s over the seeds both have, Holm-adjusted over the
same family of configs as the unpaired tests. They gain power when the seeds' values are correlated
across configs (docs/dashboard.md says when that holds).

Held-out uncertainty. Each run's val_mse is a mean over the held-out samples; its standard error
sd(per-sample errors)/√N is what another held-out set of the same size could change. For a config's
mean over seeds evaluated on one shared set, the held-out standard error is at most the mean of the
seeds' standard errors (equal when the seeds' errors are perfectly correlated), and that bound is
reported. Against a baseline evaluated on the same set it largely cancels; against a number measured
on another set it does not.

Failed runs (ired_core.failures) are shown per config; `ired_core.verdict`, the plan's judgement on top
of these statistics, never counts a config with failed runs towards the success level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from ired_core.failures import FailedRuns
from ired_core.input_rules import finite_or_none

BaselineKind = Literal["constant", "summary", "values"]


def json_safe(obj: Any) -> Any:
    """Recursively turn dataclasses, tuples and floats into JSON-safe values (NaN/inf → None)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: json_safe(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return finite_or_none(obj)
    return obj


def finite_array(label: str, values: Sequence[float]) -> np.ndarray:
    """`values` as a float64 array; ValueError naming `label` if any value is not a finite number."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{label}: value {array[bad[0]]!r} at position {bad[0]} is not a finite number")
    return array


def _zero_variance(values: np.ndarray) -> bool:
    """True when all values are equal (tested exactly, not via a rounded sd)."""
    return values.size > 0 and values.min() == values.max()


def _sample_sd(values: np.ndarray) -> float | None:
    """s = √(Σ(x − x̄)² / (n − 1)); exactly 0 when all values are equal; None for n < 2."""
    if values.size < 2:
        return None
    return 0.0 if _zero_variance(values) else float(np.std(values, ddof=1))


# ---------------------------------------------------------------------------------------------
# baselines


@dataclass(frozen=True)
class Baseline:
    """What each config is compared against. Build with `constant`, `summary` or `from_values`."""

    name: str
    kind: BaselineKind
    mean: float
    sd: float | None = None
    n: int | None = None
    values: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None  # the seed of each value, when known: enables the paired tests
    origin: str | None = None  # where it was measured, e.g. MEASURED_ELSEWHERE

    @classmethod
    def constant(cls, name: str, value: float, origin: str | None = None) -> Baseline:
        """A single reference number with no spread."""
        return cls(name=name, kind="constant", mean=float(finite_array(name, [value])[0]), origin=origin)

    @classmethod
    def summary(cls, name: str, mean: float, sd: float, n: int, origin: str | None = None) -> Baseline:
        """A reference known only by its mean, sample sd (ddof = 1) and number of runs."""
        mean, sd = (float(v) for v in finite_array(name, [mean, sd]))
        if sd < 0 or n < 1 or int(n) != n:
            raise ValueError(f"{name}: a summary baseline needs sd ≥ 0 and an integer n ≥ 1")
        return cls(name=name, kind="summary", mean=mean, sd=sd, n=int(n), origin=origin)

    @classmethod
    def from_values(
        cls, name: str, values: Sequence[float], seeds: Sequence[int] | None = None, origin: str | None = None
    ) -> Baseline:
        """A reference given by its raw values (another config or tag), with their seeds when known."""
        array = finite_array(name, values)
        if array.size == 0:
            raise ValueError(f"{name}: a baseline needs at least one value")
        if seeds is not None and len(seeds) != array.size:
            raise ValueError(f"{name}: {len(seeds)} seeds for {array.size} values")
        return cls(
            name=name,
            kind="values",
            mean=float(array.mean()),
            sd=_sample_sd(array),
            n=int(array.size),
            values=tuple(float(v) for v in array),
            seeds=None if seeds is None else tuple(int(s) for s in seeds),
            origin=origin,
        )

    def describe(self) -> str:
        """One line naming the baseline, its numbers and where it was measured."""
        where = f", {self.origin}" if self.origin else ""
        if self.kind == "constant":
            return f"{self.name} (constant {self.mean:.8g}{where})"
        sd = "n/a" if self.sd is None else f"{self.sd:.3g}"
        return f"{self.name} ({self.kind}: mean {self.mean:.8g}, sd {sd}, n {self.n}{where})"


# ---------------------------------------------------------------------------------------------
# per-sample description


@dataclass(frozen=True)
class Description:
    """n, mean, sd (ddof = 1), median, min, max and the t confidence interval of the mean."""

    n: int
    mean: float | None
    sd: float | None
    median: float | None
    min: float | None
    max: float | None
    ci_low: float | None
    ci_high: float | None


def describe(values: np.ndarray, alpha: float = 0.05) -> Description:
    """Describe one sample. CI: x̄ ± t_{1−α/2, n−1} · s/√n (None for n < 2)."""
    n = int(values.size)
    if n == 0:
        return Description(n, None, None, None, None, None, None, None)
    mean, sd = float(values.mean()), _sample_sd(values)
    ci_low = ci_high = None
    if sd is not None:
        half_width = stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
        ci_low, ci_high = mean - half_width, mean + half_width
    return Description(
        n=n,
        mean=mean,
        sd=sd,
        median=float(np.median(values)),
        min=float(values.min()),
        max=float(values.max()),
        ci_low=finite_or_none(ci_low),
        ci_high=finite_or_none(ci_high),
    )


# ---------------------------------------------------------------------------------------------
# tests against the baseline


@dataclass(frozen=True)
class BaselineTests:
    """Test statistics of one sample against a baseline; None where a test does not apply."""

    welch_t: float | None = None
    welch_df: float | None = None
    welch_p: float | None = None
    student_t: float | None = None
    student_p: float | None = None
    mannwhitney_u: float | None = None
    mannwhitney_p: float | None = None
    hedges_g: float | None = None
    notes: tuple[str, ...] = ()


def hedges_correction(df: float) -> float:
    """Small-sample bias correction J(df) = 1 − 3 / (4·df − 1) (Hedges 1981, approximation)."""
    return 1.0 - 3.0 / (4.0 * df - 1.0)


def hedges_g(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int) -> float | None:
    """g = J(n1 + n2 − 2) · (m1 − m2) / s_p,  s_p = √(((n1−1)s1² + (n2−1)s2²) / (n1 + n2 − 2)).

    None when the pooled sd is 0 (the effect size is undefined).
    """
    pooled_var = ((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / (n1 + n2 - 2)
    if pooled_var == 0:
        return None
    return hedges_correction(n1 + n2 - 2) * (mean1 - mean2) / math.sqrt(pooled_var)


def hedges_g_one_sample(mean: float, sd: float, n: int, reference: float) -> float | None:
    """g = J(n − 1) · (x̄ − c) / s: the one-sample effect size against a constant c; None if s = 0."""
    if sd == 0:
        return None
    return hedges_correction(n - 1) * (mean - reference) / sd


def welch_df(sd1: float, n1: int, sd2: float, n2: int) -> float:
    """Welch–Satterthwaite df = (v1 + v2)² / (v1²/(n1−1) + v2²/(n2−1)),  v = s²/n."""
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    return (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))


def _too_few(desc: Description, baseline: Baseline) -> str | None:
    """Why tests cannot run for this pair (n < 2 on either side), or None if they can."""
    if desc.n < 2:
        return f"n = {desc.n}: sd, CI and tests need at least 2 values"
    if baseline.kind != "constant" and (baseline.n or 0) < 2:
        return f"baseline n = {baseline.n}: tests need at least 2 baseline values"
    return None


def _tests_vs_constant(values: np.ndarray, desc: Description, reference: float) -> BaselineTests:
    """One-sample t = (x̄ − c) / (s/√n), df = n − 1 (scipy.stats.ttest_1samp)."""
    if desc.sd == 0:
        return BaselineTests(notes=("zero variance (and a constant baseline): the t statistic is undefined",))
    result = stats.ttest_1samp(values, reference)
    return BaselineTests(
        welch_t=finite_or_none(result.statistic),
        welch_df=float(desc.n - 1),
        welch_p=finite_or_none(result.pvalue),
        hedges_g=finite_or_none(hedges_g_one_sample(desc.mean, desc.sd, desc.n, reference)),
    )


def _tests_vs_summary(desc: Description, baseline: Baseline) -> BaselineTests:
    """Welch (unequal variances) and Student (pooled) t from summaries: scipy's ttest_ind_from_stats.

    Welch:   t = Δ / √(s1²/n1 + s2²/n2), Satterthwaite df.
    Student: t = Δ / (s_p·√(1/n1 + 1/n2)), df = n1 + n2 − 2.
    """
    if desc.sd == 0 and baseline.sd == 0:
        return BaselineTests(notes=("zero variance in both groups: the t statistics are undefined",))
    moments = dict(mean1=desc.mean, std1=desc.sd, nobs1=desc.n, mean2=baseline.mean, std2=baseline.sd, nobs2=baseline.n)
    welch = stats.ttest_ind_from_stats(**moments, equal_var=False)
    student = stats.ttest_ind_from_stats(**moments, equal_var=True)
    return BaselineTests(
        welch_t=finite_or_none(welch.statistic),
        welch_df=finite_or_none(welch_df(desc.sd, desc.n, baseline.sd, baseline.n)),
        welch_p=finite_or_none(welch.pvalue),
        student_t=finite_or_none(student.statistic),
        student_p=finite_or_none(student.pvalue),
        hedges_g=finite_or_none(hedges_g(desc.mean, desc.sd, desc.n, baseline.mean, baseline.sd, baseline.n)),
    )


def _tests_vs_values(values: np.ndarray, desc: Description, baseline: Baseline) -> BaselineTests:
    """The summary tests on the baseline's own moments, plus two-sided Mann-Whitney U on raw values."""
    mann_whitney = stats.mannwhitneyu(values, np.asarray(baseline.values), alternative="two-sided")
    return replace(
        _tests_vs_summary(desc, baseline),
        mannwhitney_u=finite_or_none(mann_whitney.statistic),
        mannwhitney_p=finite_or_none(mann_whitney.pvalue),
    )


def baseline_tests(values: np.ndarray, desc: Description, baseline: Baseline) -> BaselineTests:
    """Dispatch on the baseline kind; None-filled with a note when n < 2 on either side."""
    reason = _too_few(desc, baseline)
    if reason is not None:
        return BaselineTests(notes=(reason,))
    if baseline.kind == "constant":
        return _tests_vs_constant(values, desc, baseline.mean)
    if baseline.kind == "summary":
        return _tests_vs_summary(desc, baseline)
    return _tests_vs_values(values, desc, baseline)


@dataclass(frozen=True)
class PairedTests:
    """One sample against a baseline seed by seed; None where the tests do not apply."""

    n: int = 0
    mean_difference: float | None = None
    t: float | None = None
    p: float | None = None
    wilcoxon_p: float | None = None
    notes: tuple[str, ...] = ()


def paired_tests(values: Sequence[float], seeds: Sequence[int], baseline: Baseline) -> PairedTests:
    """Paired t and Wilcoxon signed-rank tests of d_s = x_s − b_s over the seeds both sides have.

    t = d̄ / (s_d/√n), df = n − 1 (scipy.stats.ttest_rel); Wilcoxon two-sided on the d_s
    (scipy.stats.wilcoxon, exact for small n without ties). Needs a baseline with seeds and n ≥ 2 pairs.
    """
    if baseline.seeds is None or baseline.values is None:
        return PairedTests()
    by_seed = dict(zip(baseline.seeds, baseline.values, strict=True))
    pairs = [(x, by_seed[s]) for x, s in zip(values, seeds, strict=True) if s in by_seed]
    if len(pairs) < 2:
        return PairedTests(n=len(pairs), notes=(f"{len(pairs)} seed(s) in common with the baseline: no paired tests",))
    x, b = (np.array(side, dtype=np.float64) for side in zip(*pairs, strict=True))
    differences = x - b
    if _zero_variance(differences):
        note = "the seed-by-seed differences are all equal: the paired tests are undefined"
        return PairedTests(n=len(pairs), mean_difference=float(differences.mean()), notes=(note,))
    t_test = stats.ttest_rel(x, b)
    wilcoxon_p = None
    if np.any(differences != 0):
        wilcoxon_p = finite_or_none(stats.wilcoxon(x, b).pvalue)
    return PairedTests(
        n=len(pairs),
        mean_difference=float(differences.mean()),
        t=finite_or_none(t_test.statistic),
        p=finite_or_none(t_test.pvalue),
        wilcoxon_p=wilcoxon_p,
    )


def held_out_standard_error(per_seed: Sequence[float]) -> float | None:
    """The held-out standard error of a mean over seeds sharing one held-out set: at most the mean of
    the seeds' own standard errors (Minkowski), which is what is returned; None without values."""
    array = np.asarray([v for v in map(finite_or_none, per_seed) if v is not None], dtype=np.float64)
    return float(array.mean()) if array.size else None


# ---------------------------------------------------------------------------------------------
# family-wise correction and bootstrap


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p values; None entries stay None and are not counted in m.

    With the m present p values sorted ascending p_(1) ≤ … ≤ p_(m):
    p̃_(i) = min(1, max_{j ≤ i} (m − j + 1)·p_(j)).
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    p = np.array([p_values[i] for i in present], dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adjusted: list[float | None] = [None] * len(p_values)
    for rank, position in enumerate(order):
        adjusted[present[position]] = float(adjusted_sorted[rank])
    return adjusted


BOOTSTRAP_CHUNK_INDICES = 1 << 20
"""Resample indices drawn at once (8 MiB, plus as many gathered values): the bootstrap's working memory
whatever n is. Below this many indices in all (n·B ≤ 2²⁰, e.g. n ≤ 104 at B = 10,000) one draw makes
them, exactly as an unchunked bootstrap would; numpy's stream continues across the chunks, so the
numbers are the same for every n tried (tests/ired_core/test_stats.py pins it)."""
BOOTSTRAP_EXACT_MAX_N = 10_000
"""Up to this many values the resample means are computed from resamples; above it they are drawn
from their limit N(x̄, σ̂²/n) (σ̂: the plug-in sd, ddof = 0), so that time stays O(n + B) however
many results are stored. The gap between the two is a skewness term γ·(z² − 1)/(6√n) in sd units
(Edgeworth): at n > 10,000 under 0.005·γ, below the Monte-Carlo error of the 2.5% quantile of
10,000 resamples (≈ 0.027) for any skewness |γ| ≤ 5."""


def _bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` resamples with replacement, shape (n_resamples,), in O(chunk) memory."""
    n = values.size
    if n > BOOTSTRAP_EXACT_MAX_N:
        sd = float(np.std(values))  # the resampled population is the sample itself: ddof = 0
        return rng.normal(float(values.mean()), sd / math.sqrt(n), size=n_resamples)
    means = np.empty(n_resamples, dtype=np.float64)
    rows = max(1, BOOTSTRAP_CHUNK_INDICES // n)
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        indices = rng.integers(0, n, size=(stop - start, n))  # (rows, n), never (B, n)
        means[start:stop] = values[indices].mean(axis=1)
    return means


def bootstrap_delta_pct_ci(
    values: np.ndarray, baseline: Baseline, *, alpha: float = 0.05, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of Δ% = 100·(x̄* − b̄*)/b̄*.

    x̄* resamples the config's values; b̄* resamples the baseline's raw values when it has them, else
    it is the baseline mean held fixed (constant or summary baseline). Seeded with `seed`, so the same
    inputs give the same interval. None for fewer than 2 values or a non-finite Δ% (baseline mean 0).
    Memory is O(n + B) and time O(min(n, BOOTSTRAP_EXACT_MAX_N)·B) (see `_bootstrap_means`).
    """
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    config_means = _bootstrap_means(values, n_resamples, rng)
    if baseline.values is None:
        baseline_means = np.full(n_resamples, baseline.mean)
    else:
        baseline_means = _bootstrap_means(np.asarray(baseline.values), n_resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta_pct = 100.0 * (config_means - baseline_means) / baseline_means
    if not np.all(np.isfinite(delta_pct)):
        return None
    low, high = np.quantile(delta_pct, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def percent_change(delta: float, reference: float) -> float | None:
    """Δ% = 100·Δ / reference; None when the reference is 0."""
    return None if reference == 0 else 100.0 * delta / reference


# ---------------------------------------------------------------------------------------------
# rows: every config against the baseline


@dataclass(frozen=True)
class ConfigRow:
    """One config against the baseline. Δ fields are None on the baseline's own row."""

    name: str
    n: int
    mean: float | None
    sd: float | None
    median: float | None
    min: float | None
    max: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float | None
    delta_pct: float | None
    delta_pct_ci_low: float | None
    delta_pct_ci_high: float | None
    welch_t: float | None
    welch_df: float | None
    welch_p: float | None
    student_t: float | None
    student_p: float | None
    mannwhitney_u: float | None
    mannwhitney_p: float | None
    hedges_g: float | None
    holm_p: float | None
    is_baseline: bool
    notes: tuple[str, ...]
    held_out_se: float | None = None
    paired_n: int = 0
    paired_t: float | None = None
    paired_p: float | None = None
    wilcoxon_p: float | None = None
    paired_holm_p: float | None = None
    runs_failed: int = 0
    failure: str | None = None


def _config_row(
    name: str,
    values: np.ndarray,
    baseline: Baseline,
    *,
    seeds: Sequence[int] | None,
    held_out_se: float | None,
    failed: FailedRuns | None,
    alpha: float,
    n_resamples: int,
    seed: int,
) -> ConfigRow:
    """Describe one config and test it against the baseline (Holm p values are filled in by `compare`)."""
    desc = describe(values, alpha)
    is_baseline = baseline.kind == "values" and name == baseline.name
    paired = PairedTests()
    if is_baseline or desc.mean is None:
        tests = BaselineTests(notes=("this is the baseline",) if is_baseline else ("no values",))
        delta = delta_pct = ci = None
    else:
        tests = baseline_tests(values, desc, baseline)
        delta = desc.mean - baseline.mean
        delta_pct = percent_change(delta, baseline.mean)
        ci = bootstrap_delta_pct_ci(values, baseline, alpha=alpha, n_resamples=n_resamples, seed=seed)
        if seeds is not None:
            paired = paired_tests(values.tolist(), seeds, baseline)
    test_fields = {k: v for k, v in asdict(tests).items() if k != "notes"}
    return ConfigRow(
        name=name,
        **asdict(desc),
        delta=delta,
        delta_pct=delta_pct,
        delta_pct_ci_low=None if ci is None else ci[0],
        delta_pct_ci_high=None if ci is None else ci[1],
        **test_fields,
        holm_p=None,
        is_baseline=is_baseline,
        notes=tests.notes + paired.notes + ((f"failed: {failed.describe()}",) if failed else ()),
        held_out_se=held_out_se,
        paired_n=paired.n,
        paired_t=paired.t,
        paired_p=paired.p,
        wilcoxon_p=paired.wilcoxon_p,
        runs_failed=failed.count if failed else 0,
        failure=failed.describe() if failed else None,
    )


def config_rows(
    values: Mapping[str, Sequence[float]],
    baseline: Baseline,
    *,
    seeds: Mapping[str, Sequence[int]] | None = None,
    held_out_se: Mapping[str, Sequence[float]] | None = None,
    failures: Mapping[str, FailedRuns] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> list[ConfigRow]:
    """Each config's values (lower is better) described and tested against `baseline`.

    A config named like a raw-values baseline is that baseline's row: described, not tested. Holm's
    correction runs over the Welch p values of the rows that have one (and over the paired p values).
    Every row's bootstrap uses the same `seed`, so a row does not depend on which other configs are
    compared.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    seeds, held_out_se, failures = seeds or {}, held_out_se or {}, failures or {}
    rows = [
        _config_row(
            name,
            finite_array(name, sample),
            baseline,
            seeds=seeds.get(name),
            held_out_se=held_out_standard_error(held_out_se.get(name, ())),
            failed=failures.get(name),
            alpha=alpha,
            n_resamples=n_resamples,
            seed=seed,
        )
        for name, sample in values.items()
    ]
    holm = holm_adjust([row.welch_p for row in rows])
    paired_holm = holm_adjust([row.paired_p for row in rows])
    return [
        replace(row, holm_p=p, paired_holm_p=paired_p) for row, p, paired_p in zip(rows, holm, paired_holm, strict=True)
    ]
