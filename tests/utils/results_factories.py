"""Seeded results for the results API, the dashboard and the CLI: finished jobs with learning curves.

Jobs are stored the way the service stores them (resolved config, hash, one run per seed) and their runs
are moved queued → running → succeeded through the state machine; nothing is queued for a worker.
Every test seeds under its own tag, so tests sharing the session's Postgres never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ired_core.configs import canonical_preset, config_hash, resolve_config
from ired_dcd.models import ImportedResult, Job, JobTag, Run, Sweep
from ired_dcd.services.runs import set_state, upsert_metrics
from ired_dcd.services.users import get_or_create_user
from ired_dcd.states import State

CURVE_STEPS = (100, 200, 300, 400)
PLAN_MEANS = {"q201": 0.00975, "q202": 0.00966, "q203": 0.00958, "q204": 0.00940}
"""Means that make Q-204 ≈ 2.9% better than the plan's 0.0096761 (success level "moderate")."""


def seeded_values(mean: float, seeds: Sequence[int], *, sd: float = 2e-5, seed: int = 0) -> dict[int, float]:
    """Reproducible values around `mean`, one per seed."""
    noise = np.random.default_rng(seed).standard_normal(len(seeds))
    return {s: float(mean + sd * z) for s, z in zip(seeds, noise, strict=True)}


def add_job(
    session: Session,
    config: str,
    values: Mapping[int, float | None],
    *,
    tags: Sequence[str] = (),
    state: State = State.SUCCEEDED,
    curves: bool = True,
    overrides: Mapping[str, object] | None = None,
    divergence: Mapping[str, object] | None = None,
) -> Job:
    """A job over `values`' seeds whose runs ended in `state` with final val_mse = the value.

    With `curves`, every run gets learning curves at CURVE_STEPS: val_mse falling to its final value and
    the energy diagnostics. A RUNNING state leaves the runs half way (step 200, no final metrics). A
    DIVERGED state records `divergence` (the trainer's record) and no final metrics, at its step.
    """
    preset = canonical_preset(config)
    cfg = resolve_config(preset, {"train_steps": CURVE_STEPS[-1], **(overrides or {})})
    job = Job(
        preset=preset,
        overrides=dict(overrides or {}),
        config=cfg.model_dump(),
        config_hash=config_hash(cfg),
        seeds=sorted(values),
        executor="celery",
        owner=get_or_create_user(session=session, name="local"),
        tag_rows=[JobTag(tag=tag) for tag in tags],
        runs=[Run(seed=seed, total_steps=cfg.train_steps) for seed in sorted(values)],
    )
    session.add(job)
    session.flush()
    for run in job.runs:
        set_state(run, State.RUNNING)
        final = values[run.seed]
        steps = CURVE_STEPS if state is not State.RUNNING else CURVE_STEPS[:2]
        if curves:
            upsert_metrics(session=session, rows=_curve_rows(run, steps, final or 0.01))
        run.step = steps[-1]
        if state is State.DIVERGED:
            run.step = int(divergence["step"]) if divergence else run.step
            run.divergence = dict(divergence) if divergence else None
            run.final_metrics = {}
            set_state(run, state, error="diverged")
        elif state is not State.RUNNING:
            run.final_metrics = {"val_mse": final, "val_mse_ood": None if final is None else 20 * final}
            set_state(run, state)
    session.commit()
    return job


def _curve_rows(run: Run, steps: Sequence[int], final: float) -> list[tuple[int, int, str, float]]:
    """val_mse falling from 1 to `final`, a loss and energy diagnostics that move with the step."""
    rows = []
    scale = (final / 0.0095) ** 20  # configs with different finals get visibly different curves
    for k, step in enumerate(steps, start=1):
        fraction = k / len(CURVE_STEPS)
        values = {
            "val_mse": final**fraction,
            "loss": scale / (1 + 5 * fraction) + 0.01 * run.seed,
            "energy_pos": -2.0 * fraction * scale,
            "energy_neg": -1.0 * fraction * scale,
            "energy_gap": 1.0 * fraction * scale,
            "grad_energy_norm": 3.0 - fraction * scale,
        }
        rows += [(run.id, step, name, value) for name, value in values.items()]
    return rows


def seed_plan_study(session: Session, tag: str, seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> dict[str, dict[int, float]]:
    """The four plan configs, succeeded over `seeds`, tagged `tag`; returns config stem → seed → value."""
    out = {}
    for i, (config, mean) in enumerate(PLAN_MEANS.items()):
        values = seeded_values(mean, seeds, seed=i)
        add_job(session, config, values, tags=[tag])
        out[canonical_preset(config)] = values
    return out


def add_sweep(
    session: Session, config: str, points: Mapping[tuple[tuple[str, object], ...], dict[int, float]]
) -> Sweep:
    """A sweep of `config` whose points (field/value pairs → seed → val_mse) succeeded, each a job tagged
    `sweep-N`, stored as the service stores them; the grid is every field's values in first-seen order."""
    grid: dict[str, list[object]] = {}
    for point in points:
        for name, value in point:
            if value not in grid.setdefault(name, []):
                grid[name].append(value)
    seeds = sorted({seed for values in points.values() for seed in values})
    owner = get_or_create_user(session=session, name="local")
    sweep = Sweep(preset=canonical_preset(config), overrides={}, grid=grid, seeds=seeds, owner=owner)
    session.add(sweep)
    session.flush()
    for point, values in points.items():
        job = add_job(session, config, values, tags=[f"sweep-{sweep.id}"], overrides=dict(point))
        job.sweep_id = sweep.id
    session.commit()
    return sweep


def count_imported(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ImportedResult)) or 0


def unique_tag() -> str:
    """A tag of a test's own, so seeded results never mix with another test's."""
    return f"t-{uuid.uuid4().hex[:10]}"
