"""A local workspace for agent tests, bound the way a run binds it (`AgentSandbox` over a
`LocalSandbox`), so the agent's file tools and `execute` go through the worker's own backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.sandbox import AgentSandbox, LocalSandboxes


@dataclass(frozen=True)
class Workspace:
    path: Path
    config: dict[str, Any]
    """The `sandbox_config` for `build_agent`."""


async def local_workspace(root: Path, env: dict[str, str] | None = None) -> Workspace:
    """A workspace under `root`; call it on the loop that runs the agent."""
    sandbox = await LocalSandboxes(root, isolation="off").acquire("workspace")
    config = AgentSandbox(sandbox, env=env).graphton_sandbox_config()
    return Workspace(Path(sandbox.workdir), config)
