"""The status merge of contract §4, with the terminal guard (pure; no servers)."""

from __future__ import annotations

from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from stigmer_stub.merge import is_terminal, merge_status, settle

Phase = enum_pb2.ExecutionPhase


def status(**fields: Any) -> api_pb2.AgentExecutionStatus:
    return api_pb2.AgentExecutionStatus(**fields)


def msgs(*contents: str) -> list[api_pb2.AgentMessage]:
    return [api_pb2.AgentMessage(content=c) for c in contents]


def test_non_empty_lists_replace_wholesale_and_empty_ones_keep_the_stored() -> None:
    current = status(messages=msgs("a", "b"), tool_calls=[api_pb2.ToolCall(id="t1")])
    current.todos["x"].content = "old"
    current.sub_agent_executions.add(id="s1")

    merged = merge_status(current, status(messages=msgs("c")))

    assert [m.content for m in merged.messages] == ["c"]
    assert [t.id for t in merged.tool_calls] == ["t1"]
    assert [s.id for s in merged.sub_agent_executions] == ["s1"]
    assert merged.todos["x"].content == "old"


def test_a_non_empty_todo_map_replaces_the_stored_one() -> None:
    current = status()
    current.todos["old"].content = "x"
    incoming = status()
    incoming.todos["new"].content = "y"
    assert set(merge_status(current, incoming).todos) == {"new"}


def test_scalars_overwrite_only_when_set() -> None:
    current = status(phase=Phase.EXECUTION_IN_PROGRESS, started_at="t0", error="e0")
    merged = merge_status(current, status())
    assert (merged.phase, merged.started_at, merged.error) == (
        Phase.EXECUTION_IN_PROGRESS,
        "t0",
        "e0",
    )
    merged = merge_status(current, status(phase=Phase.EXECUTION_FAILED, error="e1"))
    assert (merged.phase, merged.error) == (Phase.EXECUTION_FAILED, "e1")


def test_audit_and_callback_token_are_never_taken_from_the_update() -> None:
    current = status(callback_token=b"mine")
    current.audit.status_audit.event = "created"
    incoming = status(callback_token=b"theirs")
    incoming.audit.status_audit.event = "forged"
    merged = merge_status(current, incoming)
    assert merged.callback_token == b"mine"
    assert merged.audit.status_audit.event == "created"


@pytest.mark.parametrize(
    "terminal", [Phase.EXECUTION_COMPLETED, Phase.EXECUTION_FAILED, Phase.EXECUTION_CANCELLED]
)
def test_a_terminal_outcome_is_final_for_runner_updates(terminal: int) -> None:
    current = status(phase=terminal, completed_at="t1", messages=msgs("a"))
    late = status(
        phase=Phase.EXECUTION_IN_PROGRESS, error="late", completed_at="t2", messages=msgs("a", "b")
    )
    merged = merge_status(current, late)
    assert (merged.phase, merged.error, merged.completed_at) == (terminal, "", "t1")
    assert [m.content for m in merged.messages] == ["a", "b"]


def test_the_workflows_verdict_passes_the_guard_and_a_success_clears_the_old_error() -> None:
    current = status(phase=Phase.EXECUTION_FAILED, error="attempt 1 failed", messages=msgs("a"))
    merged = merge_status(current, status(phase=Phase.EXECUTION_COMPLETED), authoritative=True)
    assert (merged.phase, merged.error) == (Phase.EXECUTION_COMPLETED, "")
    assert [m.content for m in merged.messages] == ["a"]


def test_inputs_are_not_modified() -> None:
    current = status(messages=msgs("a"))
    incoming = status(messages=msgs("b"), phase=Phase.EXECUTION_COMPLETED)
    merge_status(current, incoming)
    assert [m.content for m in current.messages] == ["a"]
    assert not is_terminal(current.phase)


