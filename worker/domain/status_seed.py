"""A StatusBuilder's state read back from a status stored by an earlier attempt.

A resumed run continues the transcript it finds: `read_status` turns the stored proto into the
builder's records (`worker.domain.status_entries`). An AI message that was still streaming when
the attempt died is left out (the resumed run produces that turn again); a sub-agent's marker of
omitted messages becomes its count again; counts that an earlier runner wrote as numbers are
read as well as decimal strings; content references are kept as they were stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format, struct_pb2

from worker.content.refs import ContentRef, RefState
from worker.domain.status_entries import (
    TODO_TOOL,
    Approval,
    Component,
    MessageEntry,
    SubAgentEntry,
    TodoEntry,
    ToolEntry,
)
from worker.domain.usage import Tokens


@dataclass
class Seeded:
    """What a stored status holds, as the builder keeps it."""

    phase: enum_pb2.ExecutionPhase.ValueType = enum_pb2.EXECUTION_PENDING
    error: str = ""
    started_at: str = ""
    completed_at: str = ""
    messages: list[MessageEntry] = field(default_factory=list)
    tools: dict[str, ToolEntry] = field(default_factory=dict)
    subs: dict[str, SubAgentEntry] = field(default_factory=dict)
    todos: dict[str, TodoEntry] = field(default_factory=dict)
    todo_order: list[str] = field(default_factory=list)
    todo_serial: int = 0
    turns: set[str] = field(default_factory=set)
    """The model turns the stored status counted already (its messages' and sub-agents')."""


def read_status(status: api_pb2.AgentExecutionStatus, next_seq: Callable[[], int]) -> Seeded:
    """The builder's records of `status`; `next_seq` numbers entries in transcript order."""
    out = Seeded(
        phase=status.phase or enum_pb2.EXECUTION_PENDING,
        error=status.error,
        started_at=status.started_at,
        completed_at=status.completed_at,
    )
    for call in status.tool_calls:
        out.tools[call.id] = _tool(call)
    for stored in status.messages:
        message = _message(stored, out.tools, next_seq)
        if message is not None:
            out.messages.append(message)
            if message.key:
                out.turns.add(message.key)
    for stored_sub in status.sub_agent_executions:
        sub = _sub_agent(stored_sub, out.tools, next_seq)
        out.subs[sub.id] = sub
        out.turns |= sub.turns_seen
    stored_todos = sorted(status.todos.values(), key=lambda t: (t.created_at, t.id))
    for item in stored_todos:
        out.todos[item.id] = TodoEntry(
            item.id, item.content, item.status, item.created_at, item.updated_at
        )
        if item.status != enum_pb2.TODO_CANCELLED:
            out.todo_order.append(item.id)
    used = [item.id for item in stored_todos]
    for tool in out.tools.values():
        history = tool.details.get("todo_ids") if tool.name == TODO_TOOL else None
        if isinstance(history, list):
            used.extend(str(v) for v in history)
    for todo_id in used:
        suffix = todo_id.rpartition("-")[2]
        if suffix.isdigit():
            out.todo_serial = max(out.todo_serial, int(suffix))
    return out


def struct_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return dict(json_format.MessageToDict(message))


def _message(
    stored: api_pb2.AgentMessage, tools: dict[str, ToolEntry], next_seq: Callable[[], int]
) -> MessageEntry | None:
    meta = struct_dict(stored.metadata) if stored.HasField("metadata") else {}
    if stored.type == enum_pb2.MESSAGE_AI and meta.get("streaming"):
        return None  # a turn cut off by the crash; the resumed run produces it again
    message = MessageEntry(
        stored.type,
        [stored.content] if stored.content else [],
        stored.timestamp,
        key=str(meta.get("message_id", "")),
        meta=meta,
        ref=_ref(stored.content_ref) if stored.HasField("content_ref") else None,
        seq=next_seq(),
    )
    for call in stored.tool_calls:
        tool = tools.get(call.id)
        if tool is None:
            tool = tools[call.id] = _tool(call)
        tool.owner = message
        message.tool_ids += (call.id,)
    return message


def _sub_agent(
    stored: api_pb2.SubAgentExecution, tools: dict[str, ToolEntry], next_seq: Callable[[], int]
) -> SubAgentEntry:
    meta = struct_dict(stored.metadata) if stored.HasField("metadata") else {}
    usage = meta.pop("usage", None)
    helper_usage = meta.pop("helper_usage", None)
    sub = SubAgentEntry(
        id=stored.id,
        name=stored.name,
        input=stored.input,
        status=stored.status,
        parts=[stored.output] if stored.output else [],
        started_at=stored.started_at,
        completed_at=stored.completed_at,
        error=stored.error,
        model_turns=count(meta.pop("model_turns", 0)),
        tool_calls=count(meta.pop("tool_calls", 0)),
        meta=meta,
    )
    if isinstance(usage, Mapping):
        sub.usage = _tokens(usage, sub.model_turns)
    if isinstance(helper_usage, Mapping):
        sub.helper_usage = _tokens(helper_usage, 0)
    for stored_message in stored.messages:
        if stored_message.type == enum_pb2.MESSAGE_SYSTEM:
            omitted = struct_dict(stored_message.metadata).get("omitted_messages")
            sub.omitted += count(omitted)
            continue
        message = _message(stored_message, tools, next_seq)
        if message is not None:
            sub.add_message(message)
            if message.key:
                sub.turns_seen.add(message.key)
    return sub


def _tool(call: api_pb2.ToolCall) -> ToolEntry:
    stored = call.component_metadata
    details = struct_dict(stored.metadata) if stored.HasField("metadata") else {}
    sub_id = details.get("sub_agent_id", "")
    return ToolEntry(
        id=call.id,
        name=call.name,
        args=struct_dict(call.args) if call.HasField("args") else {},
        component=Component(stored.component_type, stored.component_group, stored.layout_hint),
        details=details,
        status=call.status or enum_pb2.TOOL_CALL_PENDING,
        result=call.result,
        error=call.error,
        started_at=call.started_at,
        completed_at=call.completed_at,
        sub_agent_id=sub_id if isinstance(sub_id, str) else "",
        ref=_ref(call.output_ref) if call.HasField("output_ref") else None,
        approval=Approval(
            call.approval_message,
            call.approval_requested_at,
            call.approval_action,
            call.approved_by,
            call.approval_decided_at,
        )
        if call.requires_approval
        else None,
    )


def _tokens(stored: Mapping[str, Any], calls: int) -> Tokens:
    return Tokens(
        count(stored.get("input_tokens")),
        count(stored.get("output_tokens")),
        count(stored.get("total_tokens")),
        count(stored.get("model_calls", calls)),
    )


def count(value: Any) -> int:
    """A count read back from a stored `metadata` Struct: a decimal string, or a number that
    an earlier runner wrote."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _ref(stored: api_pb2.ToolCallOutputRef) -> ContentRef:
    """A reference an earlier attempt stored, kept as it was."""
    return ContentRef(
        size_bytes=stored.size_bytes,
        mime_type=stored.mime_type,
        preview=stored.truncated_preview,
        is_image=stored.is_image,
        content_hash=stored.content_hash,
        storage_key=stored.storage_key,
        download_url=stored.download_url,
        state=RefState.STORED,
    )
