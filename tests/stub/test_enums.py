"""`unknown_enum_values`: numbers no enum value names are found wherever they hide in a status."""

from __future__ import annotations

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from stigmer_stub.enums import unknown_enum_values


def test_a_well_formed_status_has_none() -> None:
    status = api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_IN_PROGRESS)
    status.messages.add(type=enum_pb2.MESSAGE_AI).tool_calls.add(status=enum_pb2.TOOL_CALL_RUNNING)
    status.todos["t-1"].status = enum_pb2.TODO_PENDING
    assert list(unknown_enum_values(status)) == []


def test_unknown_numbers_are_named_by_their_path() -> None:
    status = api_pb2.AgentExecutionStatus()
    status.phase = enum_pb2.ExecutionPhase.ValueType(42)
    status.messages.add(type=enum_pb2.MESSAGE_AI).tool_calls.add(status=9)
    status.todos["t-1"].status = enum_pb2.TodoStatus.ValueType(77)
    status.sub_agent_executions.add(status=enum_pb2.SUB_AGENT_COMPLETED)
    assert sorted(unknown_enum_values(status, "status")) == [
        "status.messages[0].tool_calls[0].status: 9",
        "status.phase: 42",
        "status.todos['t-1'].status: 77",
    ]
