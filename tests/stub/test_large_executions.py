"""Executions larger than one reply: `get`, `subscribe`, `list` within a 4 MiB client limit,
`getWindow` for the rest, and `create` refusing what could never start its workflow.

Reads go through a client whose receive limit is gRPC's default 4 MiB (grpcurl, most SDKs), so
a reply over it fails the call. No runner polls this module's queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2
from structlog.testing import capture_logs

from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_stub.errors import TooLarge
from stigmer_stub.windows import window_of
from tests.stub.support import Stub

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase
MessageType = enum_pb2.MessageType
KiB = 1024
MiB = 1024 * KiB


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    agent = await stub.client.create_agent("Large Agent", instructions="answer")
    return agent.metadata.id


@pytest.fixture
async def small_client(stub: Stub) -> AsyncIterator[StigmerClient]:
    async with StigmerClient(stub.address, max_message_bytes=4 * MiB) as client:
        yield client


def big_status(
    messages: int, tool_calls: int, *, each: int = 100 * KiB
) -> api_pb2.AgentExecutionStatus:
    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    for i in range(messages):
        status.messages.add(type=MessageType.MESSAGE_AI, content=f"m{i}:" + "x" * each)
    for i in range(tool_calls):
        status.tool_calls.add(id=f"call-{i}", name="read", result=f"r{i}:" + "y" * each)
    return status


async def large_execution(stub: Stub, agent_id: str, status: api_pb2.AgentExecutionStatus) -> str:
    execution_id = (await stub.client.create_execution("big", agent_id=agent_id)).metadata.id
    await stub.client.update_status(execution_id, status)
    return execution_id


async def test_get_of_an_execution_that_fits_is_whole_and_unmarked(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    execution_id = await large_execution(stub, agent_id, big_status(20, 10))

    got = await small_client.get_execution(execution_id)

    assert len(got.status.messages) == 20
    assert len(got.status.tool_calls) == 10
    assert all(window_of(m) is None for m in got.status.messages)


async def test_get_of_an_execution_over_four_mib_is_its_latest_part_with_a_marker(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    status = big_status(60, 30)
    execution_id = await large_execution(stub, agent_id, status)

    got = await small_client.get_execution(execution_id)

    assert got.ByteSize() <= 4 * MiB
    marker, *kept = got.status.messages
    numbers = window_of(marker)
    assert numbers is not None
    assert numbers["total_messages"] == 60
    assert numbers["total_tool_calls"] == 30
    assert numbers["omitted_messages"] == 60 - len(kept)
    assert numbers["omitted_tool_calls"] == 30 - len(got.status.tool_calls)
    assert numbers["omitted_messages"] > 0
    assert str(numbers["omitted_messages"]) in marker.content
    assert list(kept) == list(status.messages[60 - len(kept) :])
    assert list(got.status.tool_calls) == list(status.tool_calls[30 - len(got.status.tool_calls) :])
    assert got.spec.message == "big"
    assert got.status.phase == Phase.EXECUTION_IN_PROGRESS


async def test_get_window_pages_through_the_whole_transcript(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    status = big_status(60, 30)
    execution_id = await large_execution(stub, agent_id, status)

    messages: list[api_pb2.AgentMessage] = []
    tool_calls: list[api_pb2.ToolCall] = []
    pages = 0
    while len(messages) < 60 or len(tool_calls) < 30:
        window = await small_client.get_window(
            execution_id, message_offset=len(messages), tool_call_offset=len(tool_calls)
        )
        assert window.ByteSize() <= 4 * MiB
        assert window.total_messages == 60
        assert window.total_tool_calls == 30
        assert window.message_offset == len(messages)
        messages += window.execution.status.messages
        tool_calls += window.execution.status.tool_calls
        pages += 1
        assert pages < 10

    assert messages == list(status.messages)
    assert tool_calls == list(status.tool_calls)
    assert pages >= 2


async def test_get_window_honours_limits_and_offsets_past_the_end(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    status = big_status(5, 5, each=10)
    execution_id = await large_execution(stub, agent_id, status)

    window = await small_client.get_window(
        execution_id, message_offset=1, message_limit=2, tool_call_offset=99
    )

    assert list(window.execution.status.messages) == list(status.messages[1:3])
    assert not window.execution.status.tool_calls
    assert window.tool_call_offset == 5


async def test_get_window_refuses_negative_offsets_and_unknown_executions(
    stub: Stub, small_client: StigmerClient, agent_id: str
) -> None:
    execution_id = await large_execution(stub, agent_id, big_status(1, 0, each=1))
    with pytest.raises(RpcFailed) as negative:
        await small_client.get_window(execution_id, message_offset=-1)
    with pytest.raises(RpcFailed) as missing:
        await small_client.get_window("aex-missing")
    with pytest.raises(RpcFailed) as empty:
        await small_client.get_window("")
    with pytest.raises(RpcFailed) as empty_get:
        await small_client.get_execution("")

    assert negative.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert empty_get.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_single_message_larger_than_a_reply_is_sent_cut_with_a_note(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    status = big_status(1, 0, each=6 * MiB)
    execution_id = await large_execution(stub, agent_id, status)

    got = await small_client.get_execution(execution_id)
    window = await small_client.get_window(execution_id)

    marker, cut = got.status.messages
    assert window_of(marker) == {
        "omitted_messages": 0,
        "total_messages": 1,
        "omitted_tool_calls": 0,
        "total_tool_calls": 0,
        "omitted_sub_agent_executions": 0,
        "omitted_todos": 0,
    }
    assert cut.content.startswith("m0:xxx")
    assert "cut by the stigmer stub" in cut.content
    assert str(len(status.messages[0].content)) in cut.content
    (paged,) = window.execution.status.messages
    assert "cut by the stigmer stub" in paged.content


async def test_subscribe_to_an_execution_over_four_mib_stays_under_four_mib(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    execution_id = await large_execution(stub, agent_id, big_status(60, 30))
    states: list[api_pb2.AgentExecution] = []

    async def follow() -> None:
        async for state in small_client.subscribe(execution_id):
            states.append(state)

    task = asyncio.create_task(follow())
    async with asyncio.timeout(20):
        while not states:
            await asyncio.sleep(0.05)
    await stub.client.update_status(
        execution_id, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
    )
    async with asyncio.timeout(20):
        await task

    assert [s.status.phase for s in states][-1] == Phase.EXECUTION_COMPLETED
    for state in states:
        assert state.ByteSize() <= 4 * MiB
        assert window_of(state.status.messages[0]) is not None


async def test_list_by_session_pages_by_size_so_large_executions_never_break_a_page(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    first = await stub.client.create_execution("first", agent_id=agent_id)
    session_id = first.spec.session_id
    second = await stub.client.create_execution("second", session_id=session_id)
    third = await stub.client.create_execution("third", session_id=session_id)
    for created in (first, second, third):
        await stub.client.update_status(created.metadata.id, big_status(25, 0))  # ~2.5 MiB each

    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await small_client.execution_queries.listBySession(
            io_pb2.ListAgentExecutionsBySessionRequest(
                session_id=session_id, page_size=50, page_token=token
            )
        )
        assert page.ByteSize() <= 4 * MiB
        assert len(page.entries) >= 1
        seen += [e.metadata.id for e in page.entries]
        token = page.next_page_token
        if not token:
            break

    assert seen == [third.metadata.id, second.metadata.id, first.metadata.id]


async def test_list_pages_by_size_and_sets_the_next_page_token_field_and_trailer(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    for _ in range(2):
        await large_execution(stub, agent_id, big_status(25, 0))

    call = small_client.execution_queries.list(io_pb2.ListAgentExecutionsRequest(page_size=50))
    page = await call
    trailers = dict(await call.trailing_metadata() or ())

    assert page.ByteSize() <= 4 * MiB
    assert page.next_page_token
    assert trailers["x-next-page-token"] == page.next_page_token


async def test_a_list_entry_larger_than_a_reply_goes_windowed(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    created = await stub.client.create_execution("huge", agent_id=agent_id)
    await stub.client.update_status(created.metadata.id, big_status(60, 0))

    page = await small_client.execution_queries.listBySession(
        io_pb2.ListAgentExecutionsBySessionRequest(session_id=created.spec.session_id)
    )

    (entry,) = page.entries
    assert window_of(entry.status.messages[0]) is not None
    assert not page.next_page_token


# Create: what could never start is refused ---------------------------------------------------


async def test_create_refuses_a_message_too_large_for_the_workflow_input(
    stub: Stub, agent_id: str
) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.create_execution("x" * (1 * MiB + 1), agent_id=agent_id)

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details.startswith("spec.message")
    assert str(1 * MiB) in failed.value.details
    assert "2 MiB" in failed.value.details


async def test_create_counts_the_message_as_temporal_encodes_it(stub: Stub, agent_id: str) -> None:
    # 300k characters of two UTF-8 bytes each: 600 KB, but six bytes each as Temporal's JSON.
    with pytest.raises(RpcFailed) as failed:
        await stub.client.create_execution("é" * 300_000, agent_id=agent_id)

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_accepts_a_large_message_within_the_bound(stub: Stub, agent_id: str) -> None:
    created = await stub.client.create_execution("x" * (900 * KiB), agent_id=agent_id)

    assert created.status.phase == Phase.EXECUTION_PENDING


async def test_a_document_over_the_store_limit_is_refused_typed_and_logged_at_warning(
    stub: Stub,
) -> None:
    # Only an execution's own fields can still make one (the lists go to slices); `create`
    # refuses such a message before, so this goes to the store directly.
    execution = api_pb2.AgentExecution()
    execution.metadata.id = "aex-too-large"
    execution.spec.message = "x" * (17 * MiB)

    with capture_logs() as logs, pytest.raises(TooLarge) as failed:
        await stub.running.database.executions.insert(execution)

    assert "16 MB document limit" in str(failed.value)
    assert {"event": "store_document_too_large", "log_level": "warning"}.items() <= next(
        entry for entry in logs if entry["event"] == "store_document_too_large"
    ).items()
    assert await stub.running.database.executions.raw.find_one({"_id": "aex-too-large"}) is None
