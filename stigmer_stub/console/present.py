"""What the console sends the browser: plain JSON made from the API's messages, bounded.

Agent-produced text goes out as JSON strings and the pages put it in the document as text
(`textContent`), never as markup. Every reply is a bounded window: at most `MAX_ROWS` executions
and at most `MAX_MESSAGES` messages (and as many tool calls) of one execution.
"""

from __future__ import annotations

from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from stigmer_stub.windows import MARKER_KEY
from stigmer_stub.workflow import workflow_id

MAX_ROWS = 1000
"""Executions (or sessions, agents) in one reply."""
MAX_MESSAGES = 10_000
"""Messages (and tool calls, sub-agents) of one execution in one reply: the latest ones."""

Phase = enum_pb2.ExecutionPhase

TERMINAL_PHASES = frozenset(
    {
        Phase.EXECUTION_COMPLETED,
        Phase.EXECUTION_FAILED,
        Phase.EXECUTION_CANCELLED,
        Phase.EXECUTION_TERMINATED,
    }
)


def phase_name(phase: int) -> str:
    name = Phase.Name(Phase.ValueType(phase)) if phase in Phase.values() else str(phase)
    return name.removeprefix("EXECUTION_")


def parse_phase(text: str) -> Phase.ValueType:
    """`COMPLETED`, `EXECUTION_COMPLETED` or empty (any phase, 0)."""
    text = text.strip().upper()
    if not text:
        return Phase.EXECUTION_PHASE_UNSPECIFIED
    name = text if text.startswith("EXECUTION_") else f"EXECUTION_{text}"
    if name not in Phase.keys():  # noqa: SIM118 (an enum wrapper, not a dict)
        raise ValueError(f"unknown phase {text!r}")
    return Phase.Value(name)


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=False
    )


def summary(execution: api_pb2.AgentExecution) -> dict[str, Any]:
    """One row of the executions list."""
    status = execution.status
    return {
        "id": execution.metadata.id,
        "name": execution.metadata.name,
        "phase": phase_name(status.phase),
        "agent_id": execution.spec.agent_id,
        "session_id": execution.spec.session_id,
        "message": execution.spec.message[:200],
        "created_at": execution.status.audit.spec_audit.created_at.ToJsonString()
        if execution.status.audit.spec_audit.HasField("created_at")
        else "",
        "started_at": status.started_at,
        "completed_at": status.completed_at,
        "messages": len(status.messages),
        "tool_calls": len(status.tool_calls),
    }


def actions(phase: int) -> list[str]:
    """The actions that apply to an execution in `phase` (the buttons the page enables)."""
    if phase in TERMINAL_PHASES:
        return ["recover"] if phase in {Phase.EXECUTION_FAILED} else []
    found = ["cancel", "terminate"]
    if phase == Phase.EXECUTION_PAUSED:
        found.append("resume")
    elif phase in {Phase.EXECUTION_PENDING, Phase.EXECUTION_IN_PROGRESS}:
        found.append("pause")
    # submitApproval needs the execution WAITING_FOR_APPROVAL (docs/run-control.md).
    if phase == Phase.EXECUTION_WAITING_FOR_APPROVAL:
        found += ["approve", "skip", "reject", "approve_all"]
    return found


def execution(
    execution: api_pb2.AgentExecution,
    *,
    message_offset: int = 0,
    total_messages: int | None = None,
    tool_call_offset: int = 0,
    total_tool_calls: int | None = None,
) -> dict[str, Any]:
    """One execution for its page: the latest `MAX_MESSAGES` messages and tool calls."""
    status = execution.status
    messages = list(status.messages)
    tools = list(status.tool_calls)
    subs = list(status.sub_agent_executions)
    window = _window_marker(messages[0]) if messages else None
    if window is not None:
        # A windowed reply of a large execution: its latest part, after a marker (`windows`).
        messages = messages[1:]
        message_offset = window.get("omitted_messages", 0)
        total_messages = window.get("total_messages", len(messages) + message_offset)
        tool_call_offset = window.get("omitted_tool_calls", 0)
        total_tool_calls = window.get("total_tool_calls", len(tools) + tool_call_offset)
    total_messages = len(messages) + message_offset if total_messages is None else total_messages
    total_tool_calls = (
        len(tools) + tool_call_offset if total_tool_calls is None else total_tool_calls
    )
    if len(messages) > MAX_MESSAGES:
        message_offset += len(messages) - MAX_MESSAGES
        messages = messages[-MAX_MESSAGES:]
    if len(tools) > MAX_MESSAGES:
        tool_call_offset += len(tools) - MAX_MESSAGES
        tools = tools[-MAX_MESSAGES:]
    subs = subs[-MAX_MESSAGES:]
    usage = as_dict(status.usage) if status.HasField("usage") else {}
    return {
        "id": execution.metadata.id,
        "name": execution.metadata.name,
        "phase": phase_name(status.phase),
        "terminal": status.phase in TERMINAL_PHASES,
        "agent_id": execution.spec.agent_id,
        "session_id": execution.spec.session_id,
        "request": execution.spec.message,
        "model": execution.spec.execution_config.model_name,
        "workflow_id": workflow_id(execution.metadata.id),
        "started_at": status.started_at,
        "completed_at": status.completed_at,
        "error": status.error,
        "message_offset": message_offset,
        "total_messages": total_messages,
        "tool_call_offset": tool_call_offset,
        "total_tool_calls": total_tool_calls,
        "messages": [_message(m) for m in messages],
        "tool_calls": [_tool_call(c) for c in tools],
        "sub_agents": [_sub_agent(s) for s in subs],
        "todos": [
            {
                "id": key,
                "content": item.content,
                "status": enum_pb2.TodoStatus.Name(item.status).removeprefix("TODO_")
                if item.status in enum_pb2.TodoStatus.values()
                else str(item.status),
            }
            for key, item in _ordered_todos(status)
        ],
        "usage": usage,
        "actions": actions(status.phase),
    }


