"""`StatusBuilder.encoded()`: from its cached entry encodings, the same status as every entry
encoded anew (`encoded(fresh=True)`) and as `snapshot()`, at every point of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2, enum_pb2

from worker.domain import agent_events
from worker.domain.agent_events import AgentEvent, TokenDelta, ToolEnded, ToolStarted
from worker.domain.status_builder import StatusBuilder
from worker.domain.status_wire import (
    EncodedStatus,
    as_status,
    update_request_bytes,
    varint,
)

EVENTS = Path(__file__).parent.parent / "fixtures" / "events"


def recording(name: str) -> tuple[str, list[AgentEvent]]:
    lines = (EVENTS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])["recording"]
    return header["message"], [agent_events.loads(line) for line in lines[1:] if line]


def assert_same(builder: StatusBuilder) -> EncodedStatus:
    encoded = builder.encoded()
    expected = builder.encoded(fresh=True).message()
    assert encoded.message() == expected
    assert builder.snapshot() == expected
    assert (encoded.phase, encoded.messages, encoded.tool_calls) == (
        expected.phase,
        len(expected.messages),
        len(expected.tool_calls),
    )
    assert (encoded.todos, encoded.sub_agents) == (
        len(expected.todos),
        len(expected.sub_agent_executions),
    )
    return encoded


@pytest.mark.parametrize("name", ["demo", "fail-tool", "subagents"])
def test_encoded_equals_the_snapshot_after_every_event(name: str) -> None:
    message, events = recording(name)
    builder = StatusBuilder(user_message=message, redact=lambda s: s.replace("secret", "***"))
    assert_same(builder)  # PENDING: phase and every list empty
    builder.start()
    for event in events:
        builder.apply(event)
        assert_same(builder)
    builder.complete()
    assert_same(builder)


def test_a_changed_entry_is_encoded_anew_and_unchanged_ones_are_reused() -> None:
    builder = StatusBuilder(user_message="héllo ✓")
    builder.start()
    builder.apply(TokenDelta(message_id="m1", text="first"))
    first = assert_same(builder)
    builder.apply(TokenDelta(message_id="m1", text=" and more ✓"))
    second = assert_same(builder)
    assert second.data != first.data
    assert "first and more ✓" in second.message().messages[-1].content
    # Nothing changed: the very same bytes, from the cache.
    assert builder.encoded().data == second.data


def test_todos_are_encoded_anew_when_reworded_moved_or_dropped() -> None:
    """Each todo's map entry is cached; every kind of change must show in the next encoding."""
    builder = StatusBuilder()
    builder.start()
    rounds = [
        [("Read the spec", "in_progress"), ("Write the code", "pending")],
        [("Read the spec", "completed"), ("Write the code carefully", "in_progress")],
        [("Add tests", "in_progress"), ("Read the spec", "completed")],  # one dropped
    ]
    seen: list[dict[str, int]] = []
    for index, todos in enumerate(rounds):
        items = [{"content": c, "status": s} for c, s in todos]
        call = f"c{index}"
        builder.apply(ToolStarted(tool_call_id=call, name="write_todos", args={"todos": items}))
        builder.apply(ToolEnded(tool_call_id=call, name="write_todos", result="ok"))
        encoded = assert_same(builder)
        seen.append({t.content: t.status for t in encoded.message().todos.values()})
    assert seen[1]["Write the code carefully"] == enum_pb2.TODO_IN_PROGRESS
    assert "Write the code carefully" not in seen[2]  # the map is the current list
    assert seen[2]["Add tests"] == enum_pb2.TODO_IN_PROGRESS


def test_failed_and_cancelled_runs_encode_their_error_and_end() -> None:
    message, events = recording("fail-tool")
    builder = StatusBuilder(user_message=message)
    builder.start()
    for event in events[: len(events) // 2]:
        builder.apply(event)
    builder.fail("model provider said no")
    encoded = assert_same(builder)
    assert encoded.phase == enum_pb2.EXECUTION_FAILED
    assert encoded.message().error == "model provider said no"
    builder.cancel()
    assert assert_same(builder).phase == enum_pb2.EXECUTION_CANCELLED


def test_the_update_request_parses_as_the_contract_message() -> None:
    status = api_pb2.AgentExecutionStatus(
        phase=enum_pb2.EXECUTION_IN_PROGRESS, messages=[api_pb2.AgentMessage(content="x" * 300)]
    )
    for payload in (
        status,
        EncodedStatus((status.SerializeToString(),), enum_pb2.EXECUTION_IN_PROGRESS, 1, 0, 0, 0),
    ):
        request = command_pb2.AgentExecutionUpdateStatusInput.FromString(
            update_request_bytes("aex-1", payload)
        )
        assert request.execution_id == "aex-1"
        assert request.status == status
        assert as_status(payload) == status


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**21, 2**35 + 7])
def test_varint_matches_protobuf(value: int) -> None:
    encoded = varint(value)
    # A uint64-free check: a length prefix is a varint, so a string of that length round-trips.
    probe = api_pb2.AgentMessage(content="a" * min(value, 70_000))
    if 0 < value <= 70_000:
        assert probe.SerializeToString()[1:].startswith(encoded)
    decoded = sum((b & 0x7F) << (7 * i) for i, b in enumerate(encoded))
    assert decoded == value
    assert all(b & 0x80 for b in encoded[:-1]) and not encoded[-1] & 0x80


def test_varint_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError):
        varint(-1)
