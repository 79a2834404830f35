"""Training configuration: one pydantic model holding every knob, and the presets under `configs/`.

A preset is a JSON file that only sets fields of `TrainConfig`; everything it leaves out takes the
default below. Presets are found by file stem (`q204_dcd_full`), by short id (`q204`) or by the
plan's label (`Q-204`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ired_core.input_rules import MAX_SEEDS

CONFIGS_DIR = Path(os.environ.get("IRED_CONFIGS_DIR", Path(__file__).resolve().parents[1] / "configs"))
Engine = Literal["eager", "reuse", "compiled"]
"""How `ired_core.trainer.Trainer` computes a step. Not a config field: every engine trains the same model
(within fp32 rounding, tested), so the choice is the machine's, not the experiment's."""
ENGINES: tuple[Engine, ...] = get_args(Engine)


class TrainConfig(BaseModel):
    """Every knob of one training job. Unknown keys and wrong types fail with the field's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("custom", description="preset this config came from")
    description: str = Field("", description="one line on what the preset tests")

    # task: A = R Rᵀ + (R Rᵀ)ᵀ + diag·I, target A⁻¹
    rank: int = Field(20, ge=2, le=64, description="matrix size (rank × rank)")
    id_diag: float = Field(0.5, gt=0, description="diagonal shift of the in-distribution split")
    ood_diag: float = Field(0.1, gt=0, description="diagonal shift of the harder OOD split")

    # diffusion
    timesteps: int = Field(10, ge=2, le=1000, description="diffusion steps T")
    cosine_s: float = Field(0.008, gt=0, lt=1, description="cosine schedule offset s")

    # model
    hidden_dim: int = Field(512, ge=8, le=8192, description="width of the energy MLP")
    time_dim: int = Field(128, ge=8, le=2048, description="width of the time embedding")
    energy_head: Literal["vector", "scalar"] = Field(
        "vector", description="vector: E = Σ fc4(h)² (IRED); scalar: E = Linear(h → 1)"
    )

    # optimisation
    batch_size: int = Field(2048, ge=1, le=65536)
    train_steps: int = Field(100_000, ge=1, le=10_000_000)
    lr: float = Field(1e-4, gt=0, le=1)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.99, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0, description="max grad norm, per seed")
    ema_decay: float = Field(0.995, ge=0, lt=1)
    ema_every: int = Field(10, ge=1, description="EMA update interval in steps")

    # energy-landscape supervision
    energy_loss: Literal["none", "nce", "cd"] = Field("nce", description="none disables negatives")
    energy_weight_max: float = Field(0.5, ge=0, le=100, description="weight of the energy term after warm-up")
    energy_warmup_frac: float = Field(0.0, ge=0, le=1, description="fraction of training to ramp 0 → max")
    energy_t_min_frac: float = Field(0.0, ge=0, le=1, description="energy term only where t ≥ this·T")
    energy_t_max_frac: float = Field(1.0, ge=0, le=1, description="energy term only where t ≤ this·T")
    sampler: Literal["gd_reject", "langevin"] = Field("gd_reject")
    sampler_steps: int = Field(10, ge=0, le=1000, description="k sampler steps per negative")
    noise_scale: float = Field(1.5, ge=0, description="c in y⁰ = q_sample(Y, t, c·ε')")
    langevin_sigma_mult: float = Field(1.0, ge=0, description="σ_t = mult·√(2η_t)")
    negative_init: Literal["noise", "diffusion"] = Field(
        "noise", description="diffusion: start at q_sample(Y, t+1) and take the model's reverse step"
    )
    negative_renoise: bool = Field(
        True, description="IRED: score q_sample(x̂, t, ε') of the chain's x̂; false: score the chain state itself"
    )

    # stabilisers of contrastive divergence (docs/stability.md)
    energy_reg_weight: float = Field(0.0, ge=0, description="cd: α in α(E⁺² + E⁻²)")
    cd_margin: float | None = Field(None, gt=0, description="cd: m in max(E⁺ − E⁻, −m); None: no bound")
    energy_temperature: Literal["unit", "sigma_t"] = Field(
        "unit", description="τ_t of the density exp(−E/τ_t) that chains sample and cd contrasts"
    )
    sampler_step_mult: float = Field(1.0, gt=0, le=10, description="sampler step m·η_t (Langevin noise follows)")
    sampler_grad_clip: float | None = Field(
        None, gt=0, description="sampler: clip each sample's ‖∇E‖ to this × √D; None: no clip"
    )

    # replay buffer (persistent chains)
    replay: bool = False
    replay_size: int = Field(10_000, ge=1, le=10_000_000, description="entries per seed (all buckets)")
    p_replay: float = Field(0.95, ge=0, le=1)
    replay_buckets: Literal["per_timestep", "global"] = "per_timestep"

    # residual false-negative filter
    residual_filter: bool = False
    residual_filter_quantile: float | list[float] = Field(
        0.3, description="quantile of r within the batch per timestep; a list gives one per timestep"
    )
    residual_filter_tau: float | None = Field(None, gt=0, description="absolute τ instead of a quantile")
    residual_filter_weight: float = Field(0.0, ge=0, le=1, description="weight of filtered negatives (0 drops)")

    # evaluation and bookkeeping
    val_size: int = Field(
        32_768,
        ge=1,
        le=1_000_000,
        description="held-out matrices; at 32,768 the held-out SE is ≈ 0.1% of val_mse (docs/performance.md)",
    )
    val_seed: int = Field(20240721, description="seed of the held-out set, independent of training seeds")
    eval_batch_size: int = Field(4096, ge=1)
    eval_every: int = Field(5000, ge=1)
    inference_steps: int = Field(5, ge=0, le=1000, description="gd_reject steps per timestep at inference")
    log_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(5000, ge=1)
    precision: Literal["fp32", "tf32", "bf16"] = Field("tf32", description="tf32 and bf16 apply on CUDA only")

    # divergence: a seed whose training fails is stopped and reported (ired_core.divergence); None: rule off
    diverge_denoise_max: float | None = Field(
        10.0, gt=1, description="loss_denoise above this → diverged (the null denoiser scores 1)"
    )
    diverge_energy_growth: float | None = Field(
        1000.0, gt=1, description="|E| above this × its largest earlier interval → diverged"
    )
    diverge_collapse_level: float | None = Field(
        0.98, gt=0, le=1, description="loss_denoise at or above this after warm-up → collapsed"
    )
    diverge_collapse_after: int = Field(1000, ge=0, description="first step the collapse rule applies")
    diverge_val_after: int | None = Field(
        10_000, ge=0, description="from this step, val_mse above predicting the mean → diverged"
    )

    @field_validator("residual_filter_quantile")
    @classmethod
    def _quantiles_in_unit_interval(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or any(not 0.0 <= q <= 1.0 for q in values):
            raise ValueError("quantiles must lie in [0, 1]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.energy_t_min_frac > self.energy_t_max_frac:
            raise ValueError("energy_t_min_frac must not exceed energy_t_max_frac")
        quantiles = self.residual_filter_quantile
        if isinstance(quantiles, list) and len(quantiles) != self.timesteps:
            raise ValueError(f"residual_filter_quantile: a list needs one value per timestep ({self.timesteps})")
        if self.replay and self.energy_loss == "none":
            raise ValueError("replay: needs an energy loss (energy_loss is 'none')")
        return self

    @property
    def uses_negatives(self) -> bool:
        return self.energy_loss != "none" and self.energy_weight_max > 0

    def architecture(self) -> dict[str, Any]:
        """The fields that fix parameter shapes; a checkpoint is refused if these differ."""
        return {k: getattr(self, k) for k in ("rank", "hidden_dim", "time_dim", "energy_head", "timesteps")}


OBSERVATION_FIELDS = frozenset({"eval_batch_size", "log_every", "checkpoint_every"})
"""Fields that change how a run is observed or saved, not what it trains or scores: two runs that differ
only in these are the same setting."""


def config_hash(config: TrainConfig) -> str:
    """Stable short hash of the resolved config (the `name`/`description` labels excluded)."""
    payload = config.model_dump(exclude={"name", "description"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _preset_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIGS_DIR.glob("*.json"))}


def canonical_preset(name: str) -> str:
    """Map `q204`, `Q-204`, `q204_dcd_full` to the preset's file stem, or raise ValueError."""
    files = _preset_files()
    key = name.strip().lower().replace("-", "")
    for stem in files:
        if key == stem or key == stem.split("_", 1)[0]:
            return stem
    raise ValueError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")


def list_presets() -> list[str]:
    return list(_preset_files())


def load_preset(name: str) -> dict[str, Any]:
    """The raw fields a preset sets (its name included)."""
    stem = canonical_preset(name)
    fields = json.loads(_preset_files()[stem].read_text())
    return {"name": stem, **fields}


def _format_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "config"
        parts.append(f"{field}: {item['msg']}")
    return "; ".join(parts)


CONFIG_FILE_SUFFIX = ".json"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The fields of a config file: a JSON object of TrainConfig fields, e.g. a job's resolved config."""
    try:
        fields = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"config file {str(path)!r}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"config file {str(path)!r}: not JSON ({error})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"config file {str(path)!r}: expected a JSON object of config fields")
    return fields


def resolve_config(source: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The fields of `source`, then `overrides`, validated; ValueError names every bad field.

    `source` is a preset (`q204`, `Q-204`, `q204_dcd_full`) or the path of a config file ending in
    `.json` (`load_config_file`), such as the resolved config the server hands a SLURM task.
    """
    overrides = dict(overrides or {})
    for key in ("name",):
        if key in overrides:
            raise ValueError(f"{key}: cannot be overridden")
    is_file = source.endswith(CONFIG_FILE_SUFFIX)
    base = load_config_file(source) if is_file else load_preset(source)
    try:
        return TrainConfig(**{**base, **overrides})
    except ValidationError as error:
        raise ValueError(_format_error(error)) from None


def preset_differences() -> dict[str, dict[str, Any]]:
    """For each preset, the fields where it differs from the TrainConfig defaults."""
    defaults = TrainConfig().model_dump()
    out = {}
    for stem in list_presets():
        cfg = resolve_config(stem).model_dump()
        out[stem] = {k: v for k, v in cfg.items() if k not in ("name",) and v != defaults[k]}
    return out


def parse_overrides(assignments: Iterable[str]) -> dict[str, Any]:
    """Parse CLI `key=value` pairs; values are read as JSON when they parse, else kept as strings."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def parse_grid(assignments: Iterable[str]) -> dict[str, list[Any]]:
    """Parse CLI `key=v1,v2,…` pairs into a sweep's grid; each value read as JSON when it parses, else
    kept as a string (like `parse_overrides`)."""
    grid: dict[str, list[Any]] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ValueError(f"--grid {item!r}: expected key=value1,value2,…")
        if key in grid:
            raise ValueError(f"--grid {key}: given twice; list all its values in one --grid")
        grid[key] = [parse_overrides([f"{key}={value.strip()}"])[key] for value in raw.split(",")]
    return grid


def parse_seeds(text: str) -> list[int]:
    """`0-9`, `0,1,5` or `3` → sorted unique seeds; ValueError on anything else."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)  # ASCII digits only: int() also reads "٣"
        if not match:
            raise ValueError(f"seeds: cannot read {part!r} (use e.g. 0-9 or 0,1,2)")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if hi < lo:
            raise ValueError(f"seeds: range {part!r} is empty")
        seeds.update(range(lo, hi + 1))
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"seeds: at most {MAX_SEEDS} per job, got {len(seeds)}")
    return sorted(seeds)


def format_seeds(seeds: Iterable[int]) -> str:
    """[0, 1, 2, 5] → '0-2,5' (the form `--seeds` reads)."""
    ordered = sorted(set(seeds))
    parts: list[str] = []
    start = prev = None
    for seed in [*ordered, None]:
        if start is not None and (seed is None or seed != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if seed is not None:
            start = seed if start is None else start
            prev = seed
    return ",".join(parts)
