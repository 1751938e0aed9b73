"""Checkpoint state shared by the callbacks: every `state_dict` carries a version, checked on load."""

from __future__ import annotations

from ..errors import ConfigurationError


def check_state_version(owner: str, state_dict: dict, version: int) -> None:
    """Refuse a checkpoint state written by another version of `owner` (the message names both versions)."""
    if state_dict.get("version") != version:
        raise ConfigurationError(
            f"{owner} checkpoint state has version {state_dict.get('version')!r}; this version reads {version}"
        )
