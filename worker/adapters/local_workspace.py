"""Local session workspaces: one directory per session under the sandbox root.

The deep agent's file tools are rooted in the workspace, and the same directory serves every
execution of the session, so files persist between turns. `CleanupSandbox` removes it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from worker.errors import InvalidInput

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class LocalWorkspaces:
    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, sandbox_id: str) -> Path:
        """The workspace of `sandbox_id`; an id that could name a path elsewhere is refused."""
        if not _SAFE_ID.match(sandbox_id) or sandbox_id in {".", ".."}:
            raise InvalidInput(f"sandbox id {sandbox_id!r} is not a plain name")
        return self._root.resolve() / sandbox_id

    async def acquire(self, sandbox_id: str) -> Path:
        path = self.path_for(sandbox_id)
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        return path

    async def cleanup(self, sandbox_id: str) -> bool:
        """Remove the workspace; idempotent (returns False when there was nothing to remove)."""
        path = self.path_for(sandbox_id)
        if not path.exists():
            return False
        await asyncio.to_thread(shutil.rmtree, path)
        return True
