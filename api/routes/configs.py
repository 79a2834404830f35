"""Configs: the presets a job may name and the fields it may override."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.schemas import ConfigsPublic
from ired_core.input_rules import MAX_SEEDS
from ired_dcd.services.configs import config_fields, describe_presets

router = APIRouter(prefix="/configs", tags=["configs"])


@router.get("", response_model=ConfigsPublic)
def read_configs() -> Any:
    """Presets with their fields, and the schema of every overridable field."""
    return ConfigsPublic(presets=describe_presets(), fields=config_fields(), max_seeds=MAX_SEEDS)
