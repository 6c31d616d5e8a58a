"""The StatusBuilder: a pure reducer from agent events to `AgentExecutionStatus`.

It keeps the run's state in plain Python and builds the proto only in `snapshot()`. Streamed text
is never appended to a proto field: protobuf (upb) keeps every intermediate string of a field that
is assigned repeatedly, which makes a long answer quadratic in memory. Entries are found through
dict indexes and each keeps a cached proto that a change invalidates, so the cost of an event does
not grow with the length of the run and a snapshot copies unchanged entries instead of rebuilding
them.

What it produces:

- the user's message as MESSAGE_HUMAN, then one MESSAGE_AI per model turn of the main agent
  (keyed by the model's message id), with `metadata` {message_id, model, usage} and the tool calls
  it requested;
- `usage` (contract §7, ours): the tokens of every model call, the agent's turns, the sub-agents'
  turns and helper calls inside the graph (summarisation), with per-model totals (see
  `worker.domain.usage`);
- `tool_calls`: every tool call of the run, sub-agents' included, keyed by the model's tool-call
  id: PENDING when the model asks for it, RUNNING when it starts, then COMPLETED with the clean
  result text or FAILED with the error. Two identical calls are two entries (two ids);
- `todos`: the agent's current `write_todos` list, with stable ids (see `worker.domain.todos`: a
  new todo gets a new id, a finished one never goes back). The history is in the `write_todos`
  tool calls: each one's `args` is that version of the list and its component metadata's
  `todo_ids` the ids its items got. When the agent empties its list, the previous items stay,
  the unfinished ones TODO_CANCELLED (an empty map would leave the orchestrator's stale one in
  place, contract §4). Sub-agents' own todo lists are not the agent's plan and stay out of it;
- `sub_agent_executions`: one per `task` tool call (id = that call's id, name = `subagent_type`,
  input = the task description, output = the sub-agent's latest text while it runs, its answer at
  the end), with its conversation in `messages` (contract §7: one MESSAGE_AI per turn, its text
  and tool calls; at most `SUB_AGENT_MESSAGES` kept, the first and the latest halves, with a
  MESSAGE_SYSTEM marker saying how many were left out between them) and `metadata` {model_turns,
  tool_calls, model, usage (its turns), helper_usage (helper calls made inside it, such as its
  history's summarisation; counted in the execution's `usage.helpers`, not in `sub_agents`)};
- counts in any `metadata` Struct are decimal strings (`"3"`): a Struct number is a double, which
  JSON renders as `3.0` in some encoders.
- `component_metadata` on every tool call, from the tool's name (see `COMPONENTS`);
- approval gates (docs/run-control.md): a gated call is TOOL_CALL_WAITING_APPROVAL with
  `requires_approval`, `approval_message` and `approval_requested_at`; a decision adds
  `approval_action`, `approved_by`, `approval_decided_at`. A skipped or rejected call ends
  TOOL_CALL_SKIPPED, its result what the model was told (a rejection: the person's comment); an
  approved one goes back to PENDING and runs. `await_approval()` sets the phase
  EXECUTION_WAITING_FOR_APPROVAL when calls are waiting. Without gates none of this appears, so an
  orchestrator of the January contract never receives a §7 value from a run it drives.

Resume: seeded with a status stored by an earlier attempt, the builder continues that transcript.
The human message is not added twice, an AI message that was still streaming when the attempt
died is dropped (the resumed run produces that turn again), and events replayed for entries that
already exist update them in place.

Each `apply` returns an `Applied` saying whether the state changed and whether the change is
significant (phase, tool start or end, todo, sub-agent, error), for the update policy.

Large content (given `limits`, see `worker.content`): with an `Offloader` attached (the
orchestrator stores content, contract §7), a tool result over the inline bound and an AI message
text over its bound are handed to it; the entry then carries a preview and the reference
(`ToolCall.output_ref`, `AgentMessage.content_ref`), and a message still streaming past its bound
carries only a preview. A sub-agent's output over the message bound is a marked preview (the
whole of it is the `task` call's result), and a tool argument string over the inline bound is
cut. Whatever the orchestrator, a status over the budget has its oldest inline contents cut to
previews marked as cut until it fits. Only what the status shows changes; the model's view never.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format, struct_pb2

from worker.content.limits import ContentLimits, Offloader
from worker.content.refs import (
    ContentRef,
    RefState,
    cut_marker,
    cut_text,
    head_of_parts,
    over,
    utf8_size,
)
from worker.domain import status_wire
from worker.domain import todos as todo_ids
from worker.domain.agent_events import (
    AgentEvent,
    ApprovalDecided,
    ApprovalRequested,
    HelperModelCall,
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
    Usage,
)
from worker.domain.status_delta import StatusParts
from worker.domain.usage import Tokens, UsageLedger, usage_strings

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Redactor = Callable[[str], str]

TODO_TOOL = "write_todos"
TASK_TOOL = "task"
SUB_AGENT_MESSAGES = 100
"""At most this many messages of one sub-agent's conversation are kept in its
`SubAgentExecution.messages`: the first half and the latest half, a marker between them."""
_SUB_MESSAGES_FIELD = 100  # SubAgentExecution.messages
_FINISHED_TODO = frozenset({enum_pb2.TODO_COMPLETED, enum_pb2.TODO_CANCELLED})


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-01-02T03:04:05.678Z`: UTC, millisecond precision."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class Applied:
    """What one event did to the status."""

    changed: bool
    significant: bool


UNCHANGED = Applied(changed=False, significant=False)
CHANGED = Applied(changed=True, significant=False)
SIGNIFICANT = Applied(changed=True, significant=True)


@dataclass(frozen=True, slots=True)
class StatusCounts:
    messages: int
    tool_calls: int
    todos: int
    sub_agents: int


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

_TOOL_STATUS = enum_pb2.ToolCallStatus
_SUB_STATUS = enum_pb2.SubAgentStatus
_TODO_STATUS: Mapping[str, enum_pb2.TodoStatus.ValueType] = {
    "pending": enum_pb2.TODO_PENDING,
    "in_progress": enum_pb2.TODO_IN_PROGRESS,
    "completed": enum_pb2.TODO_COMPLETED,
    "cancelled": enum_pb2.TODO_CANCELLED,
}
# The generated class of a `todos` map entry (key = todo id, value = TodoItem).
_TODOS_ENTRY: Any = api_pb2.AgentExecutionStatus.TodosEntry
_TERMINAL_TOOL = frozenset(
    {enum_pb2.TOOL_CALL_COMPLETED, enum_pb2.TOOL_CALL_FAILED, enum_pb2.TOOL_CALL_SKIPPED}
)
_NOT_RUN = frozenset({enum_pb2.APPROVAL_ACTION_SKIP, enum_pb2.APPROVAL_ACTION_REJECT})
_TERMINAL_SUB = frozenset({enum_pb2.SUB_AGENT_COMPLETED, enum_pb2.SUB_AGENT_FAILED})


def _plain(value: Any, redact: Redactor) -> Any:
    """A JSON-compatible copy (what a Struct can hold), strings redacted."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, redact) for v in value]
    return redact(str(value))


