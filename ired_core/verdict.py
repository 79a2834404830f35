"""The plan's verdict (SPEC §4, the researcher's plan): its configs and ablation steps, the built-in
baselines, and the success level, on top of the general statistics of `ired_core.stats`.

`compare` is the entry point: every config's row against the baseline (`stats.config_rows`), the
ablation steps Q-202 vs Q-201, Q-203 vs Q-202, Q-204 vs Q-203 (and the stabilised arms'), and the
plan's success level, for the plan's arms and, when shown, the stabilised ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ired_core.configs import canonical_preset
from ired_core.failures import FailedRuns
from ired_core.stats import (
    Baseline,
    ConfigRow,
    baseline_tests,
    config_rows,
    describe,
    finite_array,
    json_safe,
    percent_change,
)

PLAN_BASELINE_MSE = 0.0096761
"""The plan's baseline: one 100k-step run of IRED without negative mining."""
MEASURED_ELSEWHERE = "measured elsewhere, on another held-out set"
MEASURED_HERE = "measured here, on the same held-out set"
IN_HOUSE_BASELINE = "q100_denoise_only"
"""The plan's 'IRED without negative mining', trained here: the default baseline when it has results."""
AUTO_BASELINE = "auto"
"""The baseline name that picks IN_HOUSE_BASELINE when it has results, else the plan's number."""
SuccessName = Literal["none", "minimum", "moderate", "maximum"]

Q201, Q202, Q203, Q204 = "q201_dcd_baseline", "q202_dcd_cdloss", "q203_dcd_replay", "q204_dcd_full"
PLAN_CONFIGS = (Q201, Q202, Q203, Q204)
"""The plan's four ablation configs, by canonical preset stem (callers resolve aliases first)."""
Q202S, Q203S, Q204S = "q202s_cd_stable", "q203s_replay_stable", "q204s_full_stable"
STABILISED_CONFIGS = (Q201, Q202S, Q203S, Q204S)
"""The plan's ablation with Q-202…Q-204 replaced by their stabilised presets (docs/stability.md)."""

ABLATION_PAIRS = (
    (Q202, Q201, "CD loss + Langevin"),
    (Q203, Q202, "replay buffer"),
    (Q204, Q203, "residual filter + energy schedule"),
    (Q202S, Q201, "stabilised CD + Langevin"),
    (Q203S, Q202S, "replay buffer (stabilised)"),
    (Q204S, Q203S, "residual filter + energy schedule (stabilised)"),
)
"""(config, reference, component the config adds on top of the reference)."""

MODERATE_GAIN_PCT = 1.0
MAXIMUM_GAIN_PCT = 3.0
PLAN_MAXIMUM_UPPER_PCT = 5.0

BUILTIN_BASELINES: Mapping[str, Baseline] = MappingProxyType(
    {
        "plan": Baseline.constant("plan", PLAN_BASELINE_MSE, origin=MEASURED_ELSEWHERE),
        "lab10": Baseline.summary("lab10", 0.00969245, 0.0000227, 10, origin=MEASURED_ELSEWHERE),
        "ired_published": Baseline.summary("ired_published", 0.00977702, 0.0000245, 10, origin=MEASURED_ELSEWHERE),
    }
)
"""SPEC §4's references: the plan's number, the lab's 10-seed rerun, the published IRED setting."""


def baseline_config(name: str) -> str | None:
    """None for a built-in baseline, else the canonical stem of the config `name` (any alias) names;
    ValueError when it is neither."""
    if name in BUILTIN_BASELINES:
        return None
    try:
        return canonical_preset(name)
    except ValueError:
        builtin = ", ".join(BUILTIN_BASELINES)
        raise ValueError(f"{name!r} is neither a built-in baseline ({builtin}) nor a config such as q201") from None


def choose_baseline(
    name: str,
    values: Mapping[str, Sequence[float]],
    seeds: Mapping[str, Sequence[int]] | None = None,
    metric: str = "val_mse",
) -> Baseline:
    """The baseline `name` names among results grouped by config (or setting label):

    `auto` → the in-house q100 runs when `values` has them, else the plan's number; a built-in name →
    that constant or summary; a config (any alias) or a group label → its values, paired by `seeds`.
    ValueError when the name is unknown or its config has no values.
    """
    if name == AUTO_BASELINE:
        name = IN_HOUSE_BASELINE if values.get(IN_HOUSE_BASELINE) else "plan"
    if name in BUILTIN_BASELINES:
        return BUILTIN_BASELINES[name]
    config = name if name in values else baseline_config(name)
    if not values.get(config):
        raise ValueError(f"config {config} has no succeeded {metric} results")
    return Baseline.from_values(config, values[config], (seeds or {}).get(config), origin=MEASURED_HERE)


