"""The Daytona API stand-in, for installing skills into a Daytona sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.sandbox.daytona_standin import DaytonaStandIn


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[DaytonaStandIn]:
    server = DaytonaStandIn(tmp_path / "daytona")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