def _struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if data:
        out.update(data)
    return out


def _struct_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return dict(json_format.MessageToDict(message))


@dataclass(slots=True)
class _Wire:
    """An entry's encoding as a repeated-field element, kept while its proto is the same one.

    Every change to an entry drops its cached proto; a new proto object means new bytes.
    """

    of: object = None
    data: bytes = b""

    def get(self, number: int, proto: Any) -> bytes:
        if self.of is not proto:
            self.data = status_wire.length_delimited(number, proto.SerializeToString())
            self.of = proto
        return self.data


@dataclass(slots=True)
class _Message:
    kind: enum_pb2.MessageType.ValueType
    parts: list[str]
    timestamp: str
    key: str = ""
    tool_ids: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    streaming: bool = False
    proto: api_pb2.AgentMessage | None = None
    wire: _Wire = field(default_factory=_Wire)
    chars: int = -1  # length of the text, -1: not counted yet
    ref: ContentRef | None = None
    cut: bool = False
    seq: int = 0


@dataclass(slots=True)
class _Tool:
    id: str
    name: str
    args: dict[str, Any]
    component: api_pb2.ComponentMetadata
    status: enum_pb2.ToolCallStatus.ValueType = enum_pb2.TOOL_CALL_PENDING
    result: str = ""
    error: str = ""
    started_at: str = ""
    completed_at: str = ""
    sub_agent_id: str = ""
    owner: _Message | None = None
    proto: api_pb2.ToolCall | None = None
    wire: _Wire = field(default_factory=_Wire)
    # The args never change once the call is known; their Struct is built once (a Struct
    # from a dict is built in Python, field by field), then copied into each new proto.
    args_struct: struct_pb2.Struct | None = None
    ref: ContentRef | None = None
    cut: bool = False
    seq: int = 0
    approval: _Approval | None = None


@dataclass(slots=True)
class _Approval:
    """A gated call's approval record (contract §7 `ToolCall` fields 10-15)."""

    message: str = ""
    requested_at: str = ""
    action: enum_pb2.ApprovalAction.ValueType = enum_pb2.APPROVAL_ACTION_UNSPECIFIED
    approved_by: str = ""
    decided_at: str = ""


@dataclass(slots=True)
class _Todo:
    id: str
    content: str
    status: enum_pb2.TodoStatus.ValueType
    created_at: str
    updated_at: str
    # The `todos` map entry and its encoding, kept until the todo changes (`entry` is None then).
    entry: Any = None
    wire: _Wire = field(default_factory=_Wire)


