"""What to start, where, and on which ports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, get_args

from devstack.errors import StackError

ServiceName = Literal["temporal", "mongo", "redis"]
SERVICES: tuple[ServiceName, ...] = get_args(ServiceName)

DEFAULT_DATA_DIR = Path(".data/stack")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Ports:
    """Loopback ports to bind; 0 picks a free one at start."""

    temporal: int = 0
    temporal_ui: int = 0
    mongo: int = 0
    redis: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            port = getattr(self, f.name)
            if not 0 <= port <= 65535:
                raise StackError(f"port {f.name}={port} is out of range (0..65535)")
        fixed = [getattr(self, f.name) for f in fields(self) if getattr(self, f.name)]
        clashes = sorted(port for port, n in Counter(fixed).items() if n > 1)
        if clashes:
            raise StackError(f"the same fixed port is requested twice: {clashes}")


@dataclass(frozen=True, slots=True)
class StackConfig:
    """The embedded stack: which servers, their state directory, ports and time limits.

    With `ephemeral`, no server keeps state: Temporal runs on an in-memory SQLite, MongoDB on
    `:memory:` and Valkey without persistence; `data_dir` then only holds logs and scratch files.
    `mongo_in_memory` does the same for MongoDB alone. `search_path` replaces the directories
    searched for server binaries (the venv's bin directory, the packages, then PATH).
    """

    data_dir: Path = DEFAULT_DATA_DIR
    temporal: bool = True
    mongo: bool = True
    redis: bool = True
    ephemeral: bool = False
    mongo_in_memory: bool = False
    ports: Ports = Ports()
    host: str = LOOPBACK
    startup_timeout: float = 60.0
    stop_timeout: float = 10.0
    search_path: tuple[Path, ...] | None = None

    def __post_init__(self) -> None:
        if not self.enabled:
            raise StackError("no server is enabled: enable at least one of temporal, mongo, redis")
        if self.startup_timeout <= 0 or self.stop_timeout <= 0:
            raise StackError("startup_timeout and stop_timeout must be positive")

    @property
    def enabled(self) -> tuple[ServiceName, ...]:
        wanted = {"temporal": self.temporal, "mongo": self.mongo, "redis": self.redis}
        return tuple(name for name in SERVICES if wanted[name])

    @property
    def keeps_mongo_data(self) -> bool:
        return not (self.ephemeral or self.mongo_in_memory)
