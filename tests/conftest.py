"""Shared fixtures: the embedded stack of real servers, started once per session on demand.

`stack` gives the endpoints of one ephemeral stack (Temporal with its Web UI, MongoDB-wire,
Valkey) for the whole session; it starts only when a test asks for it. `session_stack` is the
`Stack` behind it, for tests that need pids or logs. Its servers keep their data in memory, so a
test that restarts one of them loses that server's data for every later test: fault-injection
tests that restart servers should build their own with `make_stack`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import Endpoints, Stack, StackConfig


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(StackConfig(data_dir=tmp_path_factory.mktemp("stack"), ephemeral=True))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stack(session_stack: Stack) -> Endpoints:
    return session_stack.endpoints


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build a started Stack of one's own (`make_stack(redis=True, temporal=False, ...)`).

    Keyword arguments are StackConfig fields; `data_dir` defaults to a fresh directory under the
    test's tmp_path. Every stack made is stopped when the test ends.
    """
    made: list[Stack] = []

    def make(**fields: Any) -> Stack:
        fields.setdefault("data_dir", tmp_path / f"stack{len(made)}")
        stack = Stack(StackConfig(**fields))
        made.append(stack)
        stack.start()
        return stack

    yield make
    for stack in reversed(made):
        stack.stop()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo any logging configuration a test (or a CLI it runs) installs.

    `configure()` functions bind structlog and the root logging handler to the `sys.stderr` of
    the moment, which under pytest is a capture file closed after the test; later tests would
    then log into a closed file.
    """
    import logging

    import structlog

    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
