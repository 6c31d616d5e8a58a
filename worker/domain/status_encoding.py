"""The StatusBuilder's entries in protobuf wire format, each encoded once per change.

`EntryEncoder` turns one record of `worker.domain.status_entries` into its element of the
status (tag, length, payload) and keeps the bytes on the record until a change empties them.
A proto exists only while an entry is encoded: the bytes are what is kept (a live upb proto per
entry weighed several times the status itself, outside Python's accounting).

Protobuf reads a message's fields in any order, so an entry is assembled from pieces encoded
apart: a message from its own fields and its tool calls' cached encodings (payload reframed as
`AgentMessage.tool_calls`), a sub-agent from its fields and its messages' encodings, a tool call
from its changing fields and the encoding of its arguments and component (made once).

A finished entry is frozen once encoded (`MessageEntry.frozen`, `ToolEntry.frozen`): its text,
arguments and metadata are dropped, since its encoding holds them; `thaw_message` and
`thaw_tool` read them back before the entry changes again (a tool call's owner message when the
call ends, a cut to fit the budget, an event replayed on resume). So the transcript's contents are
held once, as bytes, not once as Python strings and again as bytes.

`fresh=True` encodes anew without reading or writing any cached bytes (a frozen entry is thawed
first): what tests compare the cached form with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format, struct_pb2

from worker.content.limits import ContentLimits
from worker.content.refs import cut_marker, cut_text, head_of_parts, over
from worker.domain import status_wire as w
from worker.domain.status_entries import (
    MessageEntry,
    SubAgentEntry,
    TodoEntry,
    ToolEntry,
    chars,
)

BUDGET_CUT = "cut to keep the status under STIGMER_STATUS_BUDGET_BYTES"
STREAMING = "still streaming; the whole text is stored when the turn ends"
SUB_OUTPUT_CUT = "the whole output is the result of this sub-agent's task tool call"

SUB_MESSAGES = 100  # SubAgentExecution.messages
_MESSAGE_TOOL_CALLS = 4  # AgentMessage.tool_calls
_TOOL_ARGS = 3  # ToolCall.args
_TOOL_COMPONENT = 6  # ToolCall.component_metadata


_TERMINAL_TOOL = frozenset(
    {enum_pb2.TOOL_CALL_COMPLETED, enum_pb2.TOOL_CALL_FAILED, enum_pb2.TOOL_CALL_SKIPPED}
)


def struct_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return dict(json_format.MessageToDict(message))


def struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if data:
        out.update(data)
    return out


class EntryEncoder:
    """Encodes the builder's entries; `previewing` is set while an offloader is attached."""

    def __init__(
        self,
        redact: Callable[[str], str],
        limits: ContentLimits | None,
        mcp_tools: Mapping[str, str],
    ) -> None:
        self._redact = redact
        self._limits = limits
        self._mcp_tools = mcp_tools
        self.previewing = False

    # -- messages ---------------------------------------------------------------------------

    def message(
        self,
        message: MessageEntry,
        number: int,
        tools: Mapping[str, ToolEntry],
        *,
        fresh: bool = False,
    ) -> bytes:
        """`message` as field `number` (the status's messages, or a sub-agent's)."""
        if message.wire and not fresh:
            return message.wire
        if message.frozen:
            self.thaw_message(message)
        content, ref = self.message_content(message)
        own = api_pb2.AgentMessage(
            type=message.kind,
            content=content,
            timestamp=message.timestamp,
            metadata=struct(message.meta) if message.meta else None,
            content_ref=ref,
        ).SerializeToString()
        body = [own]
        for tool_id in message.tool_ids:
            tool = tools[tool_id]
            encoded = self.tool(tool, fresh=fresh)
            body.append(w.length_delimited(_MESSAGE_TOOL_CALLS, encoded[tool.head :]))
        header = w.tag(number, 2) + w.varint(sum(map(len, body)))
        wire = b"".join((header, *body))
        if not fresh:
            message.wire = wire
            if number == w.MESSAGES and _finished_message(message):
                message.at, message.own = len(header), len(own)
                # Emptied slots, not empty values: nothing held, and a read before a thaw fails.
                del message.parts, message.meta, message.timestamp
                message.frozen = True
        return wire

    @staticmethod
    def thaw_message(message: MessageEntry) -> None:
        """A frozen message's text, metadata and time, read back from its encoding."""
        at = message.at
        own = api_pb2.AgentMessage.FromString(message.wire[at : at + message.own])
        message.parts = [own.content] if own.content else []
        message.meta = struct_dict(own.metadata) if own.HasField("metadata") else {}
        message.timestamp = own.timestamp
        message.frozen = False

    def message_content(
        self, message: MessageEntry
    ) -> tuple[str, api_pb2.ToolCallOutputRef | None]:
        """The text a message's proto carries, and its reference when the text is stored."""
        limits = self._limits
        if limits is None:
            return self._redact(message.text()), None
        if message.ref is not None:
            return message.ref.preview, message.ref.proto()
        if message.cut:
            head = self._redact(head_of_parts(message.parts, limits.preview))
            return head + cut_marker(chars(message), len(head), BUDGET_CUT), None
        if message.streaming and self.previewing and chars(message) > limits.message_inline:
            head = self._redact(head_of_parts(message.parts, limits.preview))
            return head + cut_marker(chars(message), len(head), STREAMING), None
        return self._redact(message.text()), None

    # -- tool calls -------------------------------------------------------------------------

    def tool(self, tool: ToolEntry, *, fresh: bool = False) -> bytes:
        """`tool` as an element of the status's `tool_calls`; its payload starts at `tool.head`."""
        if tool.wire and not fresh:
            return tool.wire
        if tool.frozen:
            self.thaw_tool(tool)
        result = tool.result
        ref = None
        if tool.ref is not None:
            result, ref = tool.ref.preview, tool.ref.proto()
        elif tool.cut and self._limits is not None:
            result = cut_text(result, self._limits.preview, BUDGET_CUT)
        proto = api_pb2.ToolCall(
            id=tool.id,
            name=tool.name,
            result=result,
            output_ref=ref,
            status=tool.status,
            started_at=tool.started_at,
            completed_at=tool.completed_at,
            error=tool.error,
            mcp_server_slug=self._mcp_tools.get(tool.name, ""),
        )
        approval = tool.approval
        if approval is not None:
            proto.requires_approval = True
            proto.approval_message = approval.message
            proto.approval_requested_at = approval.requested_at
            proto.approval_action = approval.action
            proto.approved_by = approval.approved_by
            proto.approval_decided_at = approval.decided_at
        fixed = tool.fixed if tool.fixed and not fresh else self._fixed(tool)
        if not fresh:
            tool.fixed = fixed
        payload = proto.SerializeToString() + fixed
        header = w.tag(w.TOOL_CALLS, 2) + w.varint(len(payload))
        wire = header + payload
        if not fresh:
            tool.wire, tool.head = wire, len(header)
            if tool.status in _TERMINAL_TOOL and tool.ref is None and not tool.cut:
                tool.size = len(tool.result)
                del tool.result, tool.error, tool.started_at, tool.completed_at
                del tool.args, tool.details, tool.fixed
                tool.frozen = True
        return wire

    @staticmethod
    def thaw_tool(tool: ToolEntry) -> None:
        """A frozen call's result, error, times, arguments and details, read back from its
        encoding."""
        call = api_pb2.ToolCall.FromString(tool.wire[tool.head :])
        tool.result, tool.error = call.result, call.error
        tool.started_at, tool.completed_at = call.started_at, call.completed_at
        tool.args = struct_dict(call.args)
        tool.details = struct_dict(call.component_metadata.metadata)
        tool.fixed = b""
        tool.frozen = False

    @staticmethod
    def _fixed(tool: ToolEntry) -> bytes:
        """The call's `args` and `component_metadata` fields (set even when empty)."""
        kind = tool.component
        component = api_pb2.ComponentMetadata(
            component_type=kind.type,
            component_group=kind.group,
            layout_hint=kind.layout,
            metadata=struct(tool.details),
        )
        return w.length_delimited(
            _TOOL_ARGS, struct(tool.args).SerializeToString()
        ) + w.length_delimited(_TOOL_COMPONENT, component.SerializeToString())

    # -- sub-agents, todos, usage -----------------------------------------------------------

    def sub_agent(
        self, sub: SubAgentEntry, tools: Mapping[str, ToolEntry], *, fresh: bool = False
    ) -> bytes:
        """The entry as a `sub_agent_executions` element: its fields, then each message's
        encoding as field 100."""
        if sub.wire and not fresh:
            return sub.wire
        meta: dict[str, Any] = {
            **sub.meta,
            "model_turns": str(sub.model_turns),
            "tool_calls": str(sub.tool_calls),
        }
        if sub.usage is not None:
            meta["usage"] = sub.usage.as_strings()
        if sub.helper_usage is not None:
            meta["helper_usage"] = sub.helper_usage.as_strings()
        output = self._redact("".join(sub.parts))
        limits = self._limits
        if limits is not None and (sub.cut or over(output, limits.message_inline)):
            output = cut_text(output, limits.preview, SUB_OUTPUT_CUT)
        own = api_pb2.SubAgentExecution(
            id=sub.id,
            name=sub.name,
            input=sub.input,
            output=output,
            status=sub.status,
            started_at=sub.started_at,
            completed_at=sub.completed_at,
            error=sub.error,
            metadata=struct(meta),
        ).SerializeToString()
        body = [own]
        body.extend(self.message(m, SUB_MESSAGES, tools, fresh=fresh) for m in sub.messages())
        wire = w.length_delimited(w.SUB_AGENT_EXECUTIONS, b"".join(body))
        if not fresh:
            sub.wire = wire
        return wire

    @staticmethod
    def todo(todo: TodoEntry, *, fresh: bool = False) -> bytes:
        """The todo as an entry of the status's `todos` map (key and value, as on the wire)."""
        if todo.wire and not fresh:
            return todo.wire
        item = api_pb2.TodoItem(
            id=todo.id,
            content=todo.content,
            status=todo.status,
            created_at=todo.created_at,
            updated_at=todo.updated_at,
        )
        entry = w.length_delimited(w.MAP_KEY, todo.id.encode()) + w.length_delimited(
            w.MAP_VALUE, item.SerializeToString()
        )
        wire = w.length_delimited(w.TODOS, entry)
        if not fresh:
            todo.wire = wire
        return wire


def _finished_message(message: MessageEntry) -> bool:
    """Whether an encoded message can be kept as its encoding alone: an AI turn that ended, its
    text inline and whole (redacting it again changes nothing)."""
    return (
        message.kind == enum_pb2.MESSAGE_AI
        and not message.streaming
        and message.ref is None
        and not message.cut
        and message.chars >= 0
    )