def test_usage_is_replaced_when_sent_and_kept_when_not() -> None:
    current = status(usage=api_pb2.ExecutionUsage(total=api_pb2.TokenUsage(total_tokens=5)))
    kept = merge_status(current, status(messages=msgs("a")))
    assert kept.usage.total.total_tokens == 5
    newer = api_pb2.ExecutionUsage(total=api_pb2.TokenUsage(total_tokens=9))
    assert merge_status(current, status(usage=newer)).usage.total.total_tokens == 9
    # Usage is part of the transcript, not of the outcome: it still lands after a terminal phase.
    done = status(phase=Phase.EXECUTION_COMPLETED, usage=current.usage)
    assert merge_status(done, status(usage=newer)).usage.total.total_tokens == 9


def _open_run() -> api_pb2.AgentExecutionStatus:
    tool = enum_pb2.ToolCallStatus
    sub = enum_pb2.SubAgentStatus
    return status(
        tool_calls=[
            api_pb2.ToolCall(id="pending", status=tool.TOOL_CALL_PENDING),
            api_pb2.ToolCall(id="running", status=tool.TOOL_CALL_RUNNING),
            api_pb2.ToolCall(id="waiting", status=tool.TOOL_CALL_WAITING_APPROVAL),
            api_pb2.ToolCall(id="done", status=tool.TOOL_CALL_COMPLETED, completed_at="t1"),
            api_pb2.ToolCall(id="skipped", status=tool.TOOL_CALL_SKIPPED),
        ],
        sub_agent_executions=[
            api_pb2.SubAgentExecution(id="busy", status=sub.SUB_AGENT_IN_PROGRESS),
            api_pb2.SubAgentExecution(id="queued", status=sub.SUB_AGENT_PENDING),
            api_pb2.SubAgentExecution(id="finished", status=sub.SUB_AGENT_COMPLETED),
        ],
    )


@pytest.mark.parametrize(
    ("phase", "sub_agents_end"),
    [
        (Phase.EXECUTION_CANCELLED, enum_pb2.SubAgentStatus.SUB_AGENT_CANCELLED),
        (Phase.EXECUTION_TERMINATED, enum_pb2.SubAgentStatus.SUB_AGENT_CANCELLED),
        (Phase.EXECUTION_FAILED, enum_pb2.SubAgentStatus.SUB_AGENT_FAILED),
        (Phase.EXECUTION_COMPLETED, enum_pb2.SubAgentStatus.SUB_AGENT_FAILED),
    ],
)
def test_an_ended_run_is_settled_nothing_left_open(
    phase: Phase.ValueType, sub_agents_end: enum_pb2.SubAgentStatus.ValueType
) -> None:
    run = _open_run()
    run.phase = phase
    run.completed_at = "t9"

    assert settle(run) is True

    interrupted = enum_pb2.ToolCallStatus.TOOL_CALL_INTERRUPTED
    assert {c.id: c.status for c in run.tool_calls} == {
        "pending": interrupted,
        "running": interrupted,
        "waiting": interrupted,
        "done": enum_pb2.ToolCallStatus.TOOL_CALL_COMPLETED,
        "skipped": enum_pb2.ToolCallStatus.TOOL_CALL_SKIPPED,
    }
    assert [c.completed_at for c in run.tool_calls] == ["t9", "t9", "t9", "t1", ""]
    assert {s.id: s.status for s in run.sub_agent_executions} == {
        "busy": sub_agents_end,
        "queued": sub_agents_end,
        "finished": enum_pb2.SubAgentStatus.SUB_AGENT_COMPLETED,
    }
    assert settle(run) is False  # settled once, nothing more to do


@pytest.mark.parametrize(
    "phase",
    [Phase.EXECUTION_IN_PROGRESS, Phase.EXECUTION_WAITING_FOR_APPROVAL, Phase.EXECUTION_PAUSED],
)
def test_a_run_that_has_not_ended_is_left_as_it_is(phase: Phase.ValueType) -> None:
    run = _open_run()
    run.phase = phase
    before = run.SerializeToString()
    assert settle(run) is False
    assert run.SerializeToString() == before
    assert not is_terminal(phase)
