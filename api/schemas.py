"""Request and response bodies: Base (shared fields) → Create (input) → Public (output)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasPath, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from ired_core.input_rules import MAX_SEEDS, MAX_TAGS, TAG_MAX_LENGTH, TAG_PATTERN
from ired_dcd.states import State

Tag = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_MAX_LENGTH, pattern=TAG_PATTERN)
]
"""The one tag rule (`ired_core.input_rules`), also in the OpenAPI schema; the service checks it again."""

JOB_EXAMPLE = {"config": "q204", "seeds": [0, 1, 2], "overrides": {"train_steps": 10000}, "tags": ["pilot"]}


class SeedRange(BaseModel):
    """`{"start": 0, "count": 10}` → seeds 0…9."""

    model_config = ConfigDict(extra="forbid")

    start: int = Field(0, ge=0)
    count: int = Field(ge=0, le=MAX_SEEDS)


def expand_seed_range(value: Any) -> Any:
    """Seeds given as `{"start", "count"}` become the list they stand for; lists pass through."""
    if not isinstance(value, dict):
        return value
    try:
        seeds = SeedRange.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(f"{'.'.join(map(str, error['loc'])) or 'range'}: {error['msg']}") from None
    return list(range(seeds.start, seeds.start + seeds.count))


class JobBase(BaseModel):
    priority: int = Field(5, ge=0, le=9, description="0–9, higher runs first")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    executor: str = Field("celery", description="where the runs train: celery (GPU workers) or slurm (a cluster)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields to change")


class JobCreate(JobBase):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [JOB_EXAMPLE]})

    config: str = Field(min_length=1, max_length=64, description="preset: q204, Q-204 or q204_dcd_full")
    seeds: Annotated[list[int], BeforeValidator(expand_seed_range)] = Field(
        description='a list of seeds, or {"start": s, "count": n} for s…s+n-1'
    )
    slurm: dict[str, Any] | None = Field(
        None,
        description="executor slurm only: overrides of the server's SLURM settings (partition, account, qos, "
        "time_minutes, gpus_per_task, cpus_per_task, mem_gb, extra_sbatch_lines, array_mode, max_parallel)",
    )


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int
    seed: int
    state: State
    step: int
    total_steps: int
    attempts: int
    cancel_requested: bool
    resume_step: int | None
    final_metrics: dict[str, float | None] | None
    error: str | None
    divergence: dict[str, Any] | None = Field(
        description="why the run diverged: step, rule, diagnostic, value, threshold (docs/stability.md)"
    )
    worker: str | None = Field(validation_alias="lease_owner")
    heartbeat_at: datetime | None
    device: str | None
    precision: str | None
    code_version: str | None
    torch_version: str | None
    train_seconds: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobSummaryBase(JobBase):
    """What a job list shows of each job: no resolved config, no runs (GET /jobs/{id} has them)."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: int
    config: str = Field(validation_alias="preset", description="canonical preset name")
    config_hash: str
    seeds: list[int]
    owner: str = Field(validation_alias=AliasPath("owner", "name"))
    sweep_id: int | None = Field(description="the sweep this job is a grid point of")
    state: State
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobSummary(JobSummaryBase):
    runs: dict[State, int] = Field(description="the job's runs counted per state")
    steps_done: int = Field(description="steps trained, summed over the job's runs")
    steps_total: int = Field(description="steps to train, summed over the job's runs")


class JobPublic(JobSummaryBase):
    resolved_config: dict[str, Any] = Field(validation_alias="config")
    slurm: dict[str, Any] | None = Field(validation_alias="executor_options", description="the job's SLURM overrides")
    executor_ref: str | None = Field(description="the executor's id of the job: SLURM array job of the last submission")
    runs: list[RunPublic]


class JobsPublic(BaseModel):
    data: list[JobSummary]
    count: int = Field(description="jobs matching the filters, over all pages")


class JobsDetailPublic(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="jobs matching the filters, over all pages")


SWEEP_EXAMPLE = {
    "config": "q202",
    "grid": {"energy_reg_weight": [0.1, 1, 10], "langevin_sigma_mult": [0.5, 1]},
    "seeds": {"start": 0, "count": 3},
    "overrides": {"train_steps": 10000},
}


class SweepCreate(JobCreate):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SWEEP_EXAMPLE]})

    grid: dict[str, list[Any]] = Field(
        description="config field → the values it takes; one job per combination, each over every seed"
    )


class SweepPoint(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    values: dict[str, Any] = Field(description="the swept fields' values at this point")
    job_id: int
    config_hash: str
    state: State
    setting: str | None = Field(description="the point's row in the comparison (its setting's label)")


class SweepSummary(BaseModel):
    id: int
    config: str = Field(description="canonical preset name")
    overrides: dict[str, Any] = Field(description="overrides shared by every point")
    grid: dict[str, list[Any]]
    seeds: list[int]
    owner: str
    tag: str = Field(description="the tag every job of the sweep carries")
    created_at: datetime
    state: State | None = Field(description="from all its runs, as a job's; null once its jobs were deleted")
    runs: dict[State, int] = Field(description="the sweep's runs counted per state")
    steps_done: int
    steps_total: int


class SweepsPublic(BaseModel):
    data: list[SweepSummary]
    count: int = Field(description="sweeps matching the filters, over all pages")


class SweepPublic(SweepSummary):
    points: list[SweepPoint]
    comparison: dict[str, Any] = Field(
        description="the points compared, one row per setting (GET /results/compare?group_by=setting&tag=sweep-N)"
    )


class MetricSeries(BaseModel):
    name: str
    steps: list[int]
    values: list[float | None] = Field(description="null where the value was not finite")


class RunMetricsPublic(BaseModel):
    run_id: int
    series: list[MetricSeries]


class PresetPublic(BaseModel):
    name: str
    short: str = Field(description="short alias, e.g. q204")
    description: str
    differences: dict[str, Any] = Field(description="fields where the preset differs from the defaults")
    config: dict[str, Any] = Field(description="the resolved config")


class ConfigsPublic(BaseModel):
    presets: list[PresetPublic]
    fields: dict[str, Any] = Field(description="JSON schema of every TrainConfig field (overridable)")
    max_seeds: int


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    mode: Literal["embedded", "lab-server"]
    database: str
    broker: str
    workers: int | None = Field(description="workers answering a ping; null when the broker is down")


class ArtifactPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="download it with GET /artifacts/{id}")
    job_id: int
    run_id: int | None = Field(description="the run whose seed it holds alone; null for an ensemble's checkpoint")
    kind: str
    size_bytes: int | None
    created_at: datetime
