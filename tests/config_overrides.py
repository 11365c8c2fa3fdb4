"""Shared by the test helpers that build job configs: apply keyword overrides section by section."""

from __future__ import annotations


def merge_overrides(config: dict, overrides: dict) -> dict:
    """Return ``config`` with ``overrides`` applied: dict values update a dict section, anything else replaces."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
