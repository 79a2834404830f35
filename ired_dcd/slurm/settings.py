"""What a SLURM submission may use: the server's defaults (`IRED_SLURM__*`) and a job's overrides.

`SlurmSettings` validates both; fields that choose paths or commands on the cluster are the server's
alone (SERVER_ONLY_FIELDS), and extra `#SBATCH` lines may not set what the scripts set themselves.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ArrayMode = Literal["per_seed", "all_seeds_one_task"]
StateSource = Literal["auto", "sacct", "squeue"]

# Fields only the server sets: they choose paths and commands that run on the cluster.
SERVER_ONLY_FIELDS = frozenset(
    {"python", "log_dir", "setup_commands", "signal_seconds", "poll_interval_s", "state_source"}
)
# sbatch options that the generated scripts set themselves or that would move files or environments.
_RESERVED_SBATCH_OPTIONS = frozenset(
    {
        "array", "output", "error", "input", "open-mode", "requeue", "no-requeue", "signal", "job-name",
        "chdir", "export", "export-file", "wrap", "uid", "gid", "partition", "account", "qos", "time",
        "cpus-per-task", "gpus-per-task", "mem",
    }
)  # fmt: skip
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.+,-]+")
_SBATCH_LINE = re.compile(r"(?:#SBATCH\s+)?--([A-Za-z][A-Za-z0-9-]*)(?:(?:=|\s+)(.+))?")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class SlurmSettings(BaseModel):
    """Where and how jobs run on the cluster; server defaults, some fields overridable per job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # per job (API overrides allowed)
    partition: str | None = Field(None, description="partition(s), comma-separated; None: cluster default")
    account: str | None = Field(None, description="account to charge; None: the user's default")
    qos: str | None = Field(None, description="quality of service; None: default")
    time_minutes: int = Field(240, ge=1, le=525_600, description="time limit of one task (it requeues)")
    gpus_per_task: int = Field(1, ge=0, le=64, description="0 trains on the CPU")
    cpus_per_task: int = Field(4, ge=1, le=1024)
    mem_gb: float | None = Field(32, gt=0, le=100_000, description="memory per task; None: cluster default")
    extra_sbatch_lines: list[str] = Field(
        default_factory=list, description="more options, e.g. '--constraint=a100' or '#SBATCH --exclusive'"
    )
    array_mode: ArrayMode = Field(
        "per_seed", description="per_seed: one array task per seed; all_seeds_one_task: one task trains all"
    )
    max_parallel: int = Field(16, ge=1, le=10_000, description="array tasks running at once (%N)")

    # server only
    python: str | None = Field(
        None, description="shell command starting a Python that has ired-dcd, on the nodes; None: this interpreter"
    )
    log_dir: str | None = Field(
        None, description="SLURM scripts and task logs, on a shared filesystem; None: <out_dir>/slurm"
    )
    setup_commands: list[str] = Field(
        default_factory=list, description="shell lines run first in every task, e.g. 'module load cuda'"
    )
    signal_seconds: int = Field(120, ge=10, le=3600, description="warning before the time limit")
    poll_interval_s: float = Field(30.0, ge=0, description="at most one round of SLURM queries per interval")
    state_source: StateSource = Field("auto", description="auto: sacct if accounting works, else squeue")

    @field_validator("partition", "account", "qos")
    @classmethod
    def _slurm_name(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_NAME.fullmatch(value):
            raise ValueError("use letters, digits and _ . + , - only")
        return value

    @field_validator("extra_sbatch_lines")
    @classmethod
    def _normalise_sbatch_lines(cls, lines: list[str]) -> list[str]:
        return [_normalise_sbatch_line(line) for line in lines]

    @field_validator("setup_commands")
    @classmethod
    def _one_line_each(cls, lines: list[str]) -> list[str]:
        if any(_CONTROL_CHARS.search(line) for line in lines):
            raise ValueError("each command must be one line without control characters")
        return lines

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SlurmSettings:
        """Validated settings; ValueError names every bad field."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as error:
            raise ValueError(_format_error(error)) from None

    def merged(self, overrides: Mapping[str, Any] | None) -> SlurmSettings:
        """These settings with a job's overrides applied; ValueError names the bad or server-only field."""
        overrides = dict(overrides or {})
        for name in sorted(overrides):
            if name in SERVER_ONLY_FIELDS:
                raise ValueError(f"{name}: set by the server, cannot be overridden per job")
        return self.from_mapping({**self.model_dump(), **overrides})

    def sbatch_options(self) -> dict[str, str | bool]:
        """`extra_sbatch_lines` as option → value (True for a bare flag)."""
        options: dict[str, str | bool] = {}
        for line in self.extra_sbatch_lines:
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            options[key] = shlex.split(value)[0] if value else True
        return options


def _format_error(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'settings'}: {item['msg']}" for item in error.errors())


def _normalise_sbatch_line(line: str) -> str:
    """'--constraint=a100', '--constraint a100' or '#SBATCH --constraint=a100' → '#SBATCH --constraint=a100'."""
    if _CONTROL_CHARS.search(line):
        raise ValueError(f"{line!r}: one line without control characters")
    match = _SBATCH_LINE.fullmatch(line.strip())
    if not match:
        raise ValueError(f"{line!r}: expected a long option such as '--constraint=a100'")
    key, raw = match[1], match[2]
    if key in _RESERVED_SBATCH_OPTIONS:
        raise ValueError(f"{line!r}: --{key} is set from the settings or by the script itself")
    if raw is None:
        return f"#SBATCH --{key}"
    try:
        words = shlex.split(raw)
    except ValueError:
        raise ValueError(f"{line!r}: unbalanced quotes") from None
    if len(words) != 1:
        raise ValueError(f"{line!r}: one value per option (quote values with spaces)")
    return f"#SBATCH --{key}={shlex.quote(words[0])}"


def mem_option(mem_gb: float) -> str:
    return f"{int(mem_gb)}G" if float(mem_gb).is_integer() else f"{round(mem_gb * 1024)}M"
