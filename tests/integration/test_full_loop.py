"""The whole loop on real servers: stub (gRPC + MongoDB-wire + its invoke workflow) → Temporal →
the real worker → Graphton with the scripted model → status merged in MongoDB → subscribers.

Two turns in one session share the session's sandbox and memory; deleting the session has the
runner remove the sandbox through `CleanupSandbox`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from redis.asyncio import Redis
from temporalio.client import Client

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import running_stub
from stigmer_stub.workflow import workflow_id
from tests.stub.support import stub_settings
from worker import app
from worker.settings import load_settings

pytestmark = pytest.mark.integration

LIVE_END_SECONDS = 15.0

TERMINAL = {
    enum_pb2.EXECUTION_COMPLETED,
    enum_pb2.EXECUTION_FAILED,
    enum_pb2.EXECUTION_CANCELLED,
}


@dataclass
class Loop:
    client: StigmerClient
    sandboxes: Path
    redis: Redis

    async def live_events(
        self, execution_id: str, *, end_within: float = LIVE_END_SECONDS
    ) -> list[dict[str, str]]:
        """The execution's live events once its `end` event is in (or `end_within` passed).

        The worker pushes the final status first and writes `end` after it, so a subscriber
        that saw COMPLETED may read the stream before `end` (and the last events) are there.
        """
        deadline = time.monotonic() + end_within
        while True:
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                await self.redis.xrange(f"stigmer:execution:{execution_id}:events"),
            )
            events = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
            if any(e["type"] == "end" for e in events) or time.monotonic() > deadline:
                return events
            await asyncio.sleep(0.05)

    async def follow(self, execution_id: str) -> list[execution_api.AgentExecution]:
        seen = []
        async with asyncio.timeout(120):
            async for update in self.client.subscribe(execution_id):
                seen.append(update)
        return seen


@asynccontextmanager
async def running_loop(stack: Endpoints, tmp_path: Path, **worker_env: str) -> AsyncIterator[Loop]:
    suffix = uuid.uuid4().hex[:10]
    settings = stub_settings(stack, database=f"loop_{suffix}", suffix=suffix)
    async with running_stub(settings) as stub, StigmerClient(stub.address) as client:
        worker_settings = load_settings(
            {
                "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
                "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": settings.temporal.runner_task_queue,
                "STIGMER_BACKEND_ENDPOINT": stub.address,
                "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
                "REDIS_HOST": stack.redis_host,
                "REDIS_PORT": str(stack.redis_port),
                "HEALTH_PORT": "0",
                "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "2",
                **worker_env,
            }
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run(worker_settings, stop=stop))
        redis = Redis(host=stack.redis_host, port=stack.redis_port)
        try:
            yield Loop(client, tmp_path / "sandboxes", redis)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 60)
            await redis.aclose()


@pytest.fixture
async def loop(stack: Endpoints, tmp_path: Path) -> AsyncIterator[Loop]:
    async with running_loop(stack, tmp_path) as running:
        yield running


async def test_two_turns_share_memory_and_files_and_delete_cleans_the_sandbox(loop: Loop) -> None:
    agent = await loop.client.create_agent(
        "loop-agent", instructions="You are a careful engineer.\nscript: demo"
    )
    first = await loop.client.create_execution("Plan the work", agent_id=agent.metadata.id)
    assert first.status.phase == enum_pb2.EXECUTION_PENDING
    updates = await loop.follow(first.metadata.id)

    final = updates[-1].status
    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert len(updates) > 3, "the subscriber saw the run progress, not only its end"
    assert final.todos
    assert final.sub_agent_executions
    assert all(t.status == enum_pb2.TOOL_CALL_COMPLETED for t in final.tool_calls)
    system = [m.content for m in final.messages if m.type == enum_pb2.MESSAGE_SYSTEM]
    assert any("Sandbox" in text for text in system), "the sandbox's isolation is reported"

    live = await loop.live_events(first.metadata.id)
    kinds = {event["type"] for event in live}
    assert {"token", "tool_start", "tool_end", "todo", "sub_agent", "phase", "end"} <= kinds
    phases = [event["phase"] for event in live if event["type"] == "phase"]
    assert phases == ["EXECUTION_IN_PROGRESS", "EXECUTION_COMPLETED"]
    streamed = "".join(e["text"] for e in live if e["type"] == "token")
    assert final.messages[-1].content in streamed, "the final answer streamed token by token"

    session_id = first.spec.session_id
    session = await loop.client.get_session(session_id)
    assert session.spec.thread_id == f"thread-{session_id}"
    assert session.spec.sandbox_id
    workspace = loop.sandboxes / session.spec.sandbox_id
    assert (workspace / "notes.md").is_file(), "the agent's file landed in the session sandbox"

    second = await loop.client.create_execution(
        "What did I ask you before?", session_id=session_id, model_name="scripted:memory"
    )
    second_final = (await loop.follow(second.metadata.id))[-1].status
    assert second_final.phase == enum_pb2.EXECUTION_COMPLETED
    answer = [m for m in second_final.messages if m.type == enum_pb2.MESSAGE_AI][-1].content
    assert "Plan the work" in answer, "the second turn remembers the first"
    assert (workspace / "notes.md").is_file(), "files persist across the session's turns"

    await loop.client.session_commands.delete(
        __import__("ai.stigmer.agentic.session.v1.io_pb2", fromlist=["SessionId"]).SessionId(
            value=session_id
        )
    )
    async with asyncio.timeout(60):
        while workspace.exists():
            await asyncio.sleep(0.2)


async def _last_heartbeat(temporal: Client, execution_id: str) -> datetime | None:
    description = await temporal.get_workflow_handle(workflow_id(execution_id)).describe()
    for pending in description.raw_description.pending_activities:
        if pending.HasField("last_heartbeat_time"):
            return pending.last_heartbeat_time.ToDatetime()
    return None


async def test_a_cancel_reaches_a_running_execution_within_a_heartbeat_interval(
    stack: Endpoints, tmp_path: Path
) -> None:
    """Temporal hands a cancel to an activity only in a heartbeat's reply. The worker beats every
    5 s, or a third of the activity's heartbeat timeout when that is shorter (the stub here sets
    5 s). A cancel made right after a beat was recorded still lands within seconds, and the
    attempt is not timed out while the cancelled run pushes its last status."""
    async with running_loop(stack, tmp_path, STIGMER_SCRIPTED_TOKEN_DELAY_MS="30") as loop:
        agent = await loop.client.create_agent(
            "long-agent", instructions="You work step by step.\nscript: long:60"
        )
        created = await loop.client.create_execution("Work it through", agent_id=agent.metadata.id)
        execution_id = created.metadata.id
        temporal = await Client.connect(stack.temporal_address)
        async with asyncio.timeout(60):
            while (first := await _last_heartbeat(temporal, execution_id)) is None:
                await asyncio.sleep(0.2)
            while await _last_heartbeat(temporal, execution_id) == first:
                await asyncio.sleep(0.2)
        began = time.monotonic()
        ended = await loop.client.cancel(execution_id)
        waited = time.monotonic() - began

    assert ended.status.phase == enum_pb2.EXECUTION_CANCELLED, (
        f"ended {enum_pb2.ExecutionPhase.Name(ended.status.phase)}: {ended.status.error!r}"
    )
    assert len(ended.status.tool_calls) < 60, "the run was stopped, not finished"
    assert waited < 15, f"the cancel took {waited:.1f} s to reach the running execution"
