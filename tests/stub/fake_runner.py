"""A fake agent runner: `EnsureThread` and `ExecuteGraphton` on a test task queue.

It plays the runner's side of the contract just enough to drive the stub's workflow: it pushes
progress through the stub's `updateStatus` like the real runner and returns a final status. What
it does is chosen by the execution's message:

- `complete`: pushes IN_PROGRESS with a transcript, returns COMPLETED with the full transcript.
- `fail`: pushes the transcript, then fails with a non-retryable `ApplicationError`.
- `flaky`: the first attempt fails with a retryable error, the second completes.
- `hang`: pushes the transcript, then heartbeats until cancelled (and re-raises the cancel).
- `in-progress`: returns a status still saying IN_PROGRESS (the workflow completes it), with one
  more message than it pushed.
- `slim`: pushes the final transcript, returns a slim COMPLETED status (no lists).
- `stale`: pushes the final transcript, returns a COMPLETED status whose lists hold one message
  and one tool call (what must never replace the transcript).
- `terminated`: returns a TERMINATED status (no lists).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from temporalio import activity
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from stigmer_cli.client import StigmerClient
from stigmer_stub.converter import DATA_CONVERTER

Phase = enum_pb2.ExecutionPhase
MessageType = enum_pb2.MessageType


def transcript(execution: api_pb2.AgentExecution) -> list[api_pb2.AgentMessage]:
    return [
        api_pb2.AgentMessage(type=MessageType.MESSAGE_HUMAN, content=execution.spec.message),
        api_pb2.AgentMessage(type=MessageType.MESSAGE_AI, content="working on it"),
    ]


@dataclass
class FakeRunner:
    stub: StigmerClient
    ensure_thread_calls: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    @activity.defn(name="EnsureThread")
    async def ensure_thread(self, session_id: str, agent_id: str) -> str:
        self.ensure_thread_calls.append((session_id, agent_id))
        return f"thread-{session_id}"

    @activity.defn(name="ExecuteGraphton")
    async def execute_graphton(
        self, execution: api_pb2.AgentExecution, thread_id: str
    ) -> api_pb2.AgentExecutionStatus:
        script = execution.spec.message
        execution_id = execution.metadata.id
        messages = transcript(execution)
        progress = api_pb2.AgentExecutionStatus(
            phase=Phase.EXECUTION_IN_PROGRESS, messages=messages, started_at="2026-01-01T00:00:00Z"
        )
        await self.stub.update_status(execution_id, progress)
        if script == "fail":
            raise ApplicationError(
                "model refused the request", type="ModelError", non_retryable=True
            )
        if script == "flaky" and activity.info().attempt == 1:
            raise ApplicationError("connection reset", type="Transient")
        if script == "hang":
            try:
                while True:
                    activity.heartbeat("still thinking")
                    await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                self.cancelled.append(execution_id)
                raise
        if script == "terminated":
            return api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_TERMINATED, error="stopped")
        final = api_pb2.AgentExecutionStatus()
        final.CopyFrom(progress)
        final.messages.add(type=MessageType.MESSAGE_AI, content=f"done in {thread_id}")
        if script != "in-progress":
            final.phase = Phase.EXECUTION_COMPLETED
            final.completed_at = "2026-01-01T00:00:05Z"
            await self.stub.update_status(execution_id, final)
        if script == "slim":
            return api_pb2.AgentExecutionStatus(
                phase=final.phase, started_at=final.started_at, completed_at=final.completed_at
            )
        if script == "stale":
            stale = api_pb2.AgentExecutionStatus()
            stale.CopyFrom(final)
            del stale.messages[1:]
            stale.tool_calls.add(id="call-1", name="stale")
            return stale
        return final


@asynccontextmanager
async def fake_runner(
    temporal_address: str,
    namespace: str,
    task_queue: str,
    stub_address: str,
    *,
    data_converter: DataConverter = DATA_CONVERTER,
) -> AsyncIterator[FakeRunner]:
    """A running fake runner worker polling `task_queue`."""
    client = await Client.connect(
        temporal_address, namespace=namespace, data_converter=data_converter
    )
    async with StigmerClient(stub_address) as stub:
        runner = FakeRunner(stub)
        worker = Worker(
            client,
            task_queue=task_queue,
            activities=[runner.ensure_thread, runner.execute_graphton],
            # Heartbeats carry the cancellation back; send them promptly in tests.
            max_heartbeat_throttle_interval=timedelta(milliseconds=200),
            default_heartbeat_throttle_interval=timedelta(milliseconds=200),
            graceful_shutdown_timeout=timedelta(seconds=1),
        )
        async with worker:
            yield runner