def _ordered_todos(
    status: api_pb2.AgentExecutionStatus,
) -> list[tuple[str, api_pb2.TodoItem]]:
    """The todos in the agent's order: the ids its latest `write_todos` call gave (the runner
    records them in the call's `component_metadata`), then any other by creation."""
    order: list[str] = []
    for call in reversed(status.tool_calls):
        fields = call.component_metadata.metadata.fields
        if "todo_ids" in fields:
            order = [v.string_value for v in fields["todo_ids"].list_value.values]
            break
    rank = {todo_id: n for n, todo_id in enumerate(order)}
    return sorted(
        status.todos.items(),
        key=lambda kv: (rank.get(kv[0], len(rank)), kv[1].created_at, kv[0]),
    )


def _string_field(struct: Any, name: str) -> str:
    value = struct.fields.get(name)
    return value.string_value if value is not None else ""


def _window_marker(message: api_pb2.AgentMessage) -> dict[str, int] | None:
    if message.type != enum_pb2.MESSAGE_SYSTEM or not message.HasField("metadata"):
        return None
    values = json_format.MessageToDict(message.metadata).get(MARKER_KEY)
    if not isinstance(values, dict):
        return None
    return {str(k): int(v) for k, v in values.items() if isinstance(v, int | float)}


def _message(message: api_pb2.AgentMessage) -> dict[str, Any]:
    found: dict[str, Any] = {
        "type": enum_pb2.MessageType.Name(message.type).removeprefix("MESSAGE_")
        if message.type in enum_pb2.MessageType.values()
        else str(message.type),
        "content": message.content,
        "timestamp": message.timestamp,
    }
    if message.HasField("content_ref"):
        found["content_ref"] = as_dict(message.content_ref)
    return found


def _tool_call(call: api_pb2.ToolCall) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": call.id,
        "name": call.name,
        "status": enum_pb2.ToolCallStatus.Name(call.status).removeprefix("TOOL_CALL_")
        if call.status in enum_pb2.ToolCallStatus.values()
        else str(call.status),
        "args": json_format.MessageToDict(call.args) if call.HasField("args") else {},
        "args_preview": call.args_preview,
        "result": call.result,
        "error": call.error,
        "started_at": call.started_at,
        "completed_at": call.completed_at,
        "requires_approval": call.requires_approval,
        "approval_message": call.approval_message,
        "approved_by": call.approved_by,
        # A call made by a sub-agent names it (the runner's `component_metadata`).
        "sub_agent_id": _string_field(call.component_metadata.metadata, "sub_agent_id"),
    }
    if call.HasField("output_ref"):
        found["output_ref"] = as_dict(call.output_ref)
    return found


def _sub_agent(sub: api_pb2.SubAgentExecution) -> dict[str, Any]:
    return {
        "id": sub.id,
        "name": sub.name,
        "input": sub.input,
        "output": sub.output,
        "status": enum_pb2.SubAgentStatus.Name(sub.status).removeprefix("SUB_AGENT_")
        if sub.status in enum_pb2.SubAgentStatus.values()
        else str(sub.status),
        "error": sub.error,
        "started_at": sub.started_at,
        "completed_at": sub.completed_at,
        "parent_tool_call_id": sub.id,  # a sub-agent is keyed by the `task` call that started it
        "messages": [_message(m) for m in list(sub.messages)[-MAX_MESSAGES:]],
    }
