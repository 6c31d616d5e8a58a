"""The whole loop with status deltas on: worker, stub, Temporal and MongoDB-wire, in process."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import RunningStub, running_stub
from stigmer_stub.settings import Settings as StubSettings
from tests.stub.support import stub_settings
from worker import app
from worker.settings import Settings, load_settings

pytestmark = pytest.mark.integration


def _worker_settings(
    stack: Endpoints, stub: RunningStub, settings: StubSettings, tmp_path: Path, **extra: str
) -> Settings:
    return load_settings(
        {
            "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": settings.temporal.runner_task_queue,
            "STIGMER_BACKEND_ENDPOINT": stub.address,
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
            "REDIS_HOST": stack.redis_host,
            "REDIS_PORT": str(stack.redis_port),
            "HEALTH_PORT": "0",
            "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "2",
            **extra,
        }
    )


async def _demo_run(
    client: StigmerClient, worker_settings: Settings, agent_name: str
) -> api_pb2.AgentExecutionStatus:
    """The demo script run once by a worker with `worker_settings`; its final stored status."""
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run(worker_settings, stop=stop))
    try:
        agent = await client.create_agent(
            agent_name, instructions="You are a careful engineer.\nscript: demo"
        )
        created = await client.create_execution("Plan the work", agent_id=agent.metadata.id)
        async with asyncio.timeout(120):
            async for update in client.subscribe(created.metadata.id):
                final = update.status
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)
    return final


def _assert_whole_demo_transcript(final: api_pb2.AgentExecutionStatus) -> None:
    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert final.todos
    assert final.sub_agent_executions
    assert all(t.status == enum_pb2.TOOL_CALL_COMPLETED for t in final.tool_calls)


async def test_a_run_with_deltas_on_stores_the_whole_transcript(
    stack: Endpoints, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    settings = stub_settings(stack, database=f"deltas_{suffix}", suffix=suffix)
    async with running_stub(settings) as stub, StigmerClient(stub.address) as client:
        acks: list[io_pb2.StatusDeltaAck] = []
        ops = stub.ops.executions
        applying = ops.update_status_delta

        async def counted(raw: bytes, **kwargs: Any) -> io_pb2.StatusDeltaAck:
            ack = await applying(raw, **kwargs)
            acks.append(ack)
            return ack

        ops.update_status_delta = counted  # type: ignore[method-assign]
        worker_settings = _worker_settings(
            stack, stub, settings, tmp_path, STIGMER_STATUS_DELTAS="true"
        )
        final = await _demo_run(client, worker_settings, "delta-agent")

    _assert_whole_demo_transcript(final)
    applied = [a for a in acks if a.applied]
    assert len(applied) >= 2, "the updates after the first went as deltas"
    assert not [a for a in acks if a.resync], "no resync in an undisturbed run"
    # The last update was a delta carrying the digest of the runner's whole final status: the
    # stub applied it only because its stored status had the same digest.
    assert acks[-1].applied


async def test_with_the_default_settings_a_stub_without_deltas_gets_whole_statuses(
    stack: Endpoints, tmp_path: Path
) -> None:
    """Deltas are on by default; an orchestrator that does not serve them (UNIMPLEMENTED, as
    the January contract) still ends with the whole, right transcript."""
    suffix = uuid.uuid4().hex[:10]
    base = stub_settings(stack, database=f"nodeltas_{suffix}", suffix=suffix)
    settings = base.model_copy(
        update={"limits": base.limits.model_copy(update={"status_deltas": False})}
    )
    async with running_stub(settings) as stub, StigmerClient(stub.address) as client:
        worker_settings = _worker_settings(stack, stub, settings, tmp_path)
        assert worker_settings.status.deltas  # the default
        final = await _demo_run(client, worker_settings, "whole-agent")

    _assert_whole_demo_transcript(final)
