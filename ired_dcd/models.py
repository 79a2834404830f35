"""SQLAlchemy models: users, sweeps, jobs (one per submission), runs (one per seed), metrics, artifacts.

States are stored as short strings and changed only through `ired_dcd.states`. Times are UTC and
come back timezone-aware from every database. JSON columns are JSONB on Postgres.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ired_dcd.states import State


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use ired_dcd.models.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[int]: JSONType,
    }


class User(Base):
    """A researcher; jobs belong to a user. Tokens are stored only as a hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    token_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    token_issued_at: Mapped[datetime | None] = mapped_column(comment="when the current token was issued")
    revoked_at: Mapped[datetime | None] = mapped_column(comment="when the last token was revoked")
    gpu_hours_quota: Mapped[float | None] = mapped_column(
        comment="GPU-hours of work queued or training at once; NULL: the server's default"
    )
    queued_jobs_quota: Mapped[int | None] = mapped_column(
        comment="jobs queued or running at once; NULL: the server's default"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="owner")


class Job(Base):
    """One submission: a preset with overrides, resolved and hashed, over a list of seeds."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    preset: Mapped[str] = mapped_column(String(64), index=True)
    overrides: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]] = mapped_column(comment="the resolved TrainConfig")
    config_hash: Mapped[str] = mapped_column(String(32), index=True)
    seeds: Mapped[list[int]]
    executor: Mapped[str] = mapped_column(String(16))
    executor_ref: Mapped[str | None] = mapped_column(String(128), comment="e.g. the SLURM job id")
    executor_options: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, comment="per-job executor settings, e.g. SLURM overrides"
    )
    priority: Mapped[int] = mapped_column(default=0)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    sweep_id: Mapped[int | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="SET NULL"), index=True, comment="the sweep this job is a grid point of"
    )
    state: Mapped[str] = mapped_column(String(16), default=State.QUEUED, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    owner: Mapped[User] = relationship(back_populates="jobs", lazy="joined")
    sweep: Mapped[Sweep | None] = relationship(back_populates="jobs")
    runs: Mapped[list[Run]] = relationship(
        back_populates="job", order_by="Run.seed", cascade="all, delete-orphan", passive_deletes=True
    )
    tag_rows: Mapped[list[JobTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin", order_by="JobTag.tag"
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]


class Sweep(Base):
    """A grid over settings of one preset: one job per grid point, every job over the same seeds."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    preset: Mapped[str] = mapped_column(String(64))
    overrides: Mapped[dict[str, Any]] = mapped_column(comment="overrides shared by every grid point")
    grid: Mapped[dict[str, Any]] = mapped_column(comment="field → the values it takes, in the order given")
    seeds: Mapped[list[int]]
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship(lazy="joined")
    jobs: Mapped[list[Job]] = relationship(back_populates="sweep", order_by="Job.id")


class JobTag(Base):
    """A free-form label on a job (`pilot`, `ablation-v2`); filterable."""

    __tablename__ = "job_tags"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


def lease_live(lease_expires_at: datetime | None, now: datetime) -> bool:
    """The one liveness rule of a run's lease: its expiry lies ahead. A released run has no expiry, and a
    submission intent (SLURM) names an owner without one: neither is held."""
    return lease_expires_at is not None and lease_expires_at > now


class Run(Base):
    """One seed of a job: its progress, lease, checkpoint and final metrics."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("job_id", "seed"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seed: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), default=State.QUEUED, index=True)
    step: Mapped[int] = mapped_column(default=0, comment="last step reported by the trainer")
    total_steps: Mapped[int]
    attempts: Mapped[int] = mapped_column(default=0, comment="deliveries claimed by a worker")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    task_id: Mapped[str | None] = mapped_column(String(64), index=True, comment="broker task last sent for the run")
    dispatched_at: Mapped[datetime | None] = mapped_column(comment="when it was sent; NULL: in the database only")
    lease_owner: Mapped[str | None] = mapped_column(String(255), comment="worker holding the run")
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    checkpoint_path: Mapped[str | None] = mapped_column(String(512), comment="relative to artifacts dir")
    resume_step: Mapped[int | None] = mapped_column(comment="step the last attempt resumed from")
    final_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    divergence: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, comment="why the run diverged: rule, diagnostic, value, step"
    )
    error: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(128))
    precision: Mapped[str | None] = mapped_column(String(16))
    code_version: Mapped[str | None] = mapped_column(String(64))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    train_seconds: Mapped[float] = mapped_column(default=0.0, comment="wall time over all attempts")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    job: Mapped[Job] = relationship(back_populates="runs")

    def lease_live(self, now: datetime) -> bool:
        """A worker (or a SLURM collector) holds the run under a lease that has not expired at `now`."""
        return lease_live(self.lease_expires_at, now)


class Metric(Base):
    """One value of a run's learning curve; (run, name, step) is the key, so writes are upserts."""

    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[float | None] = mapped_column(comment="NULL stands for a non-finite value")


class Artifact(Base):
    """A file a job produced (checkpoints), stored under the artifacts dir and served by id."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(512), comment="relative to the artifacts dir")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportedResult(Base):
    """One run made elsewhere (earlier SLURM runs, another lab's numbers), imported by config and seed.

    `row_key` identifies the run (config, seed, tags), so importing the same row again is a no-op.
    """

    __tablename__ = "imported_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    row_key: Mapped[str] = mapped_column(String(64), unique=True, comment="sha256 of config, seed and tags")
    config: Mapped[str] = mapped_column(String(64), index=True, comment="canonical preset stem")
    seed: Mapped[int]
    tags: Mapped[list[str]] = mapped_column(JSONType, comment="sorted, unique")
    metrics: Mapped[dict[str, Any]] = mapped_column(comment="metric name → final value")
    source: Mapped[str | None] = mapped_column(String(255), comment="where the rows came from, e.g. a file name")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship(lazy="joined")
