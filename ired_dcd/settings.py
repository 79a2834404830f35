"""One settings object for the API, the workers, the CLI and Alembic.

Read from the environment: `DATABASE_URL` and `BROKER_URL` (also accepted with the `IRED_` prefix),
everything else as `IRED_<FIELD>`. With neither URL set the service runs in the embedded default: a
SQLite file and a filesystem queue under `data_dir`, and `ired-dcd serve` starts a local worker.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service settings; every field can be set as `IRED_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="IRED_", extra="ignore")

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

    # queue and workers
    queue: str = Field("ired", description="Celery queue the API sends training tasks to")
    split_seeds: bool = Field(False, description="one task per seed instead of one ensemble task per job")
    device: str = Field("auto", description="auto (CUDA when visible, else CPU), cpu, cuda, cuda:N")
    max_attempts: int = Field(3, ge=1, description="deliveries of a run before it is failed (worker lost)")
    lease_seconds: float = Field(60.0, gt=0, description="a run whose heartbeat is older is taken as dead")
    heartbeat_seconds: float = Field(2.0, gt=0, description="lease renewal and cancellation poll interval")
    visibility_timeout: int = Field(
        7 * 24 * 3600, ge=1, description="seconds before Redis re-delivers an unacknowledged task"
    )

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
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ired-dcd.db').resolve()}"

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
