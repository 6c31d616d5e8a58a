"""The worker against a real Temporal dev server and a gRPC orchestrator that records updates.

A workflow calls EnsureThread and ExecuteGraphton by name with proto payloads; the worker runs the
real Graphton deep agent with the scripted model; every `updateStatus` lands in the fake
orchestrator (a real grpc.aio server), which is how these tests see what the orchestrator saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1.spec_pb2 import AgentSpec
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1.spec_pb2 import AgentExecutionSpec
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.agentinstance.v1.spec_pb2 import AgentInstanceSpec
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.session.v1.spec_pb2 import SessionSpec
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devstack import Endpoints
from tests.adapters.fake_orchestrator import FakeOrchestrator, start_fake_orchestrator
from tests.integration.invoke_workflow import InvokeForTest
from worker import app
from worker.activities.result import without_additions
from worker.converter import DATA_CONVERTER
from worker.logs import MASK
from worker.settings import load_settings

pytestmark = pytest.mark.integration


@dataclass
class Harness:
    client: Client
    fake: FakeOrchestrator
    queue: str

    async def invoke(
        self,
        execution_id: str,
        session_id: str,
        message: str,
        *,
        secrets: dict[str, str] | None = None,
    ) -> execution_api.AgentExecutionStatus:
        execution = execution_api.AgentExecution(
            api_version="agentic.stigmer.ai/v1",
            kind="AgentExecution",
            metadata=ApiResourceMetadata(id=execution_id),
            spec=AgentExecutionSpec(session_id=session_id, message=message),
        )
        for name, value in (secrets or {}).items():
            execution.spec.runtime_env[name].value = value
            execution.spec.runtime_env[name].is_secret = True
        return await self.client.execute_workflow(
            InvokeForTest.run,
            args=[execution, self.queue],
            id=f"stigmer/agent-execution/invoke/{execution_id}",
            task_queue=self.queue + "-workflows",
        )

    def updates_for(self, execution_id: str) -> list[execution_api.AgentExecutionStatus]:
        return [
            c.request.status
            for c in self.fake.calls
            if c.method == "updateStatus" and c.request.execution_id == execution_id
        ]


def add_agent(fake: FakeOrchestrator, session_id: str, script: str) -> None:
    fake.agents["agt-1"] = agent_api.Agent(
        metadata=ApiResourceMetadata(id="agt-1", name="demo"),
        spec=AgentSpec(instructions=f"You are a helpful engineer.\nscript: {script}"),
    )
    fake.instances["ain-1"] = instance_api.AgentInstance(
        metadata=ApiResourceMetadata(id="ain-1"), spec=AgentInstanceSpec(agent_id="agt-1")
    )
    fake.sessions[session_id] = session_api.Session(
        metadata=ApiResourceMetadata(id=session_id),
        spec=SessionSpec(agent_instance_id="ain-1"),
    )


@pytest.fixture
async def harness(stack: Endpoints, tmp_path: Path) -> AsyncIterator[Harness]:
    fake = FakeOrchestrator()
    server, port = await start_fake_orchestrator(fake)
    queue = "it-" + uuid.uuid4().hex[:8]
    settings = load_settings(
        {
            "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": queue,
            "STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{port}",
            "STIGMER_API_KEY": "integration-key",
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
            "HEALTH_PORT": "0",
            "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "5",
        }
    )
    stop = asyncio.Event()
    worker_task = asyncio.create_task(app.run(settings, stop=stop))
    client = await Client.connect(stack.temporal_address, data_converter=DATA_CONVERTER)
    async with Worker(
        client,
        task_queue=queue + "-workflows",
        workflows=[InvokeForTest],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield Harness(client=client, fake=fake, queue=queue)
    stop.set()
    await asyncio.wait_for(worker_task, 30)
    await server.stop(None)


async def test_demo_run_completes_with_todos_tools_and_sub_agent(harness: Harness) -> None:
    add_agent(harness.fake, "ses-demo", "demo")
    status = await harness.invoke("aex-demo1", "ses-demo", "Write a short report on the repo")

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert status.messages[0].type == enum_pb2.MESSAGE_HUMAN
    ai_turns = [m for m in status.messages if m.type == enum_pb2.MESSAGE_AI]
    assert len(ai_turns) >= 3, "one AI message per model turn"
    assert status.todos, "write_todos populated the todo list"
    assert status.tool_calls
    assert all(t.status == enum_pb2.TOOL_CALL_COMPLETED for t in status.tool_calls)
    assert all(t.result and not t.result.startswith("content=") for t in status.tool_calls)
    assert status.sub_agent_executions
    assert status.sub_agent_executions[0].status == enum_pb2.SUB_AGENT_COMPLETED

    updates = harness.updates_for("aex-demo1")
    assert updates[0].phase == enum_pb2.EXECUTION_IN_PROGRESS
    assert without_additions(updates[-1]) == status, (
        "the orchestrator holds the returned final status (and the contract's additions)"
    )
    assert len(updates) >= 3, "status was pushed progressively"
    # Every update carries the complete lists: they never shrink.
    sizes = [len(u.messages) for u in updates]
    assert sizes == sorted(sizes)
    assert harness.fake.sessions["ses-demo"].spec.thread_id == "thread-ses-demo"
    auth = {c.metadata.get("authorization") for c in harness.fake.calls}
    assert auth == {"Bearer integration-key"}


async def test_second_turn_in_the_session_remembers_the_first(harness: Harness) -> None:
    add_agent(harness.fake, "ses-mem", "memory")
    first = await harness.invoke("aex-mem1", "ses-mem", "My favourite colour is teal.")
    assert first.phase == enum_pb2.EXECUTION_COMPLETED
    second = await harness.invoke("aex-mem2", "ses-mem", "What did I tell you before?")
    assert second.phase == enum_pb2.EXECUTION_COMPLETED
    answer = [m for m in second.messages if m.type == enum_pb2.MESSAGE_AI][-1].content
    assert "teal" in answer


async def test_failing_tool_is_failed_and_the_run_still_completes(harness: Harness) -> None:
    add_agent(harness.fake, "ses-fail", "fail-tool")
    status = await harness.invoke("aex-fail1", "ses-fail", "Read the missing file")
    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    failed = [t for t in status.tool_calls if t.status == enum_pb2.TOOL_CALL_FAILED]
    assert failed and failed[0].error


def sqlite_contents(path: Path) -> bytes:
    """Every value of every table, read through SQLite (committed WAL pages included, and no
    value split across database pages)."""
    parts: list[bytes] = []
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from the file
                for value in row:
                    parts.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(parts)


async def test_secrets_stay_out_of_the_sqlite_checkpoints(harness: Harness, tmp_path: Path) -> None:
    # The secret names a file the demo script lists and is in the agent's environment: the
    # tool results the checkpointer stores must hold the mask, never the value.
    secret = "rt-secret-" + uuid.uuid4().hex
    add_agent(harness.fake, "ses-secret", "demo")
    workspace = tmp_path / "sandboxes" / "ses-secret"
    workspace.mkdir(parents=True)
    (workspace / f"credentials-{secret}.txt").write_text(f"token={secret}\n")

    status = await harness.invoke(
        "aex-secret1", "ses-secret", "Look around and report", secrets={"API_TOKEN": secret}
    )

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    listings = [t.result for t in status.tool_calls if t.name in ("ls", "execute")]
    assert any(f"credentials-{MASK}.txt" in text for text in listings), listings
    stored = sqlite_contents(tmp_path / "checkpoints.sqlite")
    assert b"credentials-" in stored, "the listing was checkpointed"
    assert secret.encode() not in stored