def builtin_baseline(name: str) -> Baseline:
    """The named built-in baseline, or ValueError listing the valid names."""
    try:
        return BUILTIN_BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; built-in: {', '.join(BUILTIN_BASELINES)}") from None


@dataclass(frozen=True)
class AblationStep:
    """What one component adds: `config` (with it) against `reference` (without it)."""

    config: str
    reference: str
    component: str
    delta_mean: float
    delta_pct: float | None
    welch_p: float | None
    hedges_g: float | None
    notes: tuple[str, ...]


def _has_values(samples: Mapping[str, np.ndarray], name: str) -> bool:
    return name in samples and samples[name].size > 0


def ablation_steps(samples: Mapping[str, np.ndarray], alpha: float = 0.05) -> tuple[AblationStep, ...]:
    """Q-202 vs Q-201, Q-203 vs Q-202, Q-204 vs Q-203 for every pair whose both sides have values.

    Δ = x̄_config − x̄_reference, Δ% relative to the reference mean, Welch p and Hedges g as above.
    """
    steps = []
    for config, reference, component in ABLATION_PAIRS:
        if not (_has_values(samples, config) and _has_values(samples, reference)):
            continue
        values, desc = samples[config], describe(samples[config], alpha)
        reference_baseline = Baseline.from_values(reference, samples[reference])
        tests = baseline_tests(values, desc, reference_baseline)
        delta = desc.mean - reference_baseline.mean
        steps.append(
            AblationStep(
                config=config,
                reference=reference,
                component=component,
                delta_mean=delta,
                delta_pct=percent_change(delta, reference_baseline.mean),
                welch_p=tests.welch_p,
                hedges_g=tests.hedges_g,
                notes=tests.notes,
            )
        )
    return tuple(steps)


@dataclass(frozen=True)
class SuccessLevel:
    """The plan's success level, from point estimates (`level`) and from significant evidence only."""

    level: SuccessName
    significant: bool
    significant_level: SuccessName
    q204_better_pct: float | None
    notes: tuple[str, ...]
    baseline: str = ""  # the baseline the level was measured against, as `Baseline.describe` says it
    failed_configs: tuple[str, ...] = ()  # plan configs with failed runs: they count as no improvement
    arms: tuple[str, ...] = PLAN_CONFIGS  # the four configs judged: the originals, or the stabilised arms


def _improves(row: ConfigRow, alpha: float | None) -> bool:
    """Mean below the baseline (Δ% < 0), no failed run, and Holm p < alpha when `alpha` is given."""
    better = row.delta_pct is not None and row.delta_pct < 0 and row.runs_failed == 0
    return better and (alpha is None or (row.holm_p is not None and row.holm_p < alpha))


def _level(rows: Sequence[ConfigRow], full: str, alpha: float | None) -> SuccessName:
    """The highest level whose rule holds (see `success_level`); `full` is the arm in Q-204's place."""
    q204 = next((r for r in rows if r.name == full and _improves(r, alpha)), None)
    if q204 is not None and -q204.delta_pct >= MAXIMUM_GAIN_PCT:
        return "maximum"
    if q204 is not None and -q204.delta_pct >= MODERATE_GAIN_PCT:
        return "moderate"
    return "minimum" if any(_improves(r, alpha) for r in rows) else "none"


