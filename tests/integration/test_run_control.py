"""Approval gates and pause, through a real Temporal dev server, the real worker and deep agent.

The orchestrator is the test fake (a real gRPC server) with run control on: it stores what the
runner pushes, and the test records a person's decision on the stored call (`fake.decide`) the
way the orchestrator's `submitApproval` does, then signals the test workflow, which calls
ExecuteGraphton again. The scripted model plays `approval` (asks to run `execute` with
`rm -rf build && echo cleaned`, then answers with exactly what the tool returned).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devstack import Endpoints
from tests.adapters.fake_orchestrator import FakeOrchestrator, start_fake_orchestrator
from tests.integration.invoke_workflow import InvokeWithGatesForTest
from worker import app
from worker.agent.scripted import APPROVAL_COMMAND
from worker.converter import DATA_CONVERTER
from worker.domain.approvals import SKIPPED_RESULT
from worker.settings import Settings, load_settings

M = TypeVar("M", bound=Message)


def _msg(cls: type[M], **fields: Any) -> M:
    """A proto message from plain values (ProtoJSON rules), typed as the message."""
    return json_format.ParseDict(fields, cls())


pytestmark = pytest.mark.integration

WAITING = enum_pb2.EXECUTION_WAITING_FOR_APPROVAL
ECHO_SERVER = str(Path(__file__).parents[1] / "mcp" / "fixtures" / "echo_server.py")


@dataclass
class Harness:
    client: Client
    fake: FakeOrchestrator
    queue: str
    workspace_root: Path
    worker: WorkerProcess

    async def restart_worker(self) -> None:
        """Stop the worker and start a new one on the same data (checkpoints, sandboxes)."""
        await self.worker.stop()
        self.worker = WorkerProcess.start(self.worker.settings)

    def agent(
        self,
        session_id: str,
        script: str,
        policies: Sequence[tuple[str, str]] = (),
        mcp_server: str = "",
    ) -> None:
        agent_id = "agt-" + session_id
        self.fake.agents[agent_id] = _msg(
            agent_api.Agent,
            metadata={"id": agent_id, "name": "gated"},
            spec={
                "instructions": f"You are a careful engineer.\nscript: {script}",
                "tool_approvals": [{"tool": t, "message": m} for t, m in policies],
            },
        )
        if mcp_server:
            self.fake.agents[agent_id].spec.mcp_servers.add(
                name=mcp_server,
                stdio={"command": sys.executable, "args": [ECHO_SERVER, "stdio"]},
                enabled_tools=["echo"],
            )
        instance_id = "ain-" + session_id
        self.fake.instances[instance_id] = _msg(
            instance_api.AgentInstance, metadata={"id": instance_id}, spec={"agent_id": agent_id}
        )
        self.fake.sessions[session_id] = _msg(
            session_api.Session,
            metadata={"id": session_id},
            spec={"agent_instance_id": instance_id},
        )

    async def start(
        self,
        execution_id: str,
        session_id: str,
        *,
        auto_approve_all: bool = False,
        run: int = 1,
    ) -> WorkflowHandle[InvokeWithGatesForTest, execution_api.AgentExecutionStatus]:
        execution = _msg(
            execution_api.AgentExecution,
            api_version="agentic.stigmer.ai/v1",
            kind="AgentExecution",
            metadata={"id": execution_id},
            spec={
                "session_id": session_id,
                "message": "Clean the build directory.",
                "auto_approve_all": auto_approve_all,
            },
        )
        return await self.launch(execution, run)

    async def launch(
        self, execution: execution_api.AgentExecution, run: int = 1
    ) -> WorkflowHandle[InvokeWithGatesForTest, execution_api.AgentExecutionStatus]:
        execution_id = execution.metadata.id
        if execution_id not in self.fake.executions:
            stored = execution_api.AgentExecution()
            stored.CopyFrom(execution)  # the orchestrator stores it at create time
            self.fake.executions[execution_id] = stored
        return await self.client.start_workflow(
            InvokeWithGatesForTest.run,
            args=[execution, self.queue],
            id=f"test/run-control/{execution_id}/{run}",
            task_queue=self.queue + "-workflows",
        )

    def stored(self, execution_id: str) -> execution_api.AgentExecutionStatus:
        return self.fake.executions[execution_id].status

    async def until(
        self, execution_id: str, check: Callable[[execution_api.AgentExecutionStatus], bool]
    ) -> execution_api.AgentExecutionStatus:
        for _ in range(600):
            found = self.fake.executions.get(execution_id)
            if found is not None and check(found.status):
                return found.status
            await asyncio.sleep(0.1)
        raise AssertionError(f"{execution_id}: the stored status never matched")

    async def waiting(self, execution_id: str, count: int = 1) -> list[execution_api.ToolCall]:
        status = await self.until(
            execution_id,
            lambda s: (
                s.phase == WAITING
                and len(
                    [c for c in s.tool_calls if c.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL]
                )
                >= count
            ),
        )
        return [c for c in status.tool_calls if c.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL]

    def updates(self, execution_id: str) -> list[execution_api.AgentExecutionStatus]:
        return [
            c.request.status
            for c in self.fake.calls
            if c.method == "updateStatus" and c.request.execution_id == execution_id
        ]


@dataclass
class WorkerProcess:
    """The worker as `main.py` composes it, in this process."""

    settings: Settings
    stopping: asyncio.Event
    task: asyncio.Task[None]

    @classmethod
    def start(cls, settings: Settings) -> WorkerProcess:
        stopping = asyncio.Event()
        return cls(settings, stopping, asyncio.create_task(app.run(settings, stop=stopping)))

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 30)


@contextlib.asynccontextmanager
async def running(
    stack: Endpoints, tmp_path: Path, extra: dict[str, str] | None = None
) -> AsyncIterator[Harness]:
    fake = FakeOrchestrator(run_control=True)
    server, port = await start_fake_orchestrator(fake)
    queue = "rc-" + uuid.uuid4().hex[:8]
    settings = load_settings(
        {
            "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": queue,
            "STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{port}",
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
            "HEALTH_PORT": "0",
            "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "5",
            **(extra or {}),
        }
    )
    client = await Client.connect(stack.temporal_address, data_converter=DATA_CONVERTER)
    harness = Harness(client, fake, queue, tmp_path, WorkerProcess.start(settings))
    async with Worker(
        client,
        task_queue=queue + "-workflows",
        workflows=[InvokeWithGatesForTest],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield harness
    await harness.worker.stop()
    await server.stop(None)


@pytest.fixture
async def harness(stack: Endpoints, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(stack, tmp_path) as ready:
        yield ready


# An execution as a TypeScript orchestrator of the January contract sends it: ProtoJSON with
# camelCase names, enum names, and default values written out.
TS_EXECUTION = {
    "apiVersion": "agentic.stigmer.ai/v1",
    "kind": "AgentExecution",
    "metadata": {"id": "aex-ts", "name": "", "labels": {}, "annotations": {}, "tags": []},
    "spec": {
        "sessionId": "ses-ts",
        "agentId": "",
        "message": "Clean the build directory.",
        "executionConfig": {"modelName": ""},
        "runtimeEnv": {},
    },
    "status": {"phase": "EXECUTION_PENDING", "messages": [], "toolCalls": [], "error": ""},
}


def answer(status: execution_api.AgentExecutionStatus) -> str:
    return [m for m in status.messages if m.type == enum_pb2.MESSAGE_AI][-1].content


def only_call(status: execution_api.AgentExecutionStatus, name: str) -> execution_api.ToolCall:
    calls = [c for c in status.tool_calls if c.name == name]
    assert len(calls) == 1, [(c.name, c.status) for c in status.tool_calls]
    return calls[0]


async def test_approved_call_waits_without_running_then_runs(harness: Harness) -> None:
    harness.agent("ses-ok", "approval", [("execute", "Run `{command}` in the workspace?")])
    handle = await harness.start("aex-ok", "ses-ok")

    (call,) = await harness.waiting("aex-ok")
    assert call.name == "execute"
    assert call.requires_approval
    assert call.approval_message == f"Run `{APPROVAL_COMMAND}` in the workspace?"
    assert call.approval_requested_at
    assert not call.result and not call.started_at, "nothing ran while waiting"
    # The attempt ends: the workflow waits with no activity running. The waiting status is
    # stored before the activity's completion reaches Temporal, so give that a moment.
    async with asyncio.timeout(10):
        while (await handle.describe()).raw_description.pending_activities:
            await asyncio.sleep(0.1)
    assert not [c for c in harness.updates("aex-ok")[-1].tool_calls if c.started_at]

    harness.fake.decide("aex-ok", call.id, enum_pb2.APPROVAL_ACTION_APPROVE, by="ana")
    await handle.signal(InvokeWithGatesForTest.decided)
    final = await handle.result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    done = only_call(final, "execute")
    assert done.status == enum_pb2.TOOL_CALL_COMPLETED
    assert done.result.strip() == "cleaned"
    assert done.approval_action == enum_pb2.APPROVAL_ACTION_APPROVE
    assert done.approved_by == "ana"
    assert done.approval_message == call.approval_message
    assert done.approval_requested_at == call.approval_requested_at
    assert answer(final).strip() == "cleaned"


async def test_the_attempt_returns_only_the_waiting_calls(harness: Harness) -> None:
    harness.agent("ses-ret", "approval", [("exec*", "")])
    handle = await harness.start("aex-ret", "ses-ret")
    (call,) = await harness.waiting("aex-ret")
    assert call.approval_message == "The agent wants to run execute."
    history = [e async for e in handle.fetch_history_events()]
    completed = [e for e in history if e.HasField("activity_task_completed_event_attributes")]
    payload = completed[-1].activity_task_completed_event_attributes.result.payloads[0]
    returned = DATA_CONVERTER.payload_converter.from_payload(
        payload, execution_api.AgentExecutionStatus
    )
    assert returned.phase == WAITING
    assert [c.id for c in returned.tool_calls] == [call.id]
    assert not returned.messages, "the full status went through updateStatus, not the return"
    await handle.terminate()


async def test_a_run_waiting_for_approval_survives_a_worker_restart(harness: Harness) -> None:
    harness.agent("ses-restart", "approval", [("execute", "")])
    handle = await harness.start("aex-restart", "ses-restart")
    (call,) = await harness.waiting("aex-restart")
    await harness.restart_worker()
    harness.fake.decide("aex-restart", call.id, enum_pb2.APPROVAL_ACTION_APPROVE)
    await handle.signal(InvokeWithGatesForTest.decided)
    final = await handle.result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert only_call(final, "execute").status == enum_pb2.TOOL_CALL_COMPLETED
    assert answer(final).strip() == "cleaned"


async def test_rejected_call_gives_the_model_the_comment(harness: Harness) -> None:
    harness.agent("ses-no", "approval", [("execute", "")])
    handle = await harness.start("aex-no", "ses-no")
    (call,) = await harness.waiting("aex-no")
    comment = "Not on Fridays: the build directory is in use."
    harness.fake.decide("aex-no", call.id, enum_pb2.APPROVAL_ACTION_REJECT, comment)
    await handle.signal(InvokeWithGatesForTest.decided)
    final = await handle.result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    rejected = only_call(final, "execute")
    assert rejected.status == enum_pb2.TOOL_CALL_SKIPPED
    assert rejected.approval_action == enum_pb2.APPROVAL_ACTION_REJECT
    assert rejected.result == comment
    assert not rejected.error
    assert answer(final) == comment


async def test_skipped_call_tells_the_model_it_was_skipped(harness: Harness) -> None:
    harness.agent("ses-skip", "approval", [("execute", "")])
    handle = await harness.start("aex-skip", "ses-skip")
    (call,) = await harness.waiting("aex-skip")
    harness.fake.decide("aex-skip", call.id, enum_pb2.APPROVAL_ACTION_SKIP)
    await handle.signal(InvokeWithGatesForTest.decided)
    final = await handle.result()

    skipped = only_call(final, "execute")
    assert skipped.status == enum_pb2.TOOL_CALL_SKIPPED
    assert skipped.approval_action == enum_pb2.APPROVAL_ACTION_SKIP
    assert answer(final) == SKIPPED_RESULT


async def test_approve_all_stops_asking_for_that_tool(harness: Harness) -> None:
    harness.agent("ses-all", "long:3", [("execute", "Step: {command}")])
    handle = await harness.start("aex-all", "ses-all")
    (first,) = await harness.waiting("aex-all")
    harness.fake.decide("aex-all", first.id, enum_pb2.APPROVAL_ACTION_APPROVE_ALL)
    await handle.signal(InvokeWithGatesForTest.decided)
    final = await handle.result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    runs = [c for c in final.tool_calls if c.name == "execute"]
    assert len(runs) == 3
    assert all(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in runs)
    assert [c.requires_approval for c in runs] == [True, False, False]
    assert runs[0].approval_action == enum_pb2.APPROVAL_ACTION_APPROVE_ALL
    waits = [u for u in harness.updates("aex-all") if u.phase == WAITING]
    assert {c.id for u in waits for c in u.tool_calls if c.requires_approval} == {first.id}


async def test_an_mcp_tool_is_gated_by_server_and_tool(harness: Harness) -> None:
    harness.agent("ses-mcp", "mcp-echo", [("tools/ech*", "Echo {text}?")], mcp_server="tools")
    handle = await harness.start("aex-mcp", "ses-mcp")
    (call,) = await harness.waiting("aex-mcp")
    assert (call.name, call.approval_message) == ("echo", "Echo hello from MCP?")
    harness.fake.decide("aex-mcp", call.id, enum_pb2.APPROVAL_ACTION_APPROVE)
    await handle.signal(InvokeWithGatesForTest.decided)
    final = await handle.result()
    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert "hello from MCP" in answer(final)


async def test_a_policy_for_another_server_does_not_gate_the_tool(harness: Harness) -> None:
    harness.agent("ses-mcp2", "mcp-echo", [("other/echo", "")], mcp_server="tools")
    final = await (await harness.start("aex-mcp2", "ses-mcp2")).result()
    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert not any(c.requires_approval for c in final.tool_calls)
    assert "hello from MCP" in answer(final)


async def test_auto_approve_all_waives_every_gate(harness: Harness) -> None:
    harness.agent("ses-auto", "approval", [("*", "")])
    handle = await harness.start("aex-auto", "ses-auto", auto_approve_all=True)
    final = await handle.result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert answer(final).strip() == "cleaned"
    assert not any(c.requires_approval for c in final.tool_calls)
    assert all(u.phase != WAITING for u in harness.updates("aex-auto"))


async def test_a_sub_agents_call_is_gated_and_resumes_inside_the_sub_agent(
    harness: Harness,
) -> None:
    # `delegate` starts two general-purpose sub-agents at once; each lists the workspace.
    harness.agent("ses-sub", "delegate", [("ls", "List {path}?")])
    handle = await harness.start("aex-sub", "ses-sub")
    calls = await harness.waiting("aex-sub", count=2)
    assert len(calls) == 2
    status = harness.stored("aex-sub")
    tasks = {s.id for s in status.sub_agent_executions}
    for call in calls:
        assert call.component_metadata.metadata["sub_agent_id"] in tasks
        assert call.approval_message == "List /?"
    assert all(s.status == enum_pb2.SUB_AGENT_IN_PROGRESS for s in status.sub_agent_executions)

    approved, rejected = calls
    harness.fake.decide("aex-sub", approved.id, enum_pb2.APPROVAL_ACTION_APPROVE)
    harness.fake.decide("aex-sub", rejected.id, enum_pb2.APPROVAL_ACTION_REJECT, "not that one")
    await handle.signal(InvokeWithGatesForTest.decided)
    final = await handle.result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    by_id = {c.id: c for c in final.tool_calls}
    assert by_id[approved.id].status == enum_pb2.TOOL_CALL_COMPLETED
    assert by_id[rejected.id].status == enum_pb2.TOOL_CALL_SKIPPED
    assert by_id[rejected.id].result == "not that one"
    for decided in (approved, rejected):
        assert by_id[decided.id].component_metadata.metadata["sub_agent_id"] in tasks, (
            "a resumed sub-agent's call stays under its sub-agent"
        )
    assert len(final.sub_agent_executions) == 2
    assert all(s.status == enum_pb2.SUB_AGENT_COMPLETED for s in final.sub_agent_executions)
    outputs = " ".join(s.output for s in final.sub_agent_executions)
    assert "not that one" in outputs, "the rejected sub-agent saw the comment as its result"


async def test_a_gated_call_fails_closed_under_a_january_orchestrator(harness: Harness) -> None:
    harness.fake.run_control = False
    harness.agent("ses-jan", "approval", [("execute", "")])
    handle = await harness.start("aex-jan", "ses-jan")
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    cause: BaseException | None = failure.value.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause if isinstance(cause, FailureError) else None
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ApprovalsUnsupported"
    assert cause.non_retryable
    assert "cannot approve tools" in cause.message
    final = harness.stored("aex-jan")
    assert final.phase == enum_pb2.EXECUTION_FAILED
    assert "cannot approve tools" in final.error
    for update in harness.updates("aex-jan"):
        assert update.phase <= enum_pb2.EXECUTION_CANCELLED, "no §7 phase to a January server"
        for call in update.tool_calls:
            assert call.status <= enum_pb2.TOOL_CALL_FAILED, "no §7 tool status either"
            assert not call.requires_approval


STEPS = 12


def _shell_log(root: Path) -> list[str]:
    """The words the `long` script's shell steps appended to the session's workspace log."""
    (log_file,) = root.rglob("long-run.log")
    return log_file.read_text().split()


async def test_a_paused_run_stops_at_a_safe_point_and_resumes_every_step_once(
    stack: Endpoints, tmp_path: Path
) -> None:
    # Slow tokens, so the pause lands in the middle of the run.
    async with running(stack, tmp_path, {"STIGMER_SCRIPTED_TOKEN_DELAY_MS": "25"}) as harness:
        harness.agent("ses-pause", f"long:{STEPS}")
        first = await harness.start("aex-pause", "ses-pause")
        await harness.until(
            "aex-pause",
            lambda s: sum(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in s.tool_calls) >= 2,
        )
        harness.fake.request_pause("aex-pause")
        await first.cancel()
        paused = await harness.until("aex-pause", lambda s: s.phase == enum_pb2.EXECUTION_PAUSED)
        assert not paused.error
        assert paused.tool_calls
        assert all(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in paused.tool_calls), (
            "stopped at a safe point: no call outstanding"
        )
        done_before = len(paused.tool_calls)
        assert done_before < STEPS
        # Nothing runs while paused.
        pushed = len(harness.updates("aex-pause"))
        await asyncio.sleep(3)
        assert len(harness.updates("aex-pause")) == pushed
        assert harness.stored("aex-pause").phase == enum_pb2.EXECUTION_PAUSED

        del harness.fake.executions["aex-pause"].metadata.annotations[
            "stigmer.ai/requested-transition"
        ]
        final = await (await harness.start("aex-pause", "ses-pause", run=2)).result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    steps = [c for c in final.tool_calls if c.name == "execute"]
    assert len(steps) == STEPS
    assert all(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in steps)
    assert _shell_log(tmp_path) == [w for n in range(1, STEPS + 1) for w in ("step", str(n))], (
        "every step ran exactly once across the pause"
    )


async def test_a_january_typescript_orchestrator_drives_an_ungated_agent_as_before(
    harness: Harness,
) -> None:
    harness.fake.run_control = False
    harness.agent("ses-ts", "approval")
    execution = json_format.Parse(json.dumps(TS_EXECUTION), execution_api.AgentExecution())
    final = await (await harness.launch(execution)).result()

    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert answer(final).strip() == "cleaned"
    updates = harness.updates("aex-ts")
    assert updates
    for update in updates:
        assert update.phase <= enum_pb2.EXECUTION_CANCELLED
        calls = [*update.tool_calls, *(c for m in update.messages for c in m.tool_calls)]
        for call in calls:
            assert call.status <= enum_pb2.TOOL_CALL_FAILED
            assert max(f.number for f, _ in call.ListFields()) < 10, "no §7 ToolCall field"
    assert not [c for c in harness.fake.calls if c.method == "ExecutionQuery.get"], (
        "an ungated run asks the orchestrator nothing new"
    )
