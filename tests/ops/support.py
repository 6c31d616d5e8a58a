"""Helpers shared by the operations tests: the repository root, venv tools, the settings' names."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import AliasChoices, SecretStr

from worker.settings import SETTINGS_GROUPS

REPO = Path(__file__).resolve().parents[2]


def venv_tool(name: str) -> Path:
    """A console script installed beside the interpreter running the tests (`.venv/bin/...`)."""
    return Path(sys.executable).parent / name


def accepted_env_names() -> set[str]:
    """Every environment name the worker's settings accept, aliases included."""
    names: set[str] = set()
    for cls in SETTINGS_GROUPS.values():
        for info in cls.model_fields.values():
            alias = info.validation_alias
            if isinstance(alias, str):
                names.add(alias)
            elif isinstance(alias, AliasChoices):
                names.update(c for c in alias.choices if isinstance(c, str))
    return names


def secret_env_names() -> set[str]:
    """Names of the settings typed `SecretStr`: they must come from a Secret, never a ConfigMap."""
    names: set[str] = set()
    for cls in SETTINGS_GROUPS.values():
        for info in cls.model_fields.values():
            annotation = info.annotation
            is_secret = annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())
            if is_secret and isinstance(info.validation_alias, str):
                names.add(info.validation_alias)
    return names