@dataclass(slots=True)
class _SubAgent:
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
    head: list[_Message] = field(default_factory=list)
    tail: deque[_Message] = field(default_factory=lambda: deque(maxlen=SUB_AGENT_MESSAGES // 2))
    omitted: int = 0
    marker: _Message | None = None
    by_key: dict[str, _Message] = field(default_factory=dict)
    # The entry without its messages; the messages' encodings are appended to it on the wire.
    proto: api_pb2.SubAgentExecution | None = None
    wire: _Wire = field(default_factory=_Wire)
    cut: bool = False
    seq: int = 0

    def messages(self) -> Iterable[_Message]:
        yield from self.head
        if self.omitted:
            yield _omitted_marker(self)
        yield from self.tail

    def add_message(self, message: _Message) -> None:
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


def _omitted_marker(sub: _SubAgent) -> _Message:
    """The MESSAGE_SYSTEM entry standing for a sub-agent's messages left out."""
    if sub.marker is None or sub.marker.key != str(sub.omitted):
        text = (
            f"[{sub.omitted} earlier message(s) of this sub-agent omitted: at most "
            f"{SUB_AGENT_MESSAGES} are kept, the first and the latest]"
        )
        sub.marker = _Message(
            enum_pb2.MESSAGE_SYSTEM,
            [text],
            sub.tail[0].timestamp if sub.tail else "",
            key=str(sub.omitted),
            meta={"omitted_messages": str(sub.omitted)},
        )
    return sub.marker


class StatusBuilder:
    """Reduces agent events into the execution's status; see the module docstring."""

    def __init__(
        self,
        *,
        user_message: str | None = None,
        initial: api_pb2.AgentExecutionStatus | None = None,
        clock: Clock = utc_now,
        redact: Redactor = _identity,
        mcp_tools: Mapping[str, str] | None = None,
        limits: ContentLimits | None = None,
        offloader: Offloader | None = None,
    ) -> None:
        self._limits = limits
        self._offloader = offloader
        self._serial = 0
        self._over_budget_logged = False
        self._clock = clock
        self._redact = redact
        self._mcp_tools = dict(mcp_tools or {})
        self._phase: enum_pb2.ExecutionPhase.ValueType = enum_pb2.EXECUTION_PENDING
        self._error = ""
        self._started_at = ""
        self._completed_at = ""
        self._messages: list[_Message] = []
        self._by_key: dict[str, _Message] = {}
        self._tools: dict[str, _Tool] = {}
        self._todos: dict[str, _Todo] = {}
        self._todo_order: list[str] = []
        self._todo_serial = 0
        self._subs: dict[str, _SubAgent] = {}
        self._usage = UsageLedger()
        self._usage_proto: api_pb2.ExecutionUsage | None = None
        self._handlers: dict[type, Callable[[Any], Applied]] = {
            TokenDelta: self._on_delta,
            ModelTurnEnded: self._on_turn,
            ToolStarted: self._on_tool_started,
            ToolEnded: self._on_tool_ended,
            ApprovalRequested: self._on_approval_requested,
            ApprovalDecided: self._on_approval_decided,
            HelperModelCall: self._on_helper,
        }
        self._approvals: dict[str, _Approval] = {}
        self._gate_subs: dict[str, str] = {}
        if initial is not None:
            self._seed(initial)
        if user_message is not None:
            self._add_human(user_message)

    # -- public surface -----------------------------------------------------------------------

    def apply(self, event: AgentEvent | object) -> Applied:
        """Fold one event in; a malformed event is logged and skipped, never raised."""
        handler = self._handlers.get(type(event))
        if handler is None:
            log.warning(
                "malformed_event_skipped",
                reason="unknown event type",
                event_type=type(event).__name__,
            )
            return UNCHANGED
        problem = _problem(event)
        if problem is not None:
            log.warning("malformed_event_skipped", reason=problem, event_type=type(event).__name__)
            return UNCHANGED
        try:
            return handler(event)
        except Exception as err:  # a reducer bug must not end the run; the event is dropped
            log.warning(
                "malformed_event_skipped",
                reason="event could not be applied",
                event_type=type(event).__name__,
                error=repr(err),
            )
            return UNCHANGED

    def start(self, now: datetime | None = None) -> Applied:
        """Phase IN_PROGRESS; `started_at` is kept when resuming a run that already started."""
        self._phase = enum_pb2.EXECUTION_IN_PROGRESS
        if not self._started_at:
            self._started_at = rfc3339(now or self._clock())
        self._completed_at = ""
        return SIGNIFICANT

    def complete(self) -> Applied:
        self._finish_streaming()
        self._phase = enum_pb2.EXECUTION_COMPLETED
        self._completed_at = self._now()
        return SIGNIFICANT

    def fail(self, error: str) -> Applied:
        """Phase FAILED with `error`; the transcript is kept and unfinished work marked failed."""
        self._error = self._redact(error)
        self._interrupt("execution failed: " + self._error)
        self._phase = enum_pb2.EXECUTION_FAILED
        self._completed_at = self._now()
        return SIGNIFICANT

    def cancel(self) -> Applied:
        self._interrupt("execution cancelled")
        self._phase = enum_pb2.EXECUTION_CANCELLED
        self._completed_at = self._now()
        return SIGNIFICANT

    def pause(self) -> Applied:
        """Phase PAUSED: the run stopped at a safe point and continues from its checkpoint, so
        no entry is closed (the resumed run finishes them)."""
        self._finish_streaming()
        self._phase = enum_pb2.EXECUTION_PAUSED
        return SIGNIFICANT

    def await_approval(self) -> Applied:
        """Phase WAITING_FOR_APPROVAL when calls wait for a person (else nothing changes)."""
        if not self.pending_approvals:
            return UNCHANGED
        self._finish_streaming()
        self._phase = enum_pb2.EXECUTION_WAITING_FOR_APPROVAL
        return SIGNIFICANT

    @property
    def pending_approvals(self) -> list[str]:
        """The ids of the calls waiting for a decision."""
        return [
            t.id for t in self._tools.values() if t.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL
        ]

    def gate_status(self) -> api_pb2.AgentExecutionStatus:
        """What an attempt ending at a gate returns: the phase and only the waiting calls (the
        whole status went through `updateStatus` already)."""
        return api_pb2.AgentExecutionStatus(
            phase=self._phase,
            started_at=self._started_at,
            tool_calls=[self._tool_proto(self._tools[i]) for i in self.pending_approvals],
        )

    def seed_approval(
        self,
        tool_call_id: str,
        *,
        message: str,
        requested_at: str,
        action: int = 0,
        approved_by: str = "",
        decided_at: str = "",
        sub_agent_id: str = "",
    ) -> None:
        """An approval recorded by an earlier attempt (and the orchestrator), applied to the
        call when it appears, so a resumed run's transcript keeps it. `sub_agent_id` places a
        sub-agent's call under its sub-agent again (a resume replays only the main agent)."""
        if sub_agent_id:
            self._gate_subs[tool_call_id] = sub_agent_id
        record = _Approval(
            message,
            requested_at,
            enum_pb2.ApprovalAction.ValueType(action),
            approved_by,
            decided_at,
        )
        self._approvals[tool_call_id] = record
        tool = self._tools.get(tool_call_id)
        if tool is not None:
            tool.approval = record
            self._touch(tool)

    def use_mcp_tools(self, servers: Mapping[str, str]) -> None:
        """Tool name → MCP server, known once the servers started: their calls get the `mcp`
        component and `mcp_server_slug` (contract §7; an orchestrator without it skips it)."""
        self._mcp_tools.update(servers)

    def note(self, text: str) -> Applied:
        """A MESSAGE_SYSTEM entry: what the runner itself reports (a degraded skill, the
        sandbox's isolation), so it is in the transcript a user reads. Idempotent per text."""
        content = self._redact(text)
        for message in self._messages:
            if message.kind == enum_pb2.MESSAGE_SYSTEM and "".join(message.parts) == content:
                return UNCHANGED
        self._messages.append(_Message(enum_pb2.MESSAGE_SYSTEM, [content], self._now()))
        return SIGNIFICANT

    def attach_offloader(self, offloader: Offloader | None) -> None:
        """Hand large contents to `offloader` from now on (None: keep them inline)."""
        self._offloader = offloader

    @property
    def phase(self) -> enum_pb2.ExecutionPhase.ValueType:
        return self._phase

    @property
    def message_count(self) -> int:
        return len(self._messages)

    @property
    def tool_call_count(self) -> int:
        return len(self._tools)

    @property
    def counts(self) -> StatusCounts:
        return StatusCounts(
            messages=len(self._messages),
            tool_calls=len(self._tools),
            todos=len(self._todos),
            sub_agents=len(self._subs),
        )

    def snapshot(self) -> api_pb2.AgentExecutionStatus:
        """A fresh proto of the complete state (the orchestrator replaces lists wholesale)."""
        if self._limits is not None:
            self.encoded()  # cuts what the budget requires, so both forms are the same status
        todos = {t.id: self._todo_proto(t) for t in self._todos.values()}
        return api_pb2.AgentExecutionStatus(
            phase=self._phase,
            error=self._error,
            started_at=self._started_at,
            completed_at=self._completed_at,
            messages=[self._message_proto(m) for m in self._messages],
            tool_calls=[self._tool_proto(t) for t in self._tools.values()],
            sub_agent_executions=[self._sub_full_proto(s) for s in self._subs.values()],
            todos=todos,
            usage=self._usage_message(),
        )

    def encoded(self) -> status_wire.EncodedStatus:
        """The same status as `snapshot()`, serialized from each entry's cached encoding.

        What a progress update sends: an unchanged entry costs one copy of its bytes instead of a
        proto copy and a re-serialization (see `worker.domain.status_wire`).
        """
        status = self._encode()
        limits = self._limits
        if limits is not None and len(status.data) > limits.status_budget:
            status = self._fit(status, limits)
        return status

    def parts(self) -> StatusParts:
        """The same status as `encoded()`, as its entries' cached encodings: what a delta is
        computed from (`worker.domain.status_delta`), without joining them."""
        parts = self._parts()
        limits = self._limits
        if limits is not None and parts.size > limits.status_budget:
            self._fit(parts.encoded(), limits)
            parts = self._parts()
        return parts

    def _parts(self) -> StatusParts:
        w = status_wire
        usage = self._usage_message()
        return StatusParts(
            messages=[m.wire.get(w.MESSAGES, self._message_proto(m)) for m in self._messages],
            phase=self._phase,
            tool_calls=[
                t.wire.get(w.TOOL_CALLS, self._tool_proto(t)) for t in self._tools.values()
            ],
            tool_ids=list(self._tools),
            sub_agents=[self._sub_wire(s) for s in self._subs.values()],
            sub_ids=list(self._subs),
            error=self._error,
            started_at=self._started_at,
            completed_at=self._completed_at,
            todos=[todo.wire.get(w.TODOS, self._todo_entry(todo)) for todo in self._todos.values()],
            usage=b"" if usage is None else w.length_delimited(w.USAGE, usage.SerializeToString()),
        )

    def _encode(self) -> status_wire.EncodedStatus:
        w = status_wire
        parts: list[bytes] = [
            m.wire.get(w.MESSAGES, self._message_proto(m)) for m in self._messages
        ]
        if self._phase:
            parts.append(w.varint_field(w.PHASE, self._phase))
        parts.extend(t.wire.get(w.TOOL_CALLS, self._tool_proto(t)) for t in self._tools.values())
        parts.extend(self._sub_wire(s) for s in self._subs.values())
        for number, text in (
            (w.ERROR, self._error),
            (w.STARTED_AT, self._started_at),
            (w.COMPLETED_AT, self._completed_at),
        ):
            if text:
                parts.append(w.length_delimited(number, text.encode()))
        parts.extend(
            todo.wire.get(w.TODOS, self._todo_entry(todo)) for todo in self._todos.values()
        )
        usage = self._usage_message()
        if usage is not None:
            parts.append(w.length_delimited(w.USAGE, usage.SerializeToString()))
        return w.EncodedStatus(
            data=b"".join(parts),
            phase=self._phase,
            messages=len(self._messages),
            tool_calls=len(self._tools),
            todos=len(self._todos),
            sub_agents=len(self._subs),
        )

    # -- event handlers -----------------------------------------------------------------------

    def _on_delta(self, event: TokenDelta) -> Applied:
        if event.sub_agent_id:
            sub = self._subs.get(event.sub_agent_id)
            if sub is None or not event.text:
                return UNCHANGED
            if sub.turn != event.message_id:
                sub.turn = event.message_id
                sub.parts = []
            sub.parts.append(event.text)
            message = sub.by_key.get(event.message_id)
            if message is None:
                message = self._new_sub_message(sub, event.message_id)
            if message.streaming:
                message.parts.append(event.text)
                message.proto = None
            sub.proto = None
            return CHANGED
        message = self._by_key.get(event.message_id)
        if message is None:
            message = self._new_ai(event.message_id)
        elif not event.text:
            return UNCHANGED
        if event.text:
            message.parts.append(event.text)
            if message.chars >= 0:
                message.chars += len(event.text)
            message.proto = None
        return CHANGED

    def _on_turn(self, event: ModelTurnEnded) -> Applied:
        significant = False
        owner: _Message | None = None
        self._usage.turn(
            event.message_id, event.usage, event.model_name, sub_agent=bool(event.sub_agent_id)
        )
        if event.sub_agent_id:
            sub = self._subs.get(event.sub_agent_id)
            if sub is not None:
                if event.message_id not in sub.turns_seen:
                    sub.turns_seen.add(event.message_id)
                    sub.model_turns += 1
                    if sub.usage is None:
                        sub.usage = Tokens()
                    sub.usage.add(event.usage, 1)
                if event.model_name:
                    sub.meta["model"] = event.model_name
                sub.turn = event.message_id
                sub.parts = [event.text] if event.text else []
                sub.proto = None
                owner = sub.by_key.get(event.message_id) or self._new_sub_message(
                    sub, event.message_id
                )
                self._end_turn(owner, event)
        else:
            owner = self._by_key.get(event.message_id) or self._new_ai(event.message_id)
            self._end_turn(owner, event)
            self._offload_message(owner)
        for request in event.tool_calls:
            tool = self._tools.get(request.id)
            if tool is None:
                tool = self._new_tool(request.id, request.name, request.args, event.sub_agent_id)
                significant = True
            if owner is not None and tool.owner is None:
                tool.owner = owner
                owner.tool_ids.append(tool.id)
        return SIGNIFICANT if significant else CHANGED

    def _end_turn(self, message: _Message, event: ModelTurnEnded) -> None:
        message.parts = [event.text] if event.text else []
        message.chars = len(event.text)
        message.cut = False
        message.streaming = False
        message.meta.pop("streaming", None)
        if event.model_name:
            message.meta["model"] = event.model_name
        if event.usage is not None:
            message.meta["usage"] = usage_strings(event.usage)
        message.proto = None

    def _on_helper(self, event: HelperModelCall) -> Applied:
        calls = self._usage.helper(event.call_id, event.usage, event.helper, event.model_name)
        sub = self._subs.get(event.sub_agent_id) if event.sub_agent_id else None
        if sub is not None:
            if sub.helper_usage is None:
                sub.helper_usage = Tokens()
            sub.helper_usage.add(event.usage, calls)
            sub.proto = None
        return CHANGED

    def _on_tool_started(self, event: ToolStarted) -> Applied:
        tool = self._tools.get(event.tool_call_id)
        if tool is None:
            tool = self._new_tool(event.tool_call_id, event.name, event.args, event.sub_agent_id)
        elif tool.status == enum_pb2.TOOL_CALL_RUNNING:
            return UNCHANGED
        tool.status = enum_pb2.TOOL_CALL_RUNNING
        tool.started_at = tool.started_at or self._now()
        tool.completed_at = ""
        self._touch(tool)
        sub = self._subs.get(tool.id)
        if sub is not None and sub.status not in _TERMINAL_SUB:
            sub.status = enum_pb2.SUB_AGENT_IN_PROGRESS
            sub.started_at = sub.started_at or tool.started_at
            sub.proto = None
        return SIGNIFICANT

    def _on_tool_ended(self, event: ToolEnded) -> Applied:
        tool = self._tools.get(event.tool_call_id)
        if tool is None:
            tool = self._new_tool(event.tool_call_id, event.name, {}, event.sub_agent_id)
        error = self._redact(event.error) if event.error else ""
        result = "" if error else self._redact(event.result)
        status = enum_pb2.TOOL_CALL_FAILED if error else enum_pb2.TOOL_CALL_COMPLETED
        if tool.approval is not None and tool.approval.action in _NOT_RUN:
            # What the model was told in place of the tool's result; the tool never ran.
            status, result, error = enum_pb2.TOOL_CALL_SKIPPED, error or result, ""
        if tool.status == status and tool.result == result and tool.error == error:
            return UNCHANGED
        now = self._now()
        tool.status = status
        tool.result = result
        tool.error = error
        tool.started_at = tool.started_at or now
        tool.completed_at = now
        tool.cut = False
        self._touch(tool)
        self._offload_result(tool)
        if tool.name == TODO_TOOL and not error and not tool.sub_agent_id:
            self._apply_todos(tool, now)
        sub = self._subs.get(tool.id)
        if sub is not None:
            sub.status = enum_pb2.SUB_AGENT_FAILED if error else enum_pb2.SUB_AGENT_COMPLETED
            sub.error = error
            sub.parts = [result] if result else []
            sub.started_at = sub.started_at or tool.started_at
            sub.completed_at = now
            sub.proto = None
        return SIGNIFICANT

    def _on_approval_requested(self, event: ApprovalRequested) -> Applied:
        tool = self._tools.get(event.tool_call_id)
        if tool is None:
            sub_agent = event.sub_agent_id or self._gate_subs.get(event.tool_call_id, "")
            tool = self._new_tool(event.tool_call_id, event.name, event.args, sub_agent)
        record = tool.approval or self._approvals.get(tool.id) or _Approval()
        if record.action != enum_pb2.APPROVAL_ACTION_UNSPECIFIED:
            return UNCHANGED  # decided already: the resume applies the decision
        if tool.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL and tool.approval is record:
            return UNCHANGED
        record.message = record.message or self._redact(event.message)
        record.requested_at = record.requested_at or self._now()
        tool.approval = self._approvals[tool.id] = record
        tool.status = enum_pb2.TOOL_CALL_WAITING_APPROVAL
        self._touch(tool)
        return SIGNIFICANT

    def _on_approval_decided(self, event: ApprovalDecided) -> Applied:
        tool = self._tools.get(event.tool_call_id)
        if tool is None:
            return UNCHANGED
        record = tool.approval or self._approvals.get(tool.id) or _Approval()
        record.action = enum_pb2.ApprovalAction.ValueType(event.action)
        record.approved_by = event.approved_by or record.approved_by
        record.decided_at = event.decided_at or record.decided_at or self._now()
        tool.approval = self._approvals[tool.id] = record
        if tool.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL:
            tool.status = enum_pb2.TOOL_CALL_PENDING
        self._touch(tool)
        return SIGNIFICANT

    # -- entries ------------------------------------------------------------------------------

    def _now(self) -> str:
        return rfc3339(self._clock())

    def _add_human(self, text: str) -> None:
        content = self._redact(text)
        for message in self._messages:
            if message.kind == enum_pb2.MESSAGE_HUMAN and "".join(message.parts) == content:
                return
        self._messages.append(_Message(enum_pb2.MESSAGE_HUMAN, [content], self._now()))

    def _new_ai(self, key: str) -> _Message:
        message = _Message(
            enum_pb2.MESSAGE_AI,
            [],
            self._now(),
            key=key,
            meta={"message_id": key, "streaming": True},
            streaming=True,
            chars=0,
            seq=self._next_seq(),
        )
        self._messages.append(message)
        self._by_key[key] = message
        return message

    def _new_sub_message(self, sub: _SubAgent, key: str) -> _Message:
        message = _Message(
            enum_pb2.MESSAGE_AI,
            [],
            self._now(),
            key=key,
            meta={"message_id": key, "streaming": True},
            streaming=True,
        )
        sub.add_message(message)
        return message

    def _new_tool(
        self, tool_id: str, name: str, args: Mapping[str, Any], sub_agent_id: str
    ) -> _Tool:
        plain_args = _plain(args, self._redact) if args else {}
        if self._limits is not None and plain_args:
            plain_args = _cap_strings(plain_args, self._limits)
        tool = _Tool(
            id=tool_id,
            name=name,
            args=plain_args,
            component=self._component(name, plain_args, sub_agent_id),
            sub_agent_id=sub_agent_id,
            seq=self._next_seq(),
            approval=self._approvals.get(tool_id),
        )
        self._tools[tool_id] = tool
        if sub_agent_id:
            sub = self._subs.get(sub_agent_id)
            if sub is not None:
                sub.tool_calls += 1
                sub.proto = None
        if name == TASK_TOOL:
            description = plain_args.get("description")
            sub_type = plain_args.get("subagent_type")
            self._subs[tool_id] = _SubAgent(
                id=tool_id,
                name=sub_type if isinstance(sub_type, str) else "",
                input=description if isinstance(description, str) else "",
                seq=self._next_seq(),
            )
        return tool

    def _component(
        self, name: str, args: Mapping[str, Any], sub_agent_id: str
    ) -> api_pb2.ComponentMetadata:
        server = self._mcp_tools.get(name)
        details: dict[str, Any] = {}
        if server is not None:
            kind = Component("mcp", server, "card")
            details["server"] = server
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
            sub = self._subs.get(sub_agent_id)
            if sub is not None and sub.name:
                details["sub_agent_name"] = sub.name
        return api_pb2.ComponentMetadata(
            component_type=kind.type,
            component_group=kind.group,
            layout_hint=kind.layout,
            metadata=_struct(details),
        )

    def _touch(self, tool: _Tool) -> None:
        tool.proto = None
        if tool.owner is not None:
            tool.owner.proto = None
            if tool.sub_agent_id:
                sub = self._subs.get(tool.sub_agent_id)
                if sub is not None:
                    sub.proto = None

    def _apply_todos(self, call: _Tool, now: str) -> None:
        """The agent's new list becomes `todos`; see the module docstring."""
        items = call.args.get("todos")
        if not isinstance(items, list):
            log.warning("malformed_event_skipped", reason="write_todos without a todo list")
            return
        entries: list[tuple[str, enum_pb2.TodoStatus.ValueType]] = []
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("content"), str):
                continue
            status = _TODO_STATUS.get(str(item.get("status", "pending")), enum_pb2.TODO_PENDING)
            entries.append((item["content"], status))
        previous = [(i, self._todos[i].content) for i in self._todo_order]
        ids = todo_ids.assign_ids(
            previous,
            [content for content, _ in entries],
            self._next_todo,
            finished={i for i in self._todo_order if self._todos[i].status in _FINISHED_TODO},
            finishing=[status in _FINISHED_TODO for _, status in entries],
        )
        kept = set(ids)
        if not entries:
            # An empty map would leave the orchestrator's previous one in place (contract §4):
            # the previous items stay, the unfinished ones cancelled.
            for todo in self._todos.values():
                if todo.status not in _FINISHED_TODO:
                    todo.status, todo.updated_at = enum_pb2.TODO_CANCELLED, now
                    todo.entry = None
        else:
            current: dict[str, _Todo] = {}
            for todo_id, (content, status) in zip(ids, entries, strict=True):
                found = self._todos.get(todo_id)
                todo = _Todo(todo_id, content, status, now, now) if found is None else found
                if todo.content != content or todo.status != status:
                    todo.content, todo.status, todo.updated_at = content, status, now
                    todo.entry = None
                current[todo_id] = todo
            self._todos = current
            self._todo_order = ids
        dropped = [i for i, _ in previous if i not in kept]
        history: dict[str, Any] = {"todo_ids": list(ids)}
        if dropped:
            history["dropped_todo_ids"] = dropped
        call.component.metadata.update(history)
        self._touch(call)

    def _next_todo(self) -> str:
        """A todo id never given before in this execution (the serial only grows)."""
        self._todo_serial += 1
        return f"todo-{self._todo_serial:03d}"

    def _finish_streaming(self) -> None:
        """The run is over: no message, the agent's or a sub-agent's, is still streaming."""
        for message in reversed(self._messages):
            if message.streaming:
                message.streaming = False
                message.meta.pop("streaming", None)
                message.proto = None
                self._offload_message(message)

        for sub in self._subs.values():
            for message in sub.by_key.values():
                if message.streaming:
                    message.streaming = False
                    message.meta.pop("streaming", None)
                    message.proto = None
                    sub.proto = None

    # -- large content ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._serial += 1
        return self._serial

    def _offload_message(self, message: _Message) -> None:
        """Hand an AI message's finished text to the offloader when it is over its bound."""
        limits, offloader = self._limits, self._offloader
        if limits is None or offloader is None or message.kind != enum_pb2.MESSAGE_AI:
            return
        if _chars(message) <= limits.preview:
            message.ref = None
            return
        text = "".join(message.parts)
        if not over(text, limits.message_inline):
            message.ref = None
            return
        content = self._redact(text)

        def settled(ref: ContentRef) -> None:
            if message.ref is ref:
                if ref.state is RefState.FAILED:
                    message.ref = None  # inline again; the budget cuts it if it must
                message.proto = None

        message.ref = offloader.offload(
            content,
            mime_type="text/markdown; charset=utf-8",
            size_bytes=utf8_size(content),
            on_settled=settled,
        )
        message.proto = None

    def _offload_result(self, tool: _Tool) -> None:
        """Hand a tool's result to the offloader when it is over the inline bound."""
        limits, offloader = self._limits, self._offloader
        tool.ref = None
        if limits is None or offloader is None:
            return
        if not over(tool.result, limits.tool_result_inline):
            return

        def settled(ref: ContentRef) -> None:
            if tool.ref is ref:
                if ref.state is RefState.FAILED:
                    tool.ref = None
                self._touch(tool)

        tool.ref = offloader.offload(
            tool.result, size_bytes=utf8_size(tool.result), on_settled=settled
        )

    def _fit(
        self, status: status_wire.EncodedStatus, limits: ContentLimits
    ) -> status_wire.EncodedStatus:
        """Cut the oldest inline contents to previews until the status is under the budget.

        It cuts down to three quarters of the budget, so a growing run cuts now and then rather
        than on every update.
        """
        floor = limits.preview * 2
        candidates: list[tuple[int, int, _Message | _Tool | _SubAgent]] = []
        previewing = self._offloader is not None
        for message in self._messages:
            size = _chars(message)
            if message.ref is not None or message.cut or size <= floor:
                continue
            if previewing and message.streaming and size > limits.message_inline:
                continue  # its status already carries only a preview
            candidates.append((message.seq, size, message))
        for tool in self._tools.values():
            if tool.ref is None and not tool.cut and len(tool.result) > floor:
                copies = 2 if tool.owner is not None else 1
                candidates.append((tool.seq, len(tool.result) * copies, tool))
        for sub in self._subs.values():
            size = sum(len(p) for p in sub.parts)
            # An output over the message bound is a preview already.
            if not sub.cut and floor < size <= limits.message_inline:
                candidates.append((sub.seq, size, sub))
        candidates.sort(key=lambda c: c[0])
        target = limits.status_budget * 3 // 4
        before = len(status.data)
        cut = 0
        while candidates and len(status.data) > limits.status_budget:
            excess = len(status.data) - target
            removed = 0
            while candidates and removed < excess:
                _, size, entry = candidates.pop(0)
                entry.cut = True
                removed += size
                cut += 1
                if isinstance(entry, _Tool):
                    self._touch(entry)
                else:
                    entry.proto = None
            status = self._encode()
        if cut:
            log.info(
                "status_contents_cut",
                cut=cut,
                bytes_before=before,
                bytes_after=len(status.data),
                budget_bytes=limits.status_budget,
            )
        if len(status.data) > limits.status_budget and not self._over_budget_logged:
            self._over_budget_logged = True
            log.warning(
                "status_over_budget",
                bytes=len(status.data),
                budget_bytes=limits.status_budget,
                messages=len(self._messages),
                tool_calls=len(self._tools),
                reason="nothing left to cut: the transcript's entries alone are over the budget",
            )
        return status

    def _interrupt(self, reason: str) -> None:
        """Close what was in flight when the run stopped early, so nothing stays RUNNING."""
        self._finish_streaming()
        now = self._now()
        for tool in self._tools.values():
            if tool.status not in _TERMINAL_TOOL:
                tool.status = enum_pb2.TOOL_CALL_FAILED
                tool.error = reason
                tool.completed_at = now
                self._touch(tool)
        for sub in self._subs.values():
            if sub.status not in _TERMINAL_SUB:
                sub.status = enum_pb2.SUB_AGENT_FAILED
                sub.error = reason
                sub.completed_at = now
                sub.proto = None

    # -- protos -------------------------------------------------------------------------------

    def _message_proto(self, message: _Message) -> api_pb2.AgentMessage:
        if message.proto is None:
            content, ref = self._message_content(message)
            message.proto = api_pb2.AgentMessage(
                type=message.kind,
                content=content,
                timestamp=message.timestamp,
                tool_calls=[self._tool_proto(self._tools[i]) for i in message.tool_ids],
                metadata=_struct(message.meta) if message.meta else None,
                content_ref=ref,
            )
        return message.proto

    def _message_content(self, message: _Message) -> tuple[str, api_pb2.ToolCallOutputRef | None]:
        """The text a message's proto carries, and its reference when the text is stored."""
        limits = self._limits
        if limits is None:
            return self._redact("".join(message.parts)), None
        if message.ref is not None:
            return message.ref.preview, message.ref.proto()
        if message.cut:
            head = self._redact(head_of_parts(message.parts, limits.preview))
            return head + cut_marker(_chars(message), len(head), _BUDGET_CUT), None
        if (
            message.streaming
            and self._offloader is not None
            and _chars(message) > limits.message_inline
        ):
            head = self._redact(head_of_parts(message.parts, limits.preview))
            return head + cut_marker(_chars(message), len(head), _STREAMING), None
        return self._redact("".join(message.parts)), None

    def _tool_proto(self, tool: _Tool) -> api_pb2.ToolCall:
        if tool.proto is None:
            result = tool.result
            ref = None
            if tool.ref is not None:
                result, ref = tool.ref.preview, tool.ref.proto()
            elif tool.cut and self._limits is not None:
                result = cut_text(result, self._limits.preview, _BUDGET_CUT)
            tool.proto = api_pb2.ToolCall(
                id=tool.id,
                name=tool.name,
                args=self._args_struct(tool),
                result=result,
                output_ref=ref,
                status=tool.status,
                component_metadata=tool.component,
                started_at=tool.started_at,
                completed_at=tool.completed_at,
                error=tool.error,
                mcp_server_slug=self._mcp_tools.get(tool.name, ""),
            )
            approval = tool.approval
            if approval is not None:
                proto = tool.proto
                proto.requires_approval = True
                proto.approval_message = approval.message
                proto.approval_requested_at = approval.requested_at
                proto.approval_action = approval.action
                proto.approved_by = approval.approved_by
                proto.approval_decided_at = approval.decided_at
        return tool.proto

    @staticmethod
    def _args_struct(tool: _Tool) -> struct_pb2.Struct:
        if tool.args_struct is None:
            tool.args_struct = _struct(tool.args)
        return tool.args_struct

    def _sub_proto(self, sub: _SubAgent) -> api_pb2.SubAgentExecution:
        """The entry without its messages (cached until the sub-agent changes)."""
        if sub.proto is None:
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
                output = cut_text(output, limits.preview, _SUB_OUTPUT_CUT)
            sub.proto = api_pb2.SubAgentExecution(
                id=sub.id,
                name=sub.name,
                input=sub.input,
                output=output,
                status=sub.status,
                started_at=sub.started_at,
                completed_at=sub.completed_at,
                error=sub.error,
                metadata=_struct(meta),
            )
        return sub.proto

    def _sub_full_proto(self, sub: _SubAgent) -> api_pb2.SubAgentExecution:
        full = api_pb2.SubAgentExecution()
        full.CopyFrom(self._sub_proto(sub))
        full.messages.extend(self._message_proto(m) for m in sub.messages())
        return full

    def _sub_wire(self, sub: _SubAgent) -> bytes:
        """The entry as a `sub_agent_executions` element: its fields, then each message's cached
        encoding as field 100 (protobuf reads fields in any order)."""
        head = self._sub_proto(sub)
        if sub.wire.of is not head:
            body = [head.SerializeToString()]
            body.extend(
                m.wire.get(_SUB_MESSAGES_FIELD, self._message_proto(m)) for m in sub.messages()
            )
            sub.wire.data = status_wire.length_delimited(
                status_wire.SUB_AGENT_EXECUTIONS, b"".join(body)
            )
            sub.wire.of = head
        return sub.wire.data

    def _usage_message(self) -> api_pb2.ExecutionUsage | None:
        if self._usage.changed or self._usage_proto is None:
            self._usage.changed = False
            self._usage_proto = None if self._usage.empty else self._usage.proto()
        return self._usage_proto

    @staticmethod
    def _todo_proto(todo: _Todo) -> api_pb2.TodoItem:
        return api_pb2.TodoItem(
            id=todo.id,
            content=todo.content,
            status=todo.status,
            created_at=todo.created_at,
            updated_at=todo.updated_at,
        )

    @classmethod
    def _todo_entry(cls, todo: _Todo) -> Any:
        """The todo as an entry of the status's `todos` map (key and value, as on the wire)."""
        if todo.entry is None:
            todo.entry = _TODOS_ENTRY(key=todo.id, value=cls._todo_proto(todo))
        return todo.entry

    # -- resume -------------------------------------------------------------------------------

    def _seed(self, status: api_pb2.AgentExecutionStatus) -> None:
        self._phase = status.phase or enum_pb2.EXECUTION_PENDING
        self._error = status.error
        self._started_at = status.started_at
        self._completed_at = status.completed_at
        for call in status.tool_calls:
            self._tools[call.id] = self._seed_tool(call)
        for stored in status.messages:
            message = self._seed_message(stored)
            if message is not None:
                self._messages.append(message)
                if message.key:
                    self._by_key[message.key] = message
        turns = set(self._by_key)
        for stored_sub in status.sub_agent_executions:
            sub = self._seed_sub(stored_sub)
            self._subs[sub.id] = sub
            turns |= sub.turns_seen
        if status.HasField("usage"):
            # Without a stored usage (an earlier runner), the replayed turns count again.
            self._usage.seed(status.usage, turns)
        stored_todos = sorted(status.todos.values(), key=lambda t: (t.created_at, t.id))
        for item in stored_todos:
            self._todos[item.id] = _Todo(
                item.id, item.content, item.status, item.created_at, item.updated_at
            )
            if item.status != enum_pb2.TODO_CANCELLED:
                self._todo_order.append(item.id)
        used = [item.id for item in stored_todos]
        for tool in self._tools.values():
            if tool.name == TODO_TOOL and "todo_ids" in tool.component.metadata.fields:
                history = tool.component.metadata.fields["todo_ids"].list_value.values
                used.extend(v.string_value for v in history)
        for todo_id in used:
            suffix = todo_id.rpartition("-")[2]
            if suffix.isdigit():
                self._todo_serial = max(self._todo_serial, int(suffix))

    def _seed_message(self, stored: api_pb2.AgentMessage) -> _Message | None:
        meta = _struct_dict(stored.metadata) if stored.HasField("metadata") else {}
        if stored.type == enum_pb2.MESSAGE_AI and meta.get("streaming"):
            return None  # a turn cut off by the crash; the resumed run produces it again
        message = _Message(
            stored.type,
            [stored.content] if stored.content else [],
            stored.timestamp,
            key=str(meta.get("message_id", "")),
            meta=meta,
            ref=_seed_ref(stored.content_ref) if stored.HasField("content_ref") else None,
            seq=self._next_seq(),
        )
        for call in stored.tool_calls:
            tool = self._tools.get(call.id)
            if tool is None:
                tool = self._tools[call.id] = self._seed_tool(call)
            tool.owner = message
            message.tool_ids.append(call.id)
        return message

    def _seed_sub(self, stored: api_pb2.SubAgentExecution) -> _SubAgent:
        meta = _struct_dict(stored.metadata) if stored.HasField("metadata") else {}
        usage = meta.pop("usage", None)
        helper_usage = meta.pop("helper_usage", None)
        sub = _SubAgent(
            id=stored.id,
            name=stored.name,
            input=stored.input,
            status=stored.status,
            parts=[stored.output] if stored.output else [],
            started_at=stored.started_at,
            completed_at=stored.completed_at,
            error=stored.error,
            model_turns=_count(meta.pop("model_turns", 0)),
            tool_calls=_count(meta.pop("tool_calls", 0)),
            meta=meta,
        )
        if isinstance(usage, Mapping):
            sub.usage = _tokens(usage, sub.model_turns)
        if isinstance(helper_usage, Mapping):
            sub.helper_usage = _tokens(helper_usage, 0)
        for stored_message in stored.messages:
            if stored_message.type == enum_pb2.MESSAGE_SYSTEM:
                omitted = _struct_dict(stored_message.metadata).get("omitted_messages")
                sub.omitted += _count(omitted)
                continue
            message = self._seed_message(stored_message)
            if message is not None:
                sub.add_message(message)
                if message.key:
                    sub.turns_seen.add(message.key)
        return sub

    @staticmethod
    def _seed_tool(call: api_pb2.ToolCall) -> _Tool:
        component = api_pb2.ComponentMetadata()
        component.CopyFrom(call.component_metadata)
        meta = component.metadata
        sub_id = meta.fields["sub_agent_id"].string_value if "sub_agent_id" in meta.fields else ""
        return _Tool(
            id=call.id,
            name=call.name,
            args=_struct_dict(call.args) if call.HasField("args") else {},
            component=component,
            status=call.status or enum_pb2.TOOL_CALL_PENDING,
            result=call.result,
            error=call.error,
            started_at=call.started_at,
            completed_at=call.completed_at,
            sub_agent_id=sub_id,
            ref=_seed_ref(call.output_ref) if call.HasField("output_ref") else None,
            approval=_Approval(
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
        _count(stored.get("input_tokens")),
        _count(stored.get("output_tokens")),
        _count(stored.get("total_tokens")),
        _count(stored.get("model_calls", calls)),
    )


def _count(value: Any) -> int:
    """A count read back from a stored `metadata` Struct: a decimal string, or a number that
    an earlier runner wrote."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _seed_ref(stored: api_pb2.ToolCallOutputRef) -> ContentRef:
    """A reference an earlier attempt stored, kept as it was."""
    ref = ContentRef(
        size_bytes=stored.size_bytes,
        mime_type=stored.mime_type,
        preview=stored.truncated_preview,
        is_image=stored.is_image,
        content_hash=stored.content_hash,
        storage_key=stored.storage_key,
        download_url=stored.download_url,
        state=RefState.STORED,
    )
    return ref


_BUDGET_CUT = "cut to keep the status under STIGMER_STATUS_BUDGET_BYTES"
_STREAMING = "still streaming; the whole text is stored when the turn ends"
_SUB_OUTPUT_CUT = "the whole output is the result of this sub-agent's task tool call"


def _chars(message: _Message) -> int:
    if message.chars < 0:
        message.chars = sum(len(p) for p in message.parts)
    return message.chars


def _cap_strings(value: Any, limits: ContentLimits) -> Any:
    """Tool arguments with every string over the inline bound cut to a marked preview."""
    if isinstance(value, str):
        if over(value, limits.tool_result_inline):
            return cut_text(value, limits.preview, "argument over STIGMER_CONTENT_INLINE_BYTES")
        return value
    if isinstance(value, dict):
        return {k: _cap_strings(v, limits) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap_strings(v, limits) for v in value]
    return value


def _problem(event: object) -> str | None:
    """Why `event` cannot be applied, or None; cheap checks on what the handlers rely on."""
    if isinstance(event, TokenDelta):
        if not isinstance(event.message_id, str) or not event.message_id:
            return "token delta without a message id"
        if not isinstance(event.text, str):
            return "token delta text is not a string"
    elif isinstance(event, ModelTurnEnded):
        if not isinstance(event.message_id, str) or not event.message_id:
            return "model turn without a message id"
        if not isinstance(event.text, str):
            return "model turn text is not a string"
        for call in event.tool_calls:
            if not isinstance(call, ToolCallRequest) or not call.id or not isinstance(call.id, str):
                return "model turn with a tool call without an id"
            if not isinstance(call.args, Mapping):
                return "tool call arguments are not a mapping"
        if event.usage is not None and not isinstance(event.usage, Usage):
            return "usage is not a Usage"
    elif isinstance(event, ApprovalRequested | ApprovalDecided):
        if not isinstance(event.tool_call_id, str) or not event.tool_call_id:
            return "approval event without a tool call id"
    elif isinstance(event, HelperModelCall):
        if not isinstance(event.usage, Usage):
            return "helper call without a usage"
        if not isinstance(event.call_id, str) or not isinstance(event.helper, str):
            return "helper call id or kind is not a string"
        if not isinstance(event.model_name, str):
            return "model name is not a string"
    elif isinstance(event, ToolStarted | ToolEnded):
        if not isinstance(event.tool_call_id, str) or not event.tool_call_id:
            return "tool event without a tool call id"
        if not isinstance(event.name, str):
            return "tool name is not a string"
        if isinstance(event, ToolStarted) and not isinstance(event.args, Mapping):
            return "tool arguments are not a mapping"
        if isinstance(event, ToolEnded) and not (
            isinstance(event.result, str) and isinstance(event.error, str)
        ):
            return "tool result or error is not a string"
    if not isinstance(getattr(event, "sub_agent_id", ""), str):
        return "sub_agent_id is not a string"
    return None
