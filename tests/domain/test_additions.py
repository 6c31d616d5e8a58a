"""The contract's additions left out of a status on its wire form (`worker.domain.additions`),
checked against a proto-level reference: copy the status and clear every such field."""

from __future__ import annotations

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf.message import Message

from worker.domain import additions


def _cleared(status: api_pb2.AgentExecutionStatus) -> api_pb2.AgentExecutionStatus:
    """The reference: the same status with every addition cleared on a proto copy."""
    copy = api_pb2.AgentExecutionStatus()
    copy.CopyFrom(status)

    def clear(message: Message) -> None:
        for field, value in message.ListFields():
            if additions.is_addition(message.DESCRIPTOR.full_name, field.number):
                message.ClearField(field.name)
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                for item in value if field.is_repeated else (value,):
                    clear(item)

    clear(copy)
    return copy


def _rich_status() -> api_pb2.AgentExecutionStatus:
    status = api_pb2.AgentExecutionStatus(
        phase=enum_pb2.EXECUTION_COMPLETED,
        error="",
        started_at="2026-12-07T00:00:00Z",
        completed_at="2026-12-07T00:01:00Z",
    )
    status.usage.total.input_tokens = 7
    message = status.messages.add(type=enum_pb2.MESSAGE_AI, content="done é")
    message.content_ref.storage_key = "executions/aex-1/content/x"
    message.tool_calls.add(id="c1", name="clock/now", mcp_server_slug="clock")
    call = status.tool_calls.add(id="c1", name="clock/now", mcp_server_slug="clock", result="r")
    call.args.update({"path": "/tmp/x", "n": 3})
    call.output_ref.size_bytes = 10
    sub = status.sub_agent_executions.add(id="t1", name="researcher", output="found")
    sub.messages.add(type=enum_pb2.MESSAGE_AI, content="turn")
    status.todos["todo-001"].content = "write it"
    status.messages.add(type=enum_pb2.MESSAGE_HUMAN, content="x" * 300)  # a 2-byte length
    return status


def test_strip_equals_clearing_every_addition_on_a_copy() -> None:
    status = _rich_status()
    stripped = api_pb2.AgentExecutionStatus.FromString(additions.strip(status.SerializeToString()))
    assert stripped == _cleared(status)
    assert not stripped.HasField("usage")
    assert not stripped.messages[0].HasField("content_ref")
    assert stripped.tool_calls[0].args == status.tool_calls[0].args
    assert stripped.todos["todo-001"].content == "write it"
    assert list(stripped.sub_agent_executions[0].messages) == []


def test_a_status_without_additions_comes_back_byte_for_byte() -> None:
    status = _cleared(_rich_status())
    data = status.SerializeToString()
    assert additions.strip(data) == data


def test_pieces_are_measured_whole_and_kept_only_under_the_bound() -> None:
    status = _rich_status()
    pieces = [
        api_pb2.AgentExecutionStatus(messages=[m]).SerializeToString() for m in status.messages
    ]
    rest = api_pb2.AgentExecutionStatus()
    rest.CopyFrom(status)
    del rest.messages[:]
    pieces.append(rest.SerializeToString())
    expected = _cleared(status).ByteSize()

    kept = additions.strip_pieces(pieces, keep_under=expected)
    assert kept.size == expected
    assert kept.data is not None
    assert api_pb2.AgentExecutionStatus.FromString(kept.data) == _cleared(status)

    dropped = additions.strip_pieces(pieces, keep_under=expected - 1)
    assert dropped.size == expected and dropped.data is None
    assert dropped.head.phase == enum_pb2.EXECUTION_COMPLETED
    assert dropped.head.completed_at == "2026-12-07T00:01:00Z"
    assert not dropped.head.messages and not dropped.head.HasField("usage")


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\xff" * 11, b"\x0b"])
def test_malformed_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(additions.MalformedStatus):
        additions.strip(data)
