"""Agent executions over real gRPC: the create pipeline, status merging, subscribe, cancel.

No runner polls this module's queue, so every execution stays where the test puts it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import bson
import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2
from ai.stigmer.agentic.agentexecution.v1 import command_pb2 as cmd_pb2
from ai.stigmer.commons.apiresource import io_pb2 as resource_io

from devstack import Endpoints
from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_stub import fencing
from stigmer_stub.app import build_operations, running_stub
from stigmer_stub.errors import Unavailable
from stigmer_stub.paging import NEXT_PAGE_TOKEN_TRAILER
from stigmer_stub.store.database import Database
from tests.stub.support import Stub, stub_settings

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase
MessageType = enum_pb2.MessageType


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    agent = await stub.client.create_agent("Execution Agent", instructions="answer")
    return agent.metadata.id


@pytest.fixture
async def execution(stub: Stub, agent_id: str) -> api_pb2.AgentExecution:
    return await stub.client.create_execution("hello", agent_id=agent_id)


def msgs(*contents: str) -> list[api_pb2.AgentMessage]:
    return [api_pb2.AgentMessage(type=MessageType.MESSAGE_AI, content=c) for c in contents]


def contents(execution: api_pb2.AgentExecution) -> list[str]:
    return [m.content for m in execution.status.messages]


async def collect(stream: AsyncIterator[api_pb2.AgentExecution]) -> list[api_pb2.AgentExecution]:
    async with asyncio.timeout(20):
        return [e async for e in stream]


# Create pipeline -----------------------------------------------------------------------------


async def test_create_with_an_agent_makes_the_default_instance_and_a_session(
    stub: Stub, agent_id: str
) -> None:
    created = await stub.client.create_execution("hi", agent_id=agent_id)

    assert created.metadata.id.startswith("aex-")
    assert created.metadata.id == created.metadata.id.lower()
    assert created.kind == "AgentExecution"
    assert created.api_version == "agentic.stigmer.ai/v1"
    assert created.status.phase == Phase.EXECUTION_PENDING
    assert created.status.audit.status_audit.created_at.seconds > 0
    agent = await stub.client.get_agent(agent_id)
    instance = await stub.client.get_agent_instance(agent.status.default_instance_id)
    assert instance.metadata.name == "Execution Agent-default"
    assert instance.metadata.slug == "execution-agent-default"
    assert instance.spec.agent_id == agent_id
    session = await stub.client.get_session(created.spec.session_id)
    assert session.spec.agent_instance_id == instance.metadata.id


async def test_executions_of_one_agent_share_its_default_instance(
    stub: Stub, agent_id: str
) -> None:
    first, second = await asyncio.gather(
        stub.client.create_execution("one", agent_id=agent_id),
        stub.client.create_execution("two", agent_id=agent_id),
    )
    s1 = await stub.client.get_session(first.spec.session_id)
    s2 = await stub.client.get_session(second.spec.session_id)
    assert first.spec.session_id != second.spec.session_id
    assert s1.spec.agent_instance_id == s2.spec.agent_instance_id


async def test_create_in_a_session_keeps_it_and_fills_in_the_agent(
    stub: Stub, execution: api_pb2.AgentExecution, agent_id: str
) -> None:
    again = await stub.client.create_execution("second turn", session_id=execution.spec.session_id)
    assert again.spec.session_id == execution.spec.session_id
    assert again.spec.agent_id == agent_id


async def test_create_starts_the_invoke_workflow_with_the_runner_queue_in_its_memo(
    stub: Stub, stack: Endpoints, execution: api_pb2.AgentExecution
) -> None:
    from temporalio.client import Client

    from stigmer_stub.converter import DATA_CONVERTER

    client = await Client.connect(
        stack.temporal_address, namespace=stack.temporal_namespace, data_converter=DATA_CONVERTER
    )
    handle = client.get_workflow_handle(f"stigmer/agent-execution/invoke/{execution.metadata.id}")
    description = await handle.describe()
    assert description.workflow_type == "stigmer/agent-execution/invoke"
    assert description.task_queue == stub.settings.temporal.workflow_task_queue
    assert await description.memo_value("activityTaskQueue") == stub.runner_queue


@pytest.mark.parametrize(
    ("spec", "code", "field"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "spec.session_id"),
        ({"agent_id": "agt-missing"}, grpc.StatusCode.NOT_FOUND, "spec.agent_id"),
        ({"session_id": "ses-missing"}, grpc.StatusCode.NOT_FOUND, "spec.session_id"),
    ],
)
async def test_create_rejects_a_bad_spec_naming_the_field(
    stub: Stub, spec: dict[str, str], code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.create_execution("x", **spec)
    assert failed.value.code == code
    assert failed.value.details.startswith(field)


async def test_a_taken_execution_name_is_already_exists_before_anything_is_created(
    stub: Stub, agent_id: str
) -> None:
    await stub.client.create_execution("x", agent_id=agent_id, name="Nightly Run")
    sessions_before = await stub.running.database.sessions.raw.count_documents({})
    with pytest.raises(RpcFailed) as failed:
        await stub.client.create_execution("x", agent_id=agent_id, name="nightly run")
    assert failed.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert await stub.running.database.sessions.raw.count_documents({}) == sessions_before


async def test_a_failed_workflow_start_leaves_the_execution_failed_with_the_error(
    stub: Stub, agent_id: str
) -> None:
    class Unreachable:
        async def start(self, execution: api_pb2.AgentExecution) -> None:
            raise Unavailable("temporal is down")

        async def cancel(self, execution_id: str) -> None:
            raise Unavailable("temporal is down")

        async def cleanup_sandbox(self, session_id: str, sandbox_id: str) -> None:
            raise Unavailable("temporal is down")

    ops = build_operations(stub.running.database, Unreachable())
    draft = api_pb2.AgentExecution()
    draft.spec.agent_id = agent_id
    draft.spec.message = "hello"

    created = await ops.executions.create(draft)

    stored = await stub.client.get_execution(created.metadata.id)
    assert stored.status.phase == Phase.EXECUTION_FAILED
    assert "temporal is down" in stored.status.error


# updateStatus --------------------------------------------------------------------------------


async def test_update_status_merges_field_by_field(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    first = api_pb2.AgentExecutionStatus(
        phase=Phase.EXECUTION_IN_PROGRESS, messages=msgs("a", "b"), started_at="t0"
    )
    first.tool_calls.add(id="call-1", name="ls")
    first.todos["1"].content = "plan"
    await stub.client.update_status(eid, first)

    # Empty lists and map keep what is stored; a non-empty one replaces it wholesale.
    after = await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(messages=msgs("a", "b", "c"))
    )

    assert contents(after) == ["a", "b", "c"]
    assert [t.id for t in after.status.tool_calls] == ["call-1"]
    assert dict(after.status.todos)["1"].content == "plan"
    assert after.status.phase == Phase.EXECUTION_IN_PROGRESS
    assert after.status.started_at == "t0"
    assert after.spec.message == "hello"
    assert after.status.audit.status_audit.updated_at.ToNanoseconds() >= (
        execution.status.audit.status_audit.updated_at.ToNanoseconds()
    )
    assert after.status.audit.status_audit.event == "status_updated"


async def test_a_terminal_phase_is_never_overwritten_by_a_runner_update(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    ending = ((fencing.ATTEMPT_HEADER, "run-1/1"), (fencing.SEQ_HEADER, "1"))

    async def update(status: api_pb2.AgentExecutionStatus) -> api_pb2.AgentExecution:
        request = cmd_pb2.AgentExecutionUpdateStatusInput(execution_id=eid, status=status)
        result: api_pb2.AgentExecution = await stub.client.execution_commands.updateStatus(
            request, metadata=ending
        )
        return result

    await update(
        api_pb2.AgentExecutionStatus(
            phase=Phase.EXECUTION_COMPLETED, messages=msgs("done"), completed_at="t1"
        )
    )
    late = await update(
        api_pb2.AgentExecutionStatus(
            phase=Phase.EXECUTION_IN_PROGRESS, error="late", messages=msgs("done", "more")
        )
    )
    assert late.status.phase == Phase.EXECUTION_COMPLETED
    assert late.status.error == ""
    assert late.status.completed_at == "t1"
    # The attempt that ended the run may still complete its transcript (see test_fencing.py
    # for everyone else).
    assert contents(late) == ["done", "more"]


async def test_update_status_errors(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as missing:
        await stub.client.update_status("aex-nope", api_pb2.AgentExecutionStatus())
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.details.startswith("execution_id")
    with pytest.raises(RpcFailed) as empty:
        await stub.client.update_status("", api_pb2.AgentExecutionStatus())
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_update_with_empty_lists_keeps_the_stored_ones_without_rewriting_them(
    stub: Stub, execution: api_pb2.AgentExecution, monkeypatch: pytest.MonkeyPatch
) -> None:
    eid = execution.metadata.id
    collection = stub.running.database.executions
    written: list[set[str]] = []
    real_set_fields = collection.set_fields

    async def spy(resource: api_pb2.AgentExecution, version: int, fields: Any) -> bool:
        written.append(set(fields))
        return await real_set_fields(resource, version, fields)

    monkeypatch.setattr(collection, "set_fields", spy)
    full = api_pb2.AgentExecutionStatus(
        phase=Phase.EXECUTION_IN_PROGRESS, messages=msgs("a", "b"), started_at="t0"
    )
    full.tool_calls.add(id="call-1", name="ls")
    full.sub_agent_executions.add(id="sub-1")
    full.todos["1"].content = "plan"
    await stub.client.update_status(eid, full)

    kept = await stub.client.update_status(eid, api_pb2.AgentExecutionStatus(error="oops"))
    same = await stub.client.update_status(eid, full)  # every list as stored
    grown = api_pb2.AgentExecutionStatus()
    grown.CopyFrom(full)
    grown.messages.extend(msgs("c"))
    longer = await stub.client.update_status(eid, grown)

    assert contents(kept) == ["a", "b"]
    assert [t.id for t in kept.status.tool_calls] == ["call-1"]
    assert [s.id for s in kept.status.sub_agent_executions] == ["sub-1"]
    assert dict(kept.status.todos)["1"].content == "plan"
    assert kept.status.error == "oops"
    assert same.status.messages == full.messages
    assert contents(longer) == ["a", "b", "c"]
    assert await stub.client.get_execution(eid) == longer
    lists = {f"status_{k}" for k in ("messages", "tool_calls", "sub_agent_executions", "todos")}
    assert written[0] >= lists
    assert written[1] & lists == set()
    assert written[2] & lists == set()
    assert written[3] & lists == {"status_messages"}
    stored = await collection.raw.find_one({"_id": eid})
    assert stored is not None
    assert not api_pb2.AgentExecution.FromString(stored["resource"]).status.messages


async def test_only_list_entries_not_stored_yet_are_parsed_and_checked(
    stub: Stub, execution: api_pb2.AgentExecution, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stigmer_stub import executions

    eid = execution.metadata.id
    admitted: list[tuple[str, int]] = []
    real_admit = executions._admit_entry

    def spy(name: str, index: int, encoded: bytes) -> None:
        admitted.append((name, index))
        real_admit(name, index, encoded)

    monkeypatch.setattr(executions, "_admit_entry", spy)
    await stub.client.update_status(eid, api_pb2.AgentExecutionStatus(messages=msgs("a", "b", "c")))
    first = list(admitted)
    admitted.clear()
    await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(messages=msgs("a", "b", "c!", "d"))
    )

    assert first == [("messages", 0), ("messages", 1), ("messages", 2)]
    assert admitted == [("messages", 2), ("messages", 3)]


def raw_update(stub: Stub) -> Any:
    """updateStatus taking the request already encoded (to send what no client would)."""
    return stub.client.channel.unary_unary(
        "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController/updateStatus",
        request_serializer=lambda data: data,
        response_deserializer=api_pb2.AgentExecution.FromString,
    )


def encoded_update(execution_id: str, **lists: list[bytes]) -> bytes:
    """An `AgentExecutionUpdateStatusInput` whose list entries are the given bytes."""
    from stigmer_stub.status_wire import UpdateStatusInput

    request: Any = UpdateStatusInput()
    request.execution_id = execution_id
    for name, entries in lists.items():
        getattr(request.status, name).extend(entries)
    return bytes(request.SerializeToString())


async def test_a_new_list_entry_that_does_not_parse_or_names_no_enum_value_is_rejected(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    before = await stub.client.update_status(eid, api_pb2.AgentExecutionStatus(messages=msgs("a")))
    good = msgs("a")[0].SerializeToString()
    not_utf8 = b"\x12\x02\xff\xfe"  # `content` is a string: it must be UTF-8
    unnamed_status = enum_pb2.ToolCallStatus.ValueType(9)  # a number the enum does not name
    bad_enum = api_pb2.AgentMessage(tool_calls=[api_pb2.ToolCall(status=unnamed_status)])

    with pytest.raises(grpc.aio.AioRpcError) as garbled:
        await raw_update(stub)(encoded_update(eid, messages=[good, not_utf8]), timeout=10)
    with pytest.raises(RpcFailed) as unnamed:
        await stub.client.update_status(
            eid, api_pb2.AgentExecutionStatus(messages=[*msgs("a"), bad_enum])
        )
    todo = api_pb2.AgentExecutionStatus()
    todo.todos["t.1"].status = enum_pb2.TodoStatus.ValueType(77)
    with pytest.raises(RpcFailed) as unnamed_todo:
        await stub.client.update_status(eid, todo)

    assert garbled.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (garbled.value.details() or "").startswith("status.messages[1]")
    assert unnamed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert unnamed.value.details.startswith("status.messages[1].tool_calls[0].status")
    assert "9 is not a value of its enum" in unnamed.value.details
    assert unnamed_todo.value.details.startswith("status.todos['t.1'].status")
    assert await stub.client.get_execution(eid) == before


@pytest.mark.parametrize("form", ["binary", "protojson"])
async def test_documents_of_earlier_stubs_are_read_and_updated(
    stub: Stub, execution: api_pb2.AgentExecution, form: str
) -> None:
    """Earlier stubs stored the whole execution in `resource` (binary, or ProtoJSON before)."""
    from google.protobuf import json_format

    eid = execution.metadata.id
    old = api_pb2.AgentExecution()
    old.CopyFrom(execution)
    old.status.phase = Phase.EXECUTION_IN_PROGRESS
    old.status.messages.extend(msgs("a"))
    old.status.tool_calls.add(id="call-1")
    old.status.todos["1"].content = "plan"
    collection = stub.running.database.executions
    legacy = {
        k: v for k, v in collection.to_document(old, 7, {}).items() if not k.startswith("status_")
    }
    legacy["resource"] = (
        old.SerializeToString() if form == "binary" else json_format.MessageToJson(old)
    )
    await collection.raw.replace_one({"_id": eid}, legacy)

    read = await stub.client.get_execution(eid)
    updated = await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(messages=msgs("a", "b"))
    )
    again = await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
    )

    assert read == old
    assert contents(updated) == ["a", "b"]
    assert [t.id for t in updated.status.tool_calls] == ["call-1"]
    assert dict(updated.status.todos)["1"].content == "plan"
    assert again.status.phase == Phase.EXECUTION_COMPLETED
    assert again.status.tool_calls == updated.status.tool_calls
    stored = await collection.raw.find_one({"_id": eid})
    assert stored is not None
    assert stored["version"] == 9
    assert not api_pb2.AgentExecution.FromString(stored["resource"]).status.tool_calls
    only = api_pb2.AgentExecutionStatus.FromString(stored["status_tool_calls"])
    assert only.tool_calls == old.status.tool_calls


async def test_a_status_growing_past_the_store_limit_is_stored_whole_in_slices(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    mib = 1024 * 1024
    half = api_pb2.AgentExecutionStatus(messages=msgs(*("m" * mib for _ in range(9))))
    await stub.client.update_status(eid, half)
    more = api_pb2.AgentExecutionStatus()
    for i in range(8):
        more.tool_calls.add(id=f"call-{i}", result="r" * mib)

    await stub.client.update_status(eid, more)  # 17 MiB in all: over one document's 16 MB

    # Read from the store: a 17 MiB execution is more than one `get` reply holds.
    stored = await stub.running.database.executions.get(eid)
    assert len(stored.status.messages) == 9
    assert [t.result for t in stored.status.tool_calls] == ["r" * mib] * 8
    doc = await stub.running.database.executions.raw.find_one({"_id": eid})
    assert doc is not None
    assert len(bson.encode(doc)) < 64 * 1024


KINDS = ("messages", "tool_calls", "sub_agent_executions", "todos")


def one_field_update(i: int) -> api_pb2.AgentExecutionStatus:
    status = api_pb2.AgentExecutionStatus()
    kind = KINDS[i % len(KINDS)]
    if kind == "messages":
        status.messages.add(content=f"u{i}")
    elif kind == "tool_calls":
        status.tool_calls.add(id=f"u{i}")
    elif kind == "sub_agent_executions":
        status.sub_agent_executions.add(id=f"u{i}")
    else:
        status.todos[f"u{i}"].id = f"u{i}"
    return status


def field_values(execution: api_pb2.AgentExecution) -> dict[str, str]:
    s = execution.status
    return {
        "messages": ",".join(m.content for m in s.messages),
        "tool_calls": ",".join(t.id for t in s.tool_calls),
        "sub_agent_executions": ",".join(x.id for x in s.sub_agent_executions),
        "todos": ",".join(sorted(s.todos)),
    }


async def test_concurrent_updates_through_two_servers_are_all_applied_none_lost(
    stub: Stub, stack: Endpoints, execution: api_pb2.AgentExecution
) -> None:
    """Each update sets one list; every later state must keep every other list as it was.

    Half the updates go through a second stub server with its own MongoDB client, so the
    compare-and-swap between processes is exercised, not only the in-process lock.
    """
    n = 40
    eid = execution.metadata.id
    second_settings = stub_settings(
        stack, database=stub.settings.mongo.database, suffix="second-" + eid[-6:]
    )
    async with (
        running_stub(second_settings) as second,
        StigmerClient(second.address) as other,
    ):
        states = stub.client.subscribe(eid)
        first = await anext(states)
        clients = [stub.client, other]
        await asyncio.gather(
            *(clients[i % 2].update_status(eid, one_field_update(i)) for i in range(n))
        )
        final = field_values(await stub.client.get_execution(eid))
        seen = [first]
        async with asyncio.timeout(20):
            while field_values(seen[-1]) != final:
                seen.append(await anext(states))
        await states.aclose()

    assert len(seen) == n + 1, "every update must produce its own state"

    applied: set[str] = set()
    for before, after in itertools.pairwise(seen):
        old, new = field_values(before), field_values(after)
        changed = [k for k in KINDS if old[k] != new[k]]
        assert len(changed) == 1, (old, new)
        applied.add(new[changed[0]])
    assert applied == {f"u{i}" for i in range(n)}


# subscribe -----------------------------------------------------------------------------------


async def test_subscribe_sends_the_current_state_then_each_change_and_ends_at_terminal(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    stream = stub.client.subscribe(eid)
    first = await anext(stream)
    await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS, messages=msgs("a"))
    )
    await stub.client.update_status(eid, api_pb2.AgentExecutionStatus(messages=msgs("a", "b")))
    await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_FAILED, error="boom")
    )
    rest = await collect(stream)

    assert first.status.phase == Phase.EXECUTION_PENDING
    assert [(s.status.phase, contents(s)) for s in rest] == [
        (Phase.EXECUTION_IN_PROGRESS, ["a"]),
        (Phase.EXECUTION_IN_PROGRESS, ["a", "b"]),
        (Phase.EXECUTION_FAILED, ["a", "b"]),
    ]


async def test_subscribe_to_a_finished_execution_sends_one_state(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
    )
    states = await collect(stub.client.subscribe(eid))
    assert [s.status.phase for s in states] == [Phase.EXECUTION_COMPLETED]


async def test_subscribe_to_an_unknown_execution_is_not_found(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as failed:
        await collect(stub.client.subscribe("aex-unknown"))
    assert failed.value.code == grpc.StatusCode.NOT_FOUND


async def test_an_update_landing_as_the_subscription_starts_is_sent_once(
    stub: Stub, execution: api_pb2.AgentExecution, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The update lands after the change stream opened but before the first read: the first
    state already has it, and the stream's copy of it is not sent again."""
    eid = execution.metadata.id
    collection = stub.running.ops.executions.collection
    real_load = collection.load
    racing = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS, messages=msgs("r"))

    async def load_after_a_racing_update(resource_id: str, *, field: str | None = None) -> object:
        monkeypatch.setattr(collection, "load", real_load)  # one shot: the update loads too
        await stub.client.update_status(eid, racing)
        return await real_load(resource_id, field=field)

    monkeypatch.setattr(collection, "load", load_after_a_racing_update)
    stream = stub.client.subscribe(eid)
    first = await anext(stream)
    await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED, messages=msgs("r", "z"))
    )
    rest = await collect(stream)

    assert contents(first) == ["r"]
    assert [contents(s) for s in rest] == [["r", "z"]]


