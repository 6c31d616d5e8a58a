"""Local session workspaces; the implementation lives in `worker.sandbox.local`.

Kept so existing imports keep working: `LocalWorkspaces(root)` is the local sandbox provider,
whose `cleanup(sandbox_id)` serves `CleanupSandbox`.
"""

from __future__ import annotations

from worker.sandbox.local import LocalSandboxes as LocalWorkspaces

__all__ = ["LocalWorkspaces"]
