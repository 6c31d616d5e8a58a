"""Fixtures for the stub's integration tests: a real stub (gRPC, MongoDB-wire, Temporal) per module.

Each module gets its own database and Temporal task queues, so modules never see each other's
executions or workflows. The runner side is a fake (see `fake_runner.py`) on its own queue.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import running_stub
from tests.stub.support import Stub, stub_settings


@pytest.fixture(scope="module")
async def stub(stack: Endpoints) -> AsyncIterator[Stub]:
    suffix = uuid.uuid4().hex[:10]
    settings = stub_settings(stack, database=f"stub_{suffix}", suffix=suffix)
    async with running_stub(settings) as running, StigmerClient(running.address) as client:
        yield Stub(running, settings, client)