async def test_updates_racing_a_new_subscriber_arrive_in_order_without_gaps(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    n = 30

    async def writer() -> None:
        for i in range(1, n + 1):
            phase = Phase.EXECUTION_COMPLETED if i == n else Phase.EXECUTION_IN_PROGRESS
            await stub.client.update_status(
                eid,
                api_pb2.AgentExecutionStatus(
                    phase=phase, messages=msgs(*(str(k) for k in range(i)))
                ),
            )

    write = asyncio.create_task(writer())
    states = await collect(stub.client.subscribe(eid))
    await write

    counts = [len(s.status.messages) for s in states]
    assert counts[-1] == n
    assert counts == list(range(counts[0], n + 1))
    assert states[-1].status.phase == Phase.EXECUTION_COMPLETED


async def test_a_slow_subscriber_does_not_hold_back_writers(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    eid = execution.metadata.id
    n = 100
    big = msgs(*("x" * 2000 for _ in range(20)))  # ~40 kB per state: flow control kicks in
    slow = stub.client.subscribe(eid)
    await anext(slow)  # subscribed, then not reading

    started = time.perf_counter()
    for i in range(n):
        status = api_pb2.AgentExecutionStatus(messages=[*big, *msgs(str(i))])
        await stub.client.update_status(eid, status)
    elapsed = time.perf_counter() - started
    await stub.client.update_status(
        eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
    )

    rest = await collect(slow)
    assert elapsed < 15
    assert [s.status.messages[-1].content for s in rest[:n]] == [str(i) for i in range(n)]
    assert rest[-1].status.phase == Phase.EXECUTION_COMPLETED


# Queries and delete --------------------------------------------------------------------------


async def test_list_by_session_pages_with_numbers_and_keyset_tokens(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    session_id = execution.spec.session_id
    for i in range(4):
        await stub.client.create_execution(f"turn {i}", session_id=session_id)
    queries = stub.client.execution_queries

    call = queries.listBySession(
        io_pb2.ListAgentExecutionsBySessionRequest(session_id=session_id, page_size=2)
    )
    page1 = await call
    trailer = dict(await call.trailing_metadata() or ())
    token = str(trailer[NEXT_PAGE_TOKEN_TRAILER])
    page2 = await queries.listBySession(
        io_pb2.ListAgentExecutionsBySessionRequest(
            session_id=session_id, page_size=2, page_token=token
        )
    )
    page3 = await queries.listBySession(
        io_pb2.ListAgentExecutionsBySessionRequest(
            session_id=session_id, page_size=2, page_token="3"
        )
    )

    assert page1.total_pages == 3
    ids = [e.metadata.id for p in (page1, page2, page3) for e in p.entries]
    assert len(ids) == 5
    assert len(set(ids)) == 5
    assert ids == sorted(ids, reverse=True)  # newest first
    assert ids[-1] == execution.metadata.id


async def test_list_filters_by_phase_and_tags(stub: Stub, agent_id: str) -> None:
    draft = api_pb2.AgentExecution()
    draft.metadata.tags.append("nightly-phase-test")
    draft.spec.agent_id = agent_id
    tagged = await stub.client.execution_commands.create(draft)
    await stub.client.update_status(
        tagged.metadata.id, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_CANCELLED)
    )
    found = await stub.client.execution_queries.list(
        io_pb2.ListAgentExecutionsRequest(
            phase=Phase.EXECUTION_CANCELLED, tags=["nightly-phase-test"]
        )
    )
    assert [e.metadata.id for e in found.entries] == [tagged.metadata.id]


async def test_a_bad_page_token_is_invalid_argument(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.client.execution_queries.list(
            io_pb2.ListAgentExecutionsRequest(page_token="garbage")
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (failed.value.details() or "").startswith("page_token")


async def test_delete_of_a_pending_execution_cancels_it_and_keeps_it(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    """No runner ever picked it up; cancelling still ends the workflow and the execution."""
    eid = execution.metadata.id
    cancelled = await stub.client.delete_execution(eid)
    assert cancelled.status.phase == Phase.EXECUTION_CANCELLED
    assert cancelled.status.completed_at
    deleted = await stub.client.execution_commands.delete(resource_io.ApiResourceId(value=eid))
    assert deleted.metadata.id == eid
    with pytest.raises(RpcFailed) as gone:
        await stub.client.get_execution(eid)
    assert gone.value.code == grpc.StatusCode.NOT_FOUND


async def test_update_replaces_spec_and_metadata_but_not_status(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    changed = api_pb2.AgentExecution()
    changed.CopyFrom(execution)
    changed.metadata.labels["team"] = "core"
    changed.status.phase = Phase.EXECUTION_COMPLETED  # ignored: status is the server's
    updated = await stub.client.execution_commands.update(changed)
    assert updated.metadata.labels["team"] == "core"
    assert updated.status.phase == Phase.EXECUTION_PENDING


async def test_stored_documents_keep_keys_mongodb_cannot_hold_as_fields(
    stub: Stub, execution: api_pb2.AgentExecution
) -> None:
    status = api_pb2.AgentExecutionStatus()
    call = status.tool_calls.add(id="c1")
    call.args.update({"$ref": "#/x", "a.b": 1})
    status.todos["todo.with.dots"].content = "x"
    updated = await stub.client.update_status(execution.metadata.id, status)
    assert dict(updated.status.tool_calls[0].args) == {"$ref": "#/x", "a.b": 1}
    assert "todo.with.dots" in updated.status.todos


async def test_a_database_without_indexes_gets_them_at_start(stub: Stub) -> None:
    database: Database = stub.running.database
    indexes = await database.executions.raw.index_information()
    assert any(spec["key"] == [("session_id", 1), ("_id", -1)] for spec in indexes.values())
    unique = [spec for spec in indexes.values() if spec.get("unique")]
    assert [spec["key"] for spec in unique] == [[("scope", 1), ("slug", 1)]]
