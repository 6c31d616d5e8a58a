"""Sandbox providers for the conformance suite: the local backend (with bubblewrap where it works
here, and without), and Daytona's SDK against a local stand-in of its API (`daytona_standin.py`).

The Daytona provider runs as production does by default: sandbox states arrive on the SDK's
Socket.IO channel (the stand-in serves one); `poll_state=True` selects the deprecated polling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.daytona_standin import DaytonaStandIn
from worker.sandbox import LocalSandboxes, SandboxProvider
from worker.sandbox.daytona import DaytonaSandboxes

OUTPUT_LIMIT = 4000


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[DaytonaStandIn]:
    server = DaytonaStandIn(tmp_path / "daytona")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def daytona_provider(standin: DaytonaStandIn, **overrides: Any) -> DaytonaSandboxes:
    options: dict[str, Any] = {
        "api_key": standin.api_key,
        "api_url": standin.api_url,
        "target": "us",
        "command_timeout": 5.0,
        "output_limit": OUTPUT_LIMIT,
        "operation_timeout": 10.0,
    }
    options.update(overrides)
    return DaytonaSandboxes(**options)


@pytest.fixture(params=["local", "local-plain", "daytona"])
async def provider(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SandboxProvider]:
    made: SandboxProvider
    server: DaytonaStandIn | None = None
    if request.param.startswith("local"):
        # `local` isolates with bubblewrap where this machine allows it; `local-plain` never does.
        made = LocalSandboxes(
            tmp_path / "sandboxes",
            command_timeout=5.0,
            output_limit=OUTPUT_LIMIT,
            isolation="off" if request.param == "local-plain" else "preferred",
        )
    else:
        server = DaytonaStandIn(tmp_path / "daytona")
        await server.start()
        made = daytona_provider(server)
    try:
        yield made
    finally:
        await made.aclose()
        if server is not None:
            await server.stop()
