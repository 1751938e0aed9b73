"""Checkpoint state shared by the callbacks: a version checked on load, and the tunable settings compared.

A callback's `state_key` holds only what identifies it (its class, and for `GradualPruning` which weights it
prunes), so a resumed run with changed tunable settings (a new `lr_max`, another `final_sparsity`) still finds its
state: the counters continue, and `changed_settings` lets the callback say what changed instead of restarting at
zero without a word.
"""

from __future__ import annotations

from lightning_scaling.errors import ConfigurationError


def check_state_version(owner: str, state_dict: dict, version: int) -> None:
    """Refuse a checkpoint state written by another version of `owner` (the message names both versions)."""
    if state_dict.get("version") != version:
        raise ConfigurationError(
            f"{owner} checkpoint state has version {state_dict.get('version')!r}; this version reads {version}"
        )


def changed_settings(saved: dict | None, current: dict) -> list[str]:
    """"name: old -> new" for every setting whose value differs from the one saved in the checkpoint."""
    if not saved:
        return []
    return [f"{k}: {saved[k]!r} -> {current[k]!r}" for k in current if k in saved and saved[k] != current[k]]
