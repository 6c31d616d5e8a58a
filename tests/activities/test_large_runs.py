"""ExecuteGraphton with large outputs: a bounded result, contents by reference, the budget path,
and the later upstream signature (an execution id instead of the execution)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1.spec_pb2 import AgentExecutionSpec
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.activities.fakes import FakeContentStore, FakeOrchestratorPorts, FakeRuntime
from worker.activities.result import bounded_result, payload_size, without_additions
from worker.activities.runner import RunnerActivities, to_application_error
from worker.content.offload import OffloadSupport
from worker.domain.agent_events import ModelTurnEnded, ToolCallRequest, ToolEnded, ToolStarted
from worker.domain.status_wire import EncodedStatus
from worker.errors import AgentFailed
from worker.run.attempt import AttemptControls
from worker.run.service import GraphtonExecutions
from worker.run.status_publisher import StatusPublisher
from worker.sandbox import LocalSandboxes
from worker.settings import load_settings


class NullLive:
    enabled = False

    async def publish(self, execution_id: str, event: Any) -> None:
        return None

    async def close_stream(self, execution_id: str) -> None:
        return None


def make_activities(
    tmp_path: Path, fake: FakeOrchestratorPorts, runtime: FakeRuntime, **env: str
) -> RunnerActivities:
    settings = load_settings(
        {
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
            "STIGMER_STATUS_UPDATE_INTERVAL_MS": "20",
            "STIGMER_STATUS_FINAL_DEADLINE_SECONDS": "5",
            **env,
        }
    )
    executions = GraphtonExecutions(
        settings,
        fake,
        runtime,
        lambda execution_id: StatusPublisher(fake, execution_id, settings.status),
        NullLive(),
        attempt=AttemptControls(heartbeat=lambda: activity.heartbeat),
        content=OffloadSupport(fake, settings.content),
    )
    return RunnerActivities(
        fake,
        executions,
        LocalSandboxes(settings.sandbox_root),
        source=fake,
        result_max_bytes=settings.content.result_max_bytes,
    )


def an_execution() -> execution_api.AgentExecution:
    return execution_api.AgentExecution(
        metadata=ApiResourceMetadata(id="aex-1"),
        spec=AgentExecutionSpec(session_id="ses-1", message="Read the logs"),
    )


def reading(result: str, *, answer: str = "Read it.") -> list[Any]:
    return [
        ModelTurnEnded(
            message_id="ai-1",
            text="Reading.",
            tool_calls=(ToolCallRequest(id="call-1", name="read_file", args={"path": "/log"}),),
        ),
        ToolStarted(tool_call_id="call-1", name="read_file", args={"path": "/log"}),
        ToolEnded(tool_call_id="call-1", name="read_file", result=result),
        ModelTurnEnded(message_id="ai-2", text=answer),
    ]


async def test_a_status_over_the_result_bound_returns_slim_and_the_orchestrator_has_it_all(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()  # January contract: no content RPCs
    big = "log line\n" * 60_000  # 540,000 bytes, over the default 256 KiB bound
    acts = make_activities(tmp_path, fake, FakeRuntime(reading(big)))

    status = await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t-1")

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert status.started_at and status.completed_at
    assert not status.messages and not status.tool_calls, "slim: no lists"
    final = fake.updates[-1][1]
    assert final.phase == enum_pb2.EXECUTION_COMPLETED
    assert final.tool_calls[0].result == big, "under the status budget the result stays inline"
    assert not final.tool_calls[0].HasField("output_ref"), "no §7 field for a January server"


async def test_a_small_status_is_returned_whole(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    acts = make_activities(tmp_path, fake, FakeRuntime(reading("a.txt")))
    status = await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t-1")
    pushed = fake.updates[-1][1]
    assert status == without_additions(pushed)
    assert list(status.messages) and len(status.messages) == len(pushed.messages)


async def test_a_large_tool_result_is_stored_by_reference_when_the_orchestrator_can(
    tmp_path: Path,
) -> None:
    store = FakeContentStore()
    fake = FakeOrchestratorPorts.with_agent()
    fake.content = store
    big = "".join(f"{n:08d}\n" for n in range(500_000))  # 4.5 MB
    acts = make_activities(tmp_path, fake, FakeRuntime(reading(big)))

    status = await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t-1")

    digest = hashlib.sha256(big.encode()).hexdigest()
    final = fake.updates[-1][1]
    call = final.tool_calls[0]
    assert call.output_ref.content_hash == digest
    assert call.output_ref.storage_key == f"aex-1/{digest}"
    assert call.output_ref.size_bytes == len(big)
    assert len(call.result) <= 2048
    assert store.content_of("aex-1", digest) == big.encode()
    assert max(u.ByteSize() for _, u in fake.updates) < 64 * 1024, "no update carried it"
    assert status == without_additions(final), "small again, so returned whole"


async def test_a_retried_attempt_after_an_offload_does_not_upload_twice(tmp_path: Path) -> None:
    store = FakeContentStore()
    fake = FakeOrchestratorPorts.with_agent()
    fake.content = store
    big = "z" * 300_000
    first = make_activities(tmp_path, fake, FakeRuntime(reading(big)))
    await ActivityEnvironment().run(first.execute_graphton, an_execution(), "t-1")
    # The next attempt (a new process's activities, the same orchestrator) replays the result.
    second = make_activities(tmp_path, fake, FakeRuntime(reading(big)))
    await ActivityEnvironment().run(second.execute_graphton, an_execution(), "t-1")

    assert store.data_bytes_received == len(big)
    assert store.uploads == 1
    assert fake.updates[-1][1].tool_calls[0].output_ref.storage_key


async def test_without_content_rpcs_the_status_budget_bounds_every_update(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    big = "b" * 2_000_000
    acts = make_activities(
        tmp_path, fake, FakeRuntime(reading(big)), STIGMER_STATUS_BUDGET_BYTES=str(1024 * 1024)
    )
    status = await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t-1")
    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert max(u.ByteSize() for _, u in fake.updates) <= 1024 * 1024
    result = fake.updates[-1][1].tool_calls[0].result
    assert result.startswith("b" * 100) and "[cut: 2000000 characters in all" in result


async def test_the_later_upstream_signature_reads_the_execution_by_id(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    fake.executions["aex-1"] = an_execution()
    runtime = FakeRuntime(reading("a.txt"))
    acts = make_activities(tmp_path, fake, runtime)

    status = await ActivityEnvironment().run(acts.execute_graphton, "aex-1", "t-1")

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert runtime.plans[0].message == "Read the logs"
    assert fake.updates[-1][0] == "aex-1"


async def test_an_unknown_execution_id_fails_without_retry(tmp_path: Path) -> None:
    acts = make_activities(tmp_path, FakeOrchestratorPorts.with_agent(), FakeRuntime())
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(acts.execute_graphton, "aex-missing", "t-1")
    assert caught.value.type == "NotFound"
    assert caught.value.non_retryable


def test_bounded_result_measures_the_json_payload_not_the_binary_size() -> None:
    # Control characters are 1 byte in binary and 6 in ProtoJSON (\u0001).
    status = execution_api.AgentExecutionStatus(
        phase=enum_pb2.EXECUTION_COMPLETED,
        messages=[execution_api.AgentMessage(content="\x01" * 50_000)],
    )
    assert status.ByteSize() < 64 * 1024 < payload_size(status)
    result = bounded_result(status, 64 * 1024)
    assert not result.messages
    assert result.phase == enum_pb2.EXECUTION_COMPLETED


def test_the_slim_result_keeps_a_long_error_short() -> None:
    status = execution_api.AgentExecutionStatus(
        phase=enum_pb2.EXECUTION_FAILED,
        error="e" * 100_000,
        messages=[execution_api.AgentMessage(content="m" * 300_000)],
    )
    result = bounded_result(status, 256 * 1024)
    assert result.phase == enum_pb2.EXECUTION_FAILED
    assert result.error.startswith("e" * 100) and len(result.error) < 17_000
    assert payload_size(result) < 256 * 1024


def test_a_failure_message_is_bounded() -> None:
    failure = to_application_error(AgentFailed("boom: " + "x" * 1_000_000))
    assert failure.message.startswith("boom: x")
    assert len(failure.message) < 17 * 1024
    assert "1000006 characters in all" in failure.message
    assert not failure.non_retryable


def test_the_result_leaves_out_what_a_january_orchestrator_does_not_know() -> None:
    """Another SDK reads the result as ProtoJSON and refuses unknown fields (contract §1)."""
    status = execution_api.AgentExecutionStatus(phase=enum_pb2.EXECUTION_COMPLETED)
    status.usage.total.input_tokens = 7
    message = status.messages.add(type=enum_pb2.MESSAGE_AI, content="done")
    message.content_ref.storage_key = "executions/aex-1/content/x"
    call = status.tool_calls.add(id="c1", name="clock/now", mcp_server_slug="clock")
    call.output_ref.size_bytes = 1
    sub = status.sub_agent_executions.add(id="t1", name="researcher")
    sub.messages.add(type=enum_pb2.MESSAGE_AI, content="turn")
    message.tool_calls.add(id="c1", name="clock/now", mcp_server_slug="clock")

    result = bounded_result(status, 256 * 1024)

    assert result.phase == enum_pb2.EXECUTION_COMPLETED
    assert not result.HasField("usage")
    assert not result.messages[0].HasField("content_ref")
    assert result.messages[0].content == "done"
    assert result.tool_calls[0].mcp_server_slug == "" and not result.tool_calls[0].HasField(
        "output_ref"
    )
    assert result.messages[0].tool_calls[0].mcp_server_slug == ""
    assert list(result.sub_agent_executions[0].messages) == []
    assert status.usage.total.input_tokens == 7, "the status itself is left as it was"


def _encoded(status: execution_api.AgentExecutionStatus) -> EncodedStatus:
    """`status` as a run hands it over: one piece per entry, never joined."""
    pieces = [
        execution_api.AgentExecutionStatus(messages=[m]).SerializeToString()
        for m in status.messages
    ]
    rest = execution_api.AgentExecutionStatus()
    rest.CopyFrom(status)
    del rest.messages[:]
    pieces.append(rest.SerializeToString())
    return EncodedStatus(
        pieces=pieces,
        phase=status.phase,
        messages=len(status.messages),
        tool_calls=len(status.tool_calls),
        todos=len(status.todos),
        sub_agents=len(status.sub_agent_executions),
    )


@pytest.mark.parametrize("messages", [3, 400], ids=["fits", "slim"])
def test_a_status_handed_over_encoded_gives_the_result_its_proto_gives(messages: int) -> None:
    """The run returns its entries' encodings (a long run's status is never parsed whole): the
    result made from them is the one the same status as a proto gives."""
    status = execution_api.AgentExecutionStatus(
        phase=enum_pb2.EXECUTION_FAILED,
        error="boom",
        started_at="2026-12-07T00:00:00Z",
        completed_at="2026-12-07T00:01:00Z",
        messages=[execution_api.AgentMessage(content="m" * 1000) for _ in range(messages)],
    )
    status.usage.total.input_tokens = 5
    status.messages[0].content_ref.storage_key = "executions/aex-1/content/x"

    from_encoded = bounded_result(_encoded(status), 256 * 1024)

    assert from_encoded == bounded_result(status, 256 * 1024)
    assert from_encoded.error == "boom" and from_encoded.phase == enum_pb2.EXECUTION_FAILED
    assert len(from_encoded.messages) == (messages if messages == 3 else 0)
    assert not from_encoded.HasField("usage")


def test_a_status_that_fits_once_its_additions_are_out_is_returned_whole() -> None:
    """The shortcut counts the additions: a status over the bound only because of them (here a
    sub-agent's conversation) is still returned, without them."""
    status = execution_api.AgentExecutionStatus(
        phase=enum_pb2.EXECUTION_COMPLETED,
        messages=[execution_api.AgentMessage(content="answer")],
    )
    sub = status.sub_agent_executions.add(id="t1", name="researcher", output="done")
    for _ in range(300):
        sub.messages.add(type=enum_pb2.MESSAGE_AI, content="x" * 1000)
    assert status.ByteSize() > 256 * 1024
    result = bounded_result(status, 256 * 1024)
    assert result.messages[0].content == "answer"
    assert result.sub_agent_executions[0].output == "done"
    assert list(result.sub_agent_executions[0].messages) == []
