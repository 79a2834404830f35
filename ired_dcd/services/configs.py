"""The presets a job may name, with their fields."""

from __future__ import annotations

from typing import Any

from ired_core.configs import TrainConfig, list_presets, preset_differences, resolve_config


def describe_presets() -> list[dict[str, Any]]:
    """Each preset: name, short alias, description, fields differing from the defaults, full config."""
    differences = preset_differences()
    out = []
    for name in list_presets():
        config = resolve_config(name)
        out.append(
            {
                "name": name,
                "short": name.split("_", 1)[0],
                "description": config.description,
                "differences": {k: v for k, v in differences[name].items() if k != "description"},
                "config": config.model_dump(),
            }
        )
    return out


def config_fields() -> dict[str, Any]:
    """JSON schema of every overridable field (type, default, bounds, description)."""
    return TrainConfig.model_json_schema()["properties"]
