"""The StatusBuilder's records of a transcript's entries, in plain Python.

One record per entry the status shows: a message (`MessageEntry`), a tool call (`ToolEntry`,
with its `Approval` when gated), a todo (`TodoEntry`) and a sub-agent (`SubAgentEntry`, holding
its own conversation, bounded to the first and the latest `SUB_AGENT_MESSAGES`). Each record
keeps what the builder still has to look up or change, and its encoding as an element of the
status (`wire`, tag and length included) once encoded; a change empties `wire`, so only what
changed is encoded again. No record holds a proto: upb allocates every proto outside Python's
accounting, and a proto per entry cost several times the status's own size. A finished message
or tool call, once encoded, is `frozen`: its contents live only in its encoding (see
`worker.domain.status_encoding`), and are read back from it in the rare case it changes again.

Also here: how a tool call is rendered (`Component`, `COMPONENTS`), and the conversions of tool
arguments into what a status may hold (`plain`, `cap_strings`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from worker.content.limits import ContentLimits
from worker.content.refs import ContentRef, cut_text, over
from worker.domain.usage import Tokens

Redactor = Callable[[str], str]

TODO_TOOL = "write_todos"
TASK_TOOL = "task"
SUB_AGENT_MESSAGES = 100
"""At most this many messages of one sub-agent's conversation are kept in its
`SubAgentExecution.messages`: the first half and the latest half, a marker between them."""


@dataclass(frozen=True, slots=True)
class Component:
    """How a UI should render a tool call: `ComponentMetadata` without the per-call details."""

    type: str
    group: str
    layout: str


_READ = Component("file", "filesystem", "code")
_LIST = Component("file", "filesystem", "list")
_WRITE = Component("file", "filesystem", "diff")
_DELETE = Component("file", "filesystem", "inline")

COMPONENTS: Mapping[str, Component] = {
    # deepagents' filesystem tools and graphton's sandbox tools (canonical names and aliases).
    "ls": _LIST,
    "glob": _LIST,
    "grep": _LIST,
    "search": _LIST,
    "read_file": _READ,
    "read": _READ,
    "write_file": _WRITE,
    "write": _WRITE,
    "edit_file": _WRITE,
    "edit": _WRITE,
    "delete_file": _DELETE,
    "delete": _DELETE,
    "execute": Component("terminal", "shell", "terminal"),
    TODO_TOOL: Component("todo", "planning", "checklist"),
    TASK_TOOL: Component("subagent", "delegation", "card"),
    "think": Component("thinking", "reasoning", "collapsible"),
}
"""Tool name → component. MCP tools (named by the `mcp_tools` map given to the builder) are
`mcp` with the server as group; anything else is a generic `tool` card."""

GENERIC = Component("tool", "custom", "card")


def component_of(
    name: str,
    args: Mapping[str, Any],
    *,
    mcp_server: str | None,
    sub_agent_id: str,
    sub_agent_name: str,
) -> tuple[Component, dict[str, Any]]:
    """How a call of tool `name` renders, and the per-call details of its `component_metadata`
    (the file's path, the shell command, the sub-agent it ran in...)."""
    details: dict[str, Any] = {}
    if mcp_server is not None:
        kind = Component("mcp", mcp_server, "card")
        details["server"] = mcp_server
    else:
        kind = COMPONENTS.get(name, GENERIC)
    if kind.type == "file":
        path = args.get("path", args.get("file_path"))
        if isinstance(path, str):
            details["path"] = path
    elif kind.type == "terminal":
        command = args.get("command")
        if isinstance(command, str):
            details["command"] = command
    elif kind.type == "subagent":
        sub_type = args.get("subagent_type")
        if isinstance(sub_type, str):
            details["subagent_type"] = sub_type
    if sub_agent_id:
        details["sub_agent_id"] = sub_agent_id
        if sub_agent_name:
            details["sub_agent_name"] = sub_agent_name
    return kind, details


@dataclass(slots=True)
class MessageEntry:
    kind: enum_pb2.MessageType.ValueType
    parts: list[str]
    timestamp: str
    key: str = ""
    # A tuple, not a list: most messages own one or two calls, and a tuple of them is half the
    # size (thousands of messages in a long run).
    tool_ids: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    streaming: bool = False
    wire: bytes = b""  # the encoded element (messages, or a sub-agent's messages); b"": stale
    chars: int = -1  # length of the text, -1: not counted yet
    ref: ContentRef | None = None
    cut: bool = False
    seq: int = 0
    # Frozen: a finished message kept as its encoding; `parts`, `meta` and `timestamp` are unset
    # (their slots emptied) and are read back from `wire` (its own fields: `own` bytes from `at`)
    # before any change.
    frozen: bool = False
    at: int = 0
    own: int = 0

    def text(self) -> str:
        return "".join(self.parts)


@dataclass(slots=True)
class Approval:
    """A gated call's approval record (contract §7 `ToolCall` fields 10-15)."""

    message: str = ""
    requested_at: str = ""
    action: enum_pb2.ApprovalAction.ValueType = enum_pb2.APPROVAL_ACTION_UNSPECIFIED
    approved_by: str = ""
    decided_at: str = ""


@dataclass(slots=True)
class ToolEntry:
    id: str
    name: str
    args: dict[str, Any]
    component: Component
    # The per-call details of `component_metadata.metadata` (path, command, todo ids...).
    details: dict[str, Any]
    status: enum_pb2.ToolCallStatus.ValueType = enum_pb2.TOOL_CALL_PENDING
    result: str = ""
    error: str = ""
    started_at: str = ""
    completed_at: str = ""
    sub_agent_id: str = ""
    owner: MessageEntry | None = None
    # The encoded `tool_calls` element; its payload (the ToolCall itself) starts at `head`.
    wire: bytes = b""
    head: int = 0
    # The args and the component never change once the call is known (but for the todo ids
    # added to the details): their encodings are made once and reused by each new `wire`.
    fixed: bytes = b""
    ref: ContentRef | None = None
    cut: bool = False
    seq: int = 0
    approval: Approval | None = None
    # Frozen: a finished call kept as its encoding; `result`, `error`, `args`, `details`, `fixed`
    # and the times are unset (their slots emptied) and are read back from `wire` before any
    # change (`size`: the result's length, for the budget).
    frozen: bool = False
    size: int = 0


@dataclass(slots=True)
class TodoEntry:
    id: str
    content: str
    status: enum_pb2.TodoStatus.ValueType
    created_at: str
    updated_at: str
    wire: bytes = b""  # the encoded `todos` map entry; b"": stale


@dataclass(slots=True)
class SubAgentEntry:
    id: str
    name: str
    input: str
    status: enum_pb2.SubAgentStatus.ValueType = enum_pb2.SUB_AGENT_PENDING
    parts: list[str] = field(default_factory=list)
    turn: str = ""
    turns_seen: set[str] = field(default_factory=set)
    started_at: str = ""
    completed_at: str = ""
    error: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    model_turns: int = 0
    tool_calls: int = 0
    usage: Tokens | None = None
    helper_usage: Tokens | None = None
    # The conversation: the first messages, then the latest (a bounded deque), with the number
    # left out between them; `by_key` finds a kept turn by its message id.
    head: list[MessageEntry] = field(default_factory=list)
    tail: deque[MessageEntry] = field(default_factory=lambda: deque(maxlen=SUB_AGENT_MESSAGES // 2))
    omitted: int = 0
    marker: MessageEntry | None = None
    by_key: dict[str, MessageEntry] = field(default_factory=dict)
    wire: bytes = b""  # the encoded `sub_agent_executions` element, messages included
    cut: bool = False
    seq: int = 0

    def messages(self) -> Iterable[MessageEntry]:
        yield from self.head
        if self.omitted:
            yield omitted_marker(self)
        yield from self.tail

    def add_message(self, message: MessageEntry) -> None:
        if len(self.head) < SUB_AGENT_MESSAGES - SUB_AGENT_MESSAGES // 2:
            self.head.append(message)
        else:
            if len(self.tail) == self.tail.maxlen:
                dropped = self.tail.popleft()
                self.by_key.pop(dropped.key, None)
                self.omitted += 1
            self.tail.append(message)
        if message.key:
            self.by_key[message.key] = message


def omitted_marker(sub: SubAgentEntry) -> MessageEntry:
    """The MESSAGE_SYSTEM entry standing for a sub-agent's messages left out."""
    if sub.marker is None or sub.marker.key != str(sub.omitted):
        text = (
            f"[{sub.omitted} earlier message(s) of this sub-agent omitted: at most "
            f"{SUB_AGENT_MESSAGES} are kept, the first and the latest]"
        )
        sub.marker = MessageEntry(
            enum_pb2.MESSAGE_SYSTEM,
            [text],
            sub.tail[0].timestamp if sub.tail else "",
            key=str(sub.omitted),
            meta={"omitted_messages": str(sub.omitted)},
        )
    return sub.marker


def chars(message: MessageEntry) -> int:
    """The length of a message's text, counted once."""
    if message.chars < 0:
        message.chars = sum(len(p) for p in message.parts)
    return message.chars


def plain(value: Any, redact: Redactor, limits: ContentLimits | None = None) -> Any:
    """A JSON-compatible copy (what a Struct can hold), strings redacted; given `limits`, every
    string over the inline bound cut to a marked preview."""
    if isinstance(value, str):
        text = redact(value)
        if limits is not None and over(text, limits.tool_result_inline):
            return cut_text(text, limits.preview, "argument over STIGMER_CONTENT_INLINE_BYTES")
        return text
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v, redact, limits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, redact, limits) for v in value]
    return plain(str(value), redact, limits)
