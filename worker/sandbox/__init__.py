"""Sandboxes: where an agent's files live and its commands run, one per session.

`create_sandbox_provider(settings)` picks the backend (`local` or `daytona`); the provider's
`acquire(session_key, sandbox_id=...)` returns the session's `Sandbox`; `AgentSandbox` binds it
to one execution (environment, secret masking) and adapts it for deepagents and graphton.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from worker.errors import ConfigurationError
from worker.sandbox.base import (
    CommandResult,
    FileEntry,
    FileWrite,
    Isolation,
    Redactor,
    Sandbox,
    SandboxPathError,
    SandboxProvider,
    WriteRefused,
)
from worker.sandbox.local import LocalSandbox, LocalSandboxes
from worker.settings import SandboxBackend, Settings

if TYPE_CHECKING:
    from worker.sandbox.backend import (
        AgentSandbox,
        DeepAgentsBackend,
        GraphtonBackend,
    )

# The agent adapters import deepagents and graphton (seconds of import time); code that only
# needs a provider or `CleanupSandbox` does not pay for them until it touches one.
_LAZY = {
    "AgentSandbox",
    "DeepAgentsBackend",
    "GraphtonBackend",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("worker.sandbox.backend"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_sandbox_provider(settings: Settings) -> SandboxProvider:
    """The provider the settings ask for; the caller closes it (`aclose`) at shutdown.

    `SANDBOX_COMMAND_TIMEOUT_SECONDS` is the ceiling of every command, not only its default:
    agent tools pass their own timeout on each call (graphton's `execute` always sends 120 s),
    so a limit that applied only when none was given would never apply.
    """
    sandbox = settings.sandbox
    if settings.sandbox_backend is SandboxBackend.DAYTONA:
        if sandbox.daytona_api_key is None:
            raise ConfigurationError("SANDBOX_BACKEND=daytona needs DAYTONA_API_KEY")
        # The Daytona SDK is heavy; only a worker configured for it pays for the import.
        from worker.sandbox.daytona import DaytonaSandboxes  # noqa: PLC0415

        return DaytonaSandboxes(
            api_key=sandbox.daytona_api_key.get_secret_value(),
            api_url=sandbox.daytona_api_url,
            snapshot_id=sandbox.daytona_snapshot_id,
            command_timeout=sandbox.command_timeout_seconds,
            max_command_timeout=sandbox.command_timeout_seconds,
        )
    return LocalSandboxes(
        settings.sandbox_root,
        command_timeout=sandbox.command_timeout_seconds,
        max_command_timeout=sandbox.command_timeout_seconds,
        allow_network=sandbox.allow_network,
        isolation=settings.sandbox_isolation,
    )


async def check_isolation(provider: SandboxProvider) -> Isolation | None:
    """Probe the provider's isolation once, at the worker's start: `ConfigurationError` when
    `SANDBOX_ISOLATION=required` and commands cannot be isolated here (the worker then refuses
    to start instead of running commands unisolated). None for remote backends (Daytona's
    sandboxes are VMs)."""
    if isinstance(provider, LocalSandboxes):
        return await provider.detect_isolation()
    return None


__all__ = [
    "AgentSandbox",
    "CommandResult",
    "DeepAgentsBackend",
    "FileEntry",
    "FileWrite",
    "GraphtonBackend",
    "Isolation",
    "LocalSandbox",
    "LocalSandboxes",
    "Redactor",
    "Sandbox",
    "SandboxPathError",
    "SandboxProvider",
    "WriteRefused",
    "check_isolation",
    "create_sandbox_provider",
]
