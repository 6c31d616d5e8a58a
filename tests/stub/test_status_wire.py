"""The status read as its parts, and an execution stored across document fields (no servers)."""

from __future__ import annotations

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2, enum_pb2
from google.protobuf import json_format

from stigmer_stub.status_wire import (
    LISTS,
    assemble,
    chunk,
    entries,
    parse_update,
    split_status,
    split_view,
)
from stigmer_stub.store.executions import (
    LIST_FIELDS,
    decode_execution,
    encode_execution,
    encoded_execution,
)

Phase = enum_pb2.ExecutionPhase


def a_status() -> api_pb2.AgentExecutionStatus:
    status = api_pb2.AgentExecutionStatus(
        phase=Phase.EXECUTION_IN_PROGRESS, error="e", started_at="t0", callback_token=b"tok"
    )
    message = status.messages.add(type=enum_pb2.MESSAGE_AI, content="hello")
    message.metadata.update({"usage": {"input_tokens": 3}, "a.b": None})
    message.tool_calls.add(id="c1", status=enum_pb2.TOOL_CALL_RUNNING)
    status.messages.add(content="second")
    call = status.tool_calls.add(id="c1", name="ls")
    call.args.update({"$ref": "#/x", "path": "."})
    status.sub_agent_executions.add(id="s1", name="research")
    status.todos["t.1"].content = "plan"
    status.todos["t-2"].status = enum_pb2.TODO_PENDING
    status.audit.status_audit.event = "x"
    return status


def an_execution() -> api_pb2.AgentExecution:
    execution = api_pb2.AgentExecution(api_version="v1", kind="AgentExecution")
    execution.metadata.id = "aex-1"
    execution.metadata.labels["a.b"] = "$ref"
    execution.spec.message = "hi"
    execution.status.CopyFrom(a_status())
    return execution


def test_a_status_splits_into_its_rest_and_each_lists_encoded_entries() -> None:
    status = a_status()
    split = split_status(status)

    assert split.rest.phase == Phase.EXECUTION_IN_PROGRESS
    assert split.rest.error == "e"
    assert split.rest.callback_token == b"tok"
    assert split.rest.audit.status_audit.event == "x"
    assert all(not getattr(split.rest, name) for name in LISTS)
    assert [api_pb2.AgentMessage.FromString(m) for m in split.lists["messages"]] == list(
        status.messages
    )
    assert [api_pb2.ToolCall.FromString(t) for t in split.lists["tool_calls"]] == list(
        status.tool_calls
    )
    assert len(split.lists["sub_agent_executions"]) == 1
    todos = [api_pb2.AgentExecutionStatus.TodosEntry.FromString(t) for t in split.lists["todos"]]
    assert {t.key: t.value for t in todos} == dict(status.todos)


def test_an_update_request_is_read_without_parsing_its_lists() -> None:
    request = command_pb2.AgentExecutionUpdateStatusInput(execution_id="aex-1", status=a_status())
    update = parse_update(request.SerializeToString())
    fields: object = update

    assert getattr(fields, "execution_id") == "aex-1"  # noqa: B009 - a dynamic message type
    split = split_view(getattr(fields, "status"))  # noqa: B009

    status = api_pb2.AgentExecutionStatus()
    status.CopyFrom(split.rest)
    for name in LISTS:
        status.MergeFromString(chunk(name, split.lists[name]))
    assert status == a_status()
    assert len(split.lists["messages"]) == 2


def test_chunks_are_the_lists_encoding_and_split_back_into_their_entries() -> None:
    split = split_status(a_status())
    for name in LISTS:
        stored = chunk(name, split.lists[name])
        only = api_pb2.AgentExecutionStatus()
        only.MergeFromString(stored)
        assert getattr(only, name) == getattr(a_status(), name)
        assert entries(name, stored) == split.lists[name]
    assert chunk("messages", []) == b""


def test_chunks_appended_to_an_execution_merge_into_its_status() -> None:
    execution = an_execution()
    split = split_status(execution.status)
    head = api_pb2.AgentExecution()
    head.CopyFrom(execution)
    head.status.CopyFrom(split.rest)

    chunks = [chunk(name, split.lists[name]) for name in LISTS]
    assembled = api_pb2.AgentExecution.FromString(assemble(head.SerializeToString(), chunks))

    assert assembled == execution
    assert assemble(b"head", [b"", b""]) == b"head"


def test_an_execution_split_across_its_document_fields_reads_back_equal() -> None:
    execution = an_execution()
    doc = encode_execution(execution)

    head = api_pb2.AgentExecution.FromString(doc["resource"])
    assert all(not getattr(head.status, name) for name in LISTS)
    assert head.status.phase == Phase.EXECUTION_IN_PROGRESS
    assert set(doc) == {"resource", *LIST_FIELDS.values()}
    assert decode_execution(doc) == execution
    assert api_pb2.AgentExecution.FromString(encoded_execution(doc)) == execution


def test_an_execution_without_lists_has_empty_list_fields() -> None:
    execution = api_pb2.AgentExecution(kind="AgentExecution")
    execution.status.phase = Phase.EXECUTION_PENDING
    doc = encode_execution(execution)
    assert all(doc[field] == b"" for field in LIST_FIELDS.values())
    assert decode_execution(doc) == execution


@pytest.mark.parametrize("form", ["binary", "protojson"])
def test_documents_of_earlier_stubs_hold_the_whole_execution_and_still_read(form: str) -> None:
    execution = an_execution()
    stored: bytes | str = (
        execution.SerializeToString() if form == "binary" else json_format.MessageToJson(execution)
    )
    doc = {"resource": stored, "version": 3}
    assert decode_execution(doc) == execution
    assert api_pb2.AgentExecution.FromString(encoded_execution(doc)) == execution
