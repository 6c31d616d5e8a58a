"""Fixtures for the stub's integration tests: a real stub (gRPC, MongoDB-wire, Temporal) per module.

Each module gets its own database and Temporal task queues, so modules never see each other's
executions or workflows. The runner side is a fake (see `fake_runner.py`) on its own queue.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from devstack import Endpoints
from stigmer_stub.app import RunningStub, running_stub
from stigmer_stub.client import StigmerClient
from stigmer_stub.settings import (
    GrpcSettings,
    MongoSettings,
    Settings,
    TemporalSettings,
    WorkflowSettings,
)


@dataclass(frozen=True)
class Stub:
    running: RunningStub
    settings: Settings
    client: StigmerClient

    @property
    def address(self) -> str:
        return self.running.address

    @property
    def runner_queue(self) -> str:
        return self.settings.temporal.runner_task_queue


def stub_settings(stack: Endpoints, *, database: str, suffix: str) -> Settings:
    return Settings(
        log_level="WARNING",
        grpc=GrpcSettings(port=0, shutdown_grace_seconds=0.5),
        mongo=MongoSettings(uri=stack.mongodb_uri, database=database),
        temporal=TemporalSettings(
            address=stack.temporal_address,
            namespace=stack.temporal_namespace,
            workflow_task_queue=f"stub-workflows-{suffix}",
            runner_task_queue=f"fake-runner-{suffix}",
            cancel_wait_seconds=20,
        ),
        # Short timeouts keep the failure paths fast; two ExecuteGraphton attempts show retries.
        workflow=WorkflowSettings(
            ensure_thread_timeout_seconds=5,
            execute_timeout_seconds=30,
            execute_heartbeat_seconds=5,
            execute_schedule_to_start_seconds=30,
            execute_attempts=2,
        ),
    )


@pytest.fixture(scope="module")
async def stub(stack: Endpoints) -> AsyncIterator[Stub]:
    suffix = uuid.uuid4().hex[:10]
    settings = stub_settings(stack, database=f"stub_{suffix}", suffix=suffix)
    async with running_stub(settings) as running, StigmerClient(running.address) as client:
        yield Stub(running, settings, client)
