"""Graphton's local workspace backend, with commands that cannot see the worker's secrets.

Graphton 1.0.4's `FilesystemBackend` starts every `execute` command with a copy of the worker's
whole environment (`{**os.environ, ...}`): API keys, the orchestrator token, database URLs. The
subclass here starts from a minimal environment instead and adds only what the agent is given
(its merged environments). Graphton builds the backend itself from `sandbox_config`, looking the
class up in `graphton.core.backends` when it does, so `install()` points that name at the subclass;
it is idempotent and changes nothing else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from graphton.core import backends as graphton_backends
from graphton.core.backends.filesystem import FilesystemBackend
from graphton.core.backends.platform_mount import STIGMER_PLATFORM_DIR_ENV

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


class ScrubbedFilesystemBackend(FilesystemBackend):
    """A workspace whose commands get `PATH`, `HOME`, `LANG` and the agent's environment only."""

    def _build_execute_env(self) -> dict[str, str]:
        # The worker's interpreter directory stays on PATH so `python` resolves as upstream does.
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{SYSTEM_PATH}",
            "HOME": str(self.root_dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self._env_vars or {})
        if self._platform_root is not None:
            env[STIGMER_PLATFORM_DIR_ENV] = str(self._platform_root)
        return env


def install() -> None:
    """Make Graphton build `ScrubbedFilesystemBackend` for `{"type": "filesystem"}` sandboxes."""
    graphton_backends.FilesystemBackend = ScrubbedFilesystemBackend  # type: ignore[misc]
