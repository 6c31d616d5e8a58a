"""A run waiting for approval survives restarts of the runner, the stub and the MongoDB-wire
server, and resumes when the decision comes.

Its own stack (Temporal and a persistent MongoDB-wire server): restarting the shared one would
lose its data for every later test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from devstack import Stack
from devstack.net import pick_free_ports
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import running_stub
from stigmer_stub.settings import GrpcSettings
from tests.stub.fake_runner import fake_runner
from tests.stub.support import stub_settings

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase
Action = enum_pb2.ApprovalAction


async def phase_of(client: StigmerClient, execution_id: str) -> Phase.ValueType:
    return (await client.get_execution(execution_id)).status.phase


async def wait_phase(client: StigmerClient, execution_id: str, phase: Phase.ValueType) -> None:
    async with asyncio.timeout(60):
        while await phase_of(client, execution_id) != phase:
            await asyncio.sleep(0.1)


async def test_a_run_at_a_gate_survives_restarts_and_resumes_on_the_decision(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(redis=False)
    endpoints = stack.endpoints
    suffix = uuid.uuid4().hex[:10]
    base = stub_settings(endpoints, database=f"stub_{suffix}", suffix=suffix)
    (port,) = pick_free_ports("127.0.0.1", 1)
    settings = base.model_copy(
        update={"grpc": GrpcSettings.model_validate({"port": port, "shutdown_grace_seconds": 0.5})}
    )
    address = f"127.0.0.1:{port}"
    queue = settings.temporal.runner_task_queue
    temporal = (endpoints.temporal_address, endpoints.temporal_namespace)

    async with running_stub(settings), StigmerClient(address) as client:
        agent = await client.create_agent("gated", instructions="help")
        async with fake_runner(*temporal, queue, address) as first_runner:
            created = await client.create_execution("gate", agent_id=agent.metadata.id)
            execution_id = created.metadata.id
            await wait_phase(client, execution_id, Phase.EXECUTION_WAITING_FOR_APPROVAL)
            assert first_runner.attempts[execution_id] == 1

    # Runner and stub are gone; the MongoDB-wire server restarts too.
    await asyncio.to_thread(stack.restart, "mongo")

    async with (
        running_stub(settings),
        StigmerClient(address) as client,
        fake_runner(*temporal, queue, address) as second_runner,
    ):
        assert await phase_of(client, execution_id) == Phase.EXECUTION_WAITING_FOR_APPROVAL
        await client.submit_approval(
            execution_id, "call-1", Action.APPROVAL_ACTION_REJECT, "not after a restart"
        )
        await wait_phase(client, execution_id, Phase.EXECUTION_COMPLETED)
        final = await client.get_execution(execution_id)
        assert second_runner.attempts[execution_id] == 1  # the resumed attempt, on the new runner
        assert final.status.messages[-1].content == "not after a restart"