def success_level(
    rows: Sequence[ConfigRow],
    alpha: float = 0.05,
    baseline: Baseline | None = None,
    arms: Sequence[str] = PLAN_CONFIGS,
) -> SuccessLevel:
    """The plan's success criteria, measured against the comparison's baseline.

    Only the four `arms` count (the plan's Q-201…Q-204, or STABILISED_CONFIGS, whose last arm then
    stands in Q-204's place), never the baseline's own row, and never a config with failed (diverged or
    errored) runs: each of those is named in `failed_configs` and in a note.
    better% = −Δ% = 100·(b̄ − x̄)/b̄.

    - "maximum":  Q-204 is ≥ 3% better. The plan says 3–5%; above 5% is still "maximum", with a note
      to check that the baseline matches the setting.
    - "moderate": Q-204 is ≥ 1% and < 3% better.
    - "minimum":  some plan config's mean is below the baseline mean (includes Q-204 < 1% better).
    - "none":     otherwise.

    `level` uses point estimates only. `significant_level` applies the same rules counting a config
    only when its Holm-adjusted p < alpha (H0: equal means, two-sided; the 1% / 3% thresholds apply to
    the point estimate). `significant` is True when `level` is not "none" and equals `significant_level`.
    """
    full = arms[-1]
    label = {Q204: "Q-204", Q204S: "Q-204s"}.get(full, full)
    plan_rows = [r for r in rows if r.name in arms and not r.is_baseline]
    level, significant_level = _level(plan_rows, full, None), _level(plan_rows, full, alpha)
    q204 = next((r for r in plan_rows if r.name == full), None)
    better_pct = None if q204 is None or q204.delta_pct is None else -q204.delta_pct
    notes = []
    if q204 is None or q204.mean is None:
        notes.append(f"{label} is absent, empty or the baseline itself: moderate and maximum cannot be assessed")
    if better_pct is not None and better_pct > PLAN_MAXIMUM_UPPER_PCT:
        notes.append(f"{label} is {better_pct:.2f}% better, above the plan's 3–5%: check the baseline setting")
    failed = [r for r in plan_rows if r.runs_failed]
    notes += [f"{r.name} has failed runs ({r.runs_failed}): it counts as no improvement" for r in failed]
    if baseline is not None and baseline.origin == MEASURED_ELSEWHERE:
        notes.append(
            f"the baseline was {MEASURED_ELSEWHERE}: held-out-set differences (0.35% between two 4,096 "
            "sets at rank 20) add to Δ; train the baseline here (q100, same tag) for a fair comparison"
        )
    return SuccessLevel(
        level=level,
        significant=level != "none" and level == significant_level,
        significant_level=significant_level,
        q204_better_pct=better_pct,
        notes=tuple(notes),
        baseline=baseline.describe() if baseline is not None else "",
        failed_configs=tuple(r.name for r in failed),
        arms=tuple(arms),
    )


@dataclass(frozen=True)
class Comparison:
    """Every config against one baseline, the ablation steps and the plan's success level."""

    metric: str
    alpha: float
    baseline: Baseline
    rows: tuple[ConfigRow, ...]
    ablation: tuple[AblationStep, ...]
    success: SuccessLevel
    notes: tuple[str, ...]
    stabilised_success: SuccessLevel | None = None  # the same criteria for STABILISED_CONFIGS, when any is shown

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN and ±inf become None, tuples become lists)."""
        return json_safe(self)


def _baseline_notes(baseline: Baseline) -> tuple[str, ...]:
    """What the columns mean for this kind of baseline."""
    if baseline.kind == "constant":
        return (
            "constant baseline: the Welch columns hold the one-sample t-test (Welch's test with a "
            "zero-variance baseline); Student and Mann-Whitney need a sampled baseline",
        )
    if baseline.kind == "summary":
        return (
            "summary baseline: t-tests from summary statistics; Mann-Whitney needs raw values; "
            "the Δ% interval resamples the configs and holds the baseline mean fixed",
        )
    return ()


def compare(
    values: Mapping[str, Sequence[float]],
    baseline: Baseline,
    *,
    metric: str = "val_mse",
    seeds: Mapping[str, Sequence[int]] | None = None,
    held_out_se: Mapping[str, Sequence[float]] | None = None,
    failures: Mapping[str, FailedRuns] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare each config's values of `metric` (lower is better) against `baseline`: its row
    (`stats.config_rows`, whose arguments these are), then the ablation steps and the success level.

    Keys of `values` are config names; the plan's configs must be given by canonical preset stem
    (`q204_dcd_full`) for the ablation and the success level to find them.
    """
    rows = config_rows(
        values,
        baseline,
        seeds=seeds,
        held_out_se=held_out_se,
        failures=failures,
        alpha=alpha,
        n_resamples=n_resamples,
        seed=seed,
    )
    return Comparison(
        metric=metric,
        alpha=alpha,
        baseline=baseline,
        rows=tuple(rows),
        ablation=ablation_steps({name: finite_array(name, v) for name, v in values.items()}, alpha),
        success=success_level(rows, alpha, baseline),
        notes=_baseline_notes(baseline),
        stabilised_success=(
            success_level(rows, alpha, baseline, STABILISED_CONFIGS)
            if any(row.name in STABILISED_CONFIGS[1:] for row in rows)
            else None
        ),
    )
