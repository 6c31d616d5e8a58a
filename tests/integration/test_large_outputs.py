"""Large outputs through real servers: Temporal, the worker, a local OpenAI-compatible server
streaming the answer, and an orchestrator with or without the content RPCs (contract §7).

- The stub (gRPC + MongoDB-wire + its invoke workflow) stores large contents: a 3 MiB and a
  20 MiB answer each end COMPLETED once the workflow has closed, and the referenced content reads
  back byte for byte; so does a tool reading a 5 MiB workspace file (the scripted model), whose
  result, as bounded by the agent's `read_file`, is stored by reference.
- A January orchestrator (the fake, content RPCs UNIMPLEMENTED): a 3 MiB answer still ends
  COMPLETED with every update under the status budget (the execution passed as a TypeScript
  orchestrator writes it: a hand-made `json/protobuf` payload), and the later upstream signature
  `ExecuteGraphton(execution_id, thread_id)` runs an execution read by id.

Answers are streamed in 64 KiB words, so a 20 MiB answer is a few hundred chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
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
from stigmer_cli.whole import restore_contents, whole_execution
from stigmer_stub.workflow import workflow_id
from tests.adapters.fake_orchestrator import FakeOrchestrator, start_fake_orchestrator
from tests.agent.fake_llm_servers import FakeLlmServer
from tests.integration.invoke_workflow import InvokeByIdForTest, InvokeRawForTest
from tests.integration.test_full_loop import running_loop
from worker import app
from worker.activities.result import without_additions
from worker.converter import DATA_CONVERTER
from worker.settings import load_settings

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def answer_of(size: int, seed: str) -> str:
    """`size` bytes of ASCII in 64 KiB words, distinct per seed."""
    word = (seed * (64 * 1024 // len(seed) + 1))[: 64 * 1024 - 1]
    words = [f"{n:06d}{word[6:]}" for n in range(size // (64 * 1024) + 1)]
    return " ".join(words)[:size]


def llm_env(server: FakeLlmServer) -> dict[str, str]:
    return {
        "STIGMER_LLM_PROVIDER": "openai",
        "STIGMER_LLM_BASE_URL": server.url + "/v1",
        "STIGMER_LLM_MODEL": "gpt-4o-mini",
    }


async def test_large_outputs_end_completed_and_read_back_whole_from_the_stub(
    stack: Endpoints, tmp_path: Path
) -> None:
    # A lower inline bound than the default, so that the workspace read below (Graphton's
    # read_file returns at most about 30,000 characters, however large the file) is uploaded.
    env = {"STIGMER_CONTENT_INLINE_BYTES": "16384"}
    with FakeLlmServer() as llm:
        env.update(llm_env(llm))
        async with running_loop(stack, tmp_path, **env) as loop:
            agent = await loop.client.create_agent("big-agent", instructions="Answer at length.")
            temporal = await Client.connect(stack.temporal_address)

            async def run(model: str = "") -> execution_api.AgentExecution:
                created = await loop.client.create_execution(
                    "Write the report", agent_id=agent.metadata.id, model_name=model
                )
                async with asyncio.timeout(240):
                    await temporal.get_workflow_handle(workflow_id(created.metadata.id)).result()
                stored = await loop.client.get_execution(created.metadata.id)
                assert stored.status.phase == enum_pb2.EXECUTION_COMPLETED, stored.status.error
                return stored

            for size in (3 * MIB, 20 * MIB):
                llm.reply = answer_of(size, f"answer-{size}-")
                stored = await run()
                execution_id = stored.metadata.id
                answer = [m for m in stored.status.messages if m.type == enum_pb2.MESSAGE_AI][-1]
                ref = answer.content_ref
                assert ref.storage_key, "the answer is stored by reference"
                assert ref.size_bytes == size
                assert len(answer.content) <= 4096, "the status carries only a preview"
                whole = await loop.client.get_content(execution_id, ref.storage_key)
                assert whole == llm.reply.encode(), f"{size} bytes read back byte for byte"
                # What `stigmer get ID --json --full` prints: every stored content put back.
                full = await whole_execution(loop.client, execution_id)
                await restore_contents(loop.client, full)
                restored = [m for m in full.status.messages if m.type == enum_pb2.MESSAGE_AI]
                assert restored[-1].content == llm.reply

            # A tool reading a 5 MiB workspace file (the scripted model, through the sandbox).
            stored = await run("scripted:big-read")
            read = next(t for t in stored.status.tool_calls if t.name == "read_file")
            assert read.output_ref.storage_key, "the tool result is stored by reference"
            content = await loop.client.get_content(stored.metadata.id, read.output_ref.storage_key)
            assert hashlib.sha256(content).hexdigest() == read.output_ref.content_hash
            full = await whole_execution(loop.client, stored.metadata.id)
            await restore_contents(loop.client, full)
            read_result = next(t for t in full.status.tool_calls if t.name == "read_file").result
            seen = re.search(r"came back as (\d+) characters", stored.status.messages[-1].content)
            assert seen is not None
            assert len(read_result) == int(seen.group(1)), "the model's view, whole"
            assert read_result.encode() == content


async def test_a_january_orchestrator_gets_bounded_updates_and_the_id_signature_works(
    stack: Endpoints, tmp_path: Path
) -> None:
    fake = FakeOrchestrator()
    fake.agents["agt-1"] = agent_api.Agent(
        metadata=ApiResourceMetadata(id="agt-1"), spec=AgentSpec(instructions="Hi")
    )
    fake.instances["ain-1"] = instance_api.AgentInstance(
        metadata=ApiResourceMetadata(id="ain-1"), spec=AgentInstanceSpec(agent_id="agt-1")
    )
    fake.sessions["ses-1"] = session_api.Session(
        metadata=ApiResourceMetadata(id="ses-1"), spec=SessionSpec(agent_instance_id="ain-1")
    )
    server, port = await start_fake_orchestrator(fake)
    queue = "large-" + uuid.uuid4().hex[:8]
    budget = MIB
    with FakeLlmServer() as llm:
        settings = load_settings(
            {
                "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
                "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": queue,
                "STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{port}",
                "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
                "STIGMER_STATUS_BUDGET_BYTES": str(budget),
                "HEALTH_PORT": "0",
                "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "2",
                **llm_env(llm),
            }
        )
        stop = asyncio.Event()
        worker_task = asyncio.create_task(app.run(settings, stop=stop))
        client = await Client.connect(stack.temporal_address, data_converter=DATA_CONVERTER)
        try:
            async with Worker(
                client,
                task_queue=queue + "-workflows",
                workflows=[InvokeRawForTest, InvokeByIdForTest],
                workflow_runner=UnsandboxedWorkflowRunner(),
            ):
                # The January signature, the execution as a TypeScript orchestrator writes it
                # (a json/protobuf payload made by hand, with a field this runner does not know);
                # a 3 MiB answer.
                llm.reply = answer_of(3 * MIB, "january-")
                execution_json = json.dumps(
                    {
                        "apiVersion": "agentic.stigmer.ai/v1",
                        "kind": "AgentExecution",
                        "metadata": {"id": "aex-big"},
                        "spec": {"sessionId": "ses-1", "message": "Go"},
                        "status": {"phase": "EXECUTION_PENDING", "futureField": True},
                    }
                )
                result = await client.execute_workflow(
                    InvokeRawForTest.run,
                    args=[execution_json, "ses-1", queue],
                    id=f"large-{uuid.uuid4().hex[:8]}",
                    task_queue=queue + "-workflows",
                )
                assert result.phase == enum_pb2.EXECUTION_COMPLETED
                updates = [
                    c.request.status
                    for c in fake.calls
                    if c.method == "updateStatus" and c.request.execution_id == "aex-big"
                ]
                assert max(u.ByteSize() for u in updates) <= budget
                final = updates[-1]
                assert final.phase == enum_pb2.EXECUTION_COMPLETED
                answer = final.messages[-1]
                assert not answer.HasField("content_ref"), "no §7 field for a January server"
                assert answer.content.startswith(llm.reply[:1024])
                assert f"[cut: {3 * MIB} characters in all" in answer.content
                assert result == without_additions(final), (
                    "cut to fit, the status is small enough to return whole"
                )

                # The later upstream signature: the execution id as a json/plain string. Its
                # 600 KB answer fits the budget but not the result bound: the result is slim.
                llm.reply = answer_of(600_000, "by-id-")
                fake.executions["aex-byid"] = execution_api.AgentExecution(
                    metadata=ApiResourceMetadata(id="aex-byid"),
                    spec=AgentExecutionSpec(session_id="ses-1", message="Hi"),
                )
                by_id = await client.execute_workflow(
                    InvokeByIdForTest.run,
                    args=["aex-byid", "ses-1", queue],
                    id=f"large-{uuid.uuid4().hex[:8]}",
                    task_queue=queue + "-workflows",
                )
                assert by_id.phase == enum_pb2.EXECUTION_COMPLETED
                assert by_id.completed_at and not by_id.messages, "slim: no lists"
                assert any(c.method == "ExecutionQuery.get" for c in fake.calls)
                stored = fake.executions["aex-byid"].status
                assert stored.phase == enum_pb2.EXECUTION_COMPLETED
                assert stored.messages[-1].content == llm.reply, "the update carried it whole"
        finally:
            stop.set()
            await asyncio.wait_for(worker_task, 60)
            await server.stop(None)
