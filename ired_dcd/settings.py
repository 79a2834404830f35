"""One settings object for the API, the workers, the CLI and Alembic.

Read from the environment: `DATABASE_URL` and `BROKER_URL` (also accepted with the `IRED_` prefix),
everything else as `IRED_<FIELD>` (nested fields as `IRED_SLURM__TIME_MINUTES`). With neither URL set
the service runs in the embedded default: a SQLite file and a filesystem queue under `data_dir`, and
`ired-dcd serve` starts a local worker.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ired_core.configs import Engine
from ired_dcd.slurm.settings import SlurmSettings


class Settings(BaseSettings):
    """Service settings; every field can be set as `IRED_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="IRED_", env_nested_delimiter="__", extra="ignore")

    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "IRED_DATABASE_URL"),
        description="SQLAlchemy URL (postgresql+psycopg://…); unset → SQLite under data_dir",
    )
    broker_url: str | None = Field(
        None,
        validation_alias=AliasChoices("BROKER_URL", "IRED_BROKER_URL", "CELERY_BROKER_URL"),
        description="Celery broker (redis://…); unset → embedded filesystem queue under data_dir",
    )
    data_dir: Path = Field(Path("./ired-dcd-data"), description="SQLite file, embedded queue, artifacts")
    artifacts_dir: Path | None = Field(None, description="checkpoints; default data_dir/artifacts")

    # HTTP
    host: str = Field("127.0.0.1", description="bind address of `ired-dcd serve`")
    port: int = Field(8000, ge=1, le=65535)
    default_user: str = Field("local", description="owner of jobs submitted without authentication")
    auth_required: bool | None = Field(
        None, description="require API tokens; default: yes when a database or broker is configured (lab server)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins whose pages may call the API (none by default)"
    )
    max_request_bytes: int = Field(1 << 20, ge=1024, description="largest request body (413 above); imports: 16 MiB")
    read_cache: bool = Field(
        True, description="answer job lists, comparisons and token checks from memory until Postgres notifies a change"
    )

    # queue and workers
    queue: str = Field("ired", description="Celery queue the API sends training tasks to")
    split_seeds: bool = Field(False, description="one task per seed instead of one ensemble task per job")
    device: str = Field("auto", description="auto (CUDA when visible, else CPU), cpu, cuda, cuda:N")
    engine: Engine = Field(
        "reuse", description="how workers compute a step: reuse, compiled (torch.compile) or eager (the reference)"
    )
    max_attempts: int = Field(3, ge=1, description="deliveries of a run before it is failed (worker lost)")
    lease_seconds: float = Field(60.0, gt=0, description="a run whose heartbeat is older is taken as dead")
    heartbeat_seconds: float = Field(2.0, gt=0, description="lease renewal and cancellation poll interval")
    visibility_timeout: int = Field(
        7 * 24 * 3600, ge=1, description="seconds before Redis re-delivers an unacknowledged task"
    )

    # fair use and recovery (docs/service.md, "Fair use")
    user_task_limit: int = Field(4, ge=1, description="tasks per user handed to the broker or training at once")
    dispatch_backlog: int = Field(2, ge=1, description="tasks waiting in the broker for a free worker, all users")
    quota_gpu_hours: float = Field(
        100.0, ge=0, description="default per-user limit on estimated GPU-hours queued or training (admins: none)"
    )
    quota_queued_jobs: int = Field(50, ge=0, description="default per-user limit on jobs queued or running at once")
    reconcile_seconds: float = Field(
        30.0, ge=0, description="reconciler interval in the API server; 0: no reconciler (nor at worker start)"
    )
    db_retry_seconds: float = Field(300.0, gt=0, description="how long a worker retries database writes")
    health_seconds: float = Field(
        5.0, gt=0, description="how often the API checks database, broker and workers for GET /health"
    )

    # SLURM (executor "slurm"): the server's defaults, e.g. IRED_SLURM__PARTITION=gpu; see docs/slurm.md
    slurm: SlurmSettings = Field(default_factory=SlurmSettings, description="SLURM defaults; jobs may override some")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("heartbeat_seconds must be shorter than lease_seconds")
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: a local worker on a filesystem queue."""
        return self.broker_url is None

    @property
    def auth_enabled(self) -> bool:
        """Whether the API asks for a token: `auth_required` if set, else in lab-server mode."""
        if self.auth_required is not None:
            return self.auth_required
        return self.database_url is not None or self.broker_url is not None

    @property
    def sqlite_path(self) -> Path:
        """The embedded default's database file (unused when `database_url` is set)."""
        return (self.data_dir / "ired-dcd.db").resolve()

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def artifacts_path(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()

    @property
    def queue_dir(self) -> Path:
        """Folder of the embedded filesystem queue."""
        return (self.data_dir / "queue").resolve()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
