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

Run control (contract §7), playing the real runner's agreements (docs/run-control.md):

- `gate` / `gate2`: the first attempt stops at an approval gate on one call (`gate2`: two calls
  of `execute` in one step), pushes WAITING_APPROVAL and returns only the waiting calls; the next
  attempt reads the decisions from the stub (`get`) and ends with what each decision means.
  `gate-slow`: as `gate`, the resumed attempt working 3 s before its first update.
- `pausable`: heartbeats with a RUNNING tool call until cancelled; cancelled with the pause
  marker on the execution it pushes PAUSED, otherwise CANCELLED. A later attempt completes.
- `lost-once`: the first attempt stops heartbeating (a dead worker); a later one completes.
- `silent-once`: the first attempt heartbeats but never updates the status (a stalled run); a
  later attempt (after `recover`) completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import struct_pb2
from temporalio import activity
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from stigmer_cli.client import StigmerClient
from stigmer_stub.converter import DATA_CONVERTER

Phase = enum_pb2.ExecutionPhase
MessageType = enum_pb2.MessageType
ToolStatus = enum_pb2.ToolCallStatus
SubStatus = enum_pb2.SubAgentStatus
Action = enum_pb2.ApprovalAction
PAUSE_MARKER = "stigmer.ai/requested-transition"


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
    attempts: dict[str, int] = field(default_factory=dict)
    """ExecuteGraphton invocations per execution id."""
    decisions_seen: dict[str, list[api_pb2.ToolCall]] = field(default_factory=dict)

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
        attempt = self.attempts[execution_id] = self.attempts.get(execution_id, 0) + 1
        if script in ("gate", "gate2", "gate-slow"):
            return await self._gate(execution, calls=2 if script == "gate2" else 1)
        if script in ("pausable", "lost-once", "silent-once") and attempt == 1:
            await self._first_attempt(execution, script)
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

    async def _gate(
        self, execution: api_pb2.AgentExecution, *, calls: int
    ) -> api_pb2.AgentExecutionStatus:
        execution_id = execution.metadata.id
        ids = [f"call-{n}" for n in range(1, calls + 1)]
        # Like the real runner: whether the run is at its gate or past it is read from the
        # orchestrator (a restarted runner knows nothing else).
        stored = await self.stub.get_execution(execution_id)
        recorded = [c for c in stored.status.tool_calls if c.id in ids]
        if not recorded:
            waiting = [
                api_pb2.ToolCall(
                    id=call_id,
                    name="execute",
                    args=_args({"command": "rm -rf build && echo cleaned"}),
                    status=ToolStatus.TOOL_CALL_WAITING_APPROVAL,
                    requires_approval=True,
                    approval_message="Run `rm -rf build && echo cleaned`?",
                    approval_requested_at="2026-01-01T00:00:01Z",
                )
                for call_id in ids
            ]
            status = api_pb2.AgentExecutionStatus(
                phase=Phase.EXECUTION_WAITING_FOR_APPROVAL,
                messages=transcript(execution),
                tool_calls=waiting,
                started_at="2026-01-01T00:00:00Z",
            )
            await self.stub.update_status(execution_id, status)
            # Agreed: only the phase, started_at and the waiting calls come back.
            return api_pb2.AgentExecutionStatus(
                phase=status.phase, started_at=status.started_at, tool_calls=waiting
            )
        decided = recorded
        if execution.spec.message == "gate-slow":
            # The resumed attempt works a while (heartbeating) before its first update.
            for _ in range(30):
                activity.heartbeat("resuming")
                await asyncio.sleep(0.1)
        self.decisions_seen[execution_id] = decided
        ended: list[api_pb2.ToolCall] = []
        answer: list[str] = []
        for call in decided:
            done = api_pb2.ToolCall()
            done.CopyFrom(call)
            if call.approval_action in (
                Action.APPROVAL_ACTION_APPROVE,
                Action.APPROVAL_ACTION_APPROVE_ALL,
            ):
                done.status = ToolStatus.TOOL_CALL_COMPLETED
                done.result = "cleaned"
            else:
                done.status = ToolStatus.TOOL_CALL_SKIPPED
                done.result = call.result or "skipped"
            answer.append(done.result)
            ended.append(done)
        final = api_pb2.AgentExecutionStatus(
            phase=Phase.EXECUTION_COMPLETED,
            messages=[
                *transcript(execution),
                api_pb2.AgentMessage(type=MessageType.MESSAGE_AI, content="; ".join(answer)),
            ],
            tool_calls=ended,
            completed_at="2026-01-01T00:00:05Z",
        )
        await self.stub.update_status(execution_id, final)
        return final

    async def _first_attempt(self, execution: api_pb2.AgentExecution, script: str) -> None:
        """The first attempt of a run-control script; returns only if the script says the
        attempt goes on to complete (it never does: each one ends by cancel or timeout)."""
        execution_id = execution.metadata.id
        running = api_pb2.AgentExecutionStatus(
            phase=Phase.EXECUTION_IN_PROGRESS,
            messages=transcript(execution),
            tool_calls=[
                api_pb2.ToolCall(id="call-1", name="ls", status=ToolStatus.TOOL_CALL_RUNNING)
            ],
            sub_agent_executions=[
                api_pb2.SubAgentExecution(
                    id="sub-1", name="researcher", status=SubStatus.SUB_AGENT_IN_PROGRESS
                )
            ],
            started_at="2026-01-01T00:00:00Z",
        )
        if script != "silent-once":
            await self.stub.update_status(execution_id, running)
        if script == "lost-once":
            # A worker that died: no heartbeat, and nothing more from it.
            await asyncio.sleep(3600)
        try:
            while True:
                activity.heartbeat("working")
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            self.cancelled.append(execution_id)
            stored = await self.stub.get_execution(execution_id)
            paused = stored.metadata.annotations.get(PAUSE_MARKER) == "pause"
            ending = api_pb2.AgentExecutionStatus(
                phase=Phase.EXECUTION_PAUSED if paused else Phase.EXECUTION_CANCELLED
            )
            if paused:
                # Stopped at a safe point: the call in flight finished first.
                done = api_pb2.ToolCall()
                done.CopyFrom(running.tool_calls[0])
                done.status = ToolStatus.TOOL_CALL_COMPLETED
                ending.tool_calls.append(done)
            await self.stub.update_status(execution_id, ending)
            raise


def _args(values: dict[str, str]) -> struct_pb2.Struct:
    args = struct_pb2.Struct()
    args.update(values)
    return args


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
