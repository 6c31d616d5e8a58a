"""`OutstandingTools`: a run is at a safe point only when no requested tool call is unfinished."""

from __future__ import annotations

from worker.domain.agent_events import (
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
)
from worker.domain.safe_point import OutstandingTools


def turn(*ids: str, sub_agent_id: str = "") -> ModelTurnEnded:
    calls = tuple(ToolCallRequest(id=i, name="execute") for i in ids)
    return ModelTurnEnded(message_id="m", text="", tool_calls=calls, sub_agent_id=sub_agent_id)


def test_a_fresh_run_and_a_streaming_model_are_safe() -> None:
    tools = OutstandingTools()
    assert tools.idle
    tools.observe(TokenDelta(message_id="m", text="thinking"))
    assert tools.idle


def test_a_requested_tool_is_outstanding_before_its_start_event() -> None:
    tools = OutstandingTools()
    tools.observe(turn("a", "b"))
    assert not tools.idle and len(tools) == 2
    tools.observe(ToolStarted(tool_call_id="a", name="execute"))
    tools.observe(ToolEnded(tool_call_id="a", name="execute", result="ok"))
    assert not tools.idle, "b has not ended"
    tools.observe(ToolEnded(tool_call_id="b", name="execute", result="", error="boom"))
    assert tools.idle, "a failed tool call has ended too"


def test_sub_agent_tools_count_and_a_late_start_event_does_not_reopen_a_call() -> None:
    tools = OutstandingTools()
    tools.observe(ToolStarted(tool_call_id="task-1", name="task"))
    tools.observe(turn("inner", sub_agent_id="task-1"))
    tools.observe(ToolEnded(tool_call_id="inner", name="ls", result="", sub_agent_id="task-1"))
    tools.observe(ToolEnded(tool_call_id="task-1", name="task", result="done"))
    assert tools.idle
    tools.observe(ToolStarted(tool_call_id="inner", name="ls"))
    tools.observe(turn("task-1"))
    assert tools.idle
