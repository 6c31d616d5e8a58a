"""The StatusBuilder: a pure reducer from agent events to `AgentExecutionStatus`.

It keeps the run's state in plain Python records (`worker.domain.status_entries`) found through
dict indexes, so the cost of an event does not grow with the length of the run. Streamed text is
never appended to a proto field: protobuf (upb) keeps every intermediate string of a field that
is assigned repeatedly, which makes a long answer quadratic in memory. Each entry keeps its
encoding until it changes (`worker.domain.status_encoding`), so an update joins bytes instead of
rebuilding the transcript, and no entry is held as a proto. The rest lives beside it: which
events are well-formed (`worker.domain.status_checks`), the state read back from a stored status
(`worker.domain.status_seed`), large contents offloaded or cut to the budget
(`worker.domain.status_fit`).

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

Large content (given `limits`, see `worker.content` and `worker.domain.status_fit`): a tool
result or an AI message over its inline bound goes to an attached `Offloader` and the entry
carries a preview and the reference (`ToolCall.output_ref`, `AgentMessage.content_ref`); a
message still streaming past its bound carries only a preview; a sub-agent's output over the
message bound is a marked preview (the whole of it is the `task` call's result); a tool argument
string over the inline bound is cut; a status over the budget has its oldest inline contents cut.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from worker.content.limits import ContentLimits, Offloader
from worker.domain import status_fit, status_wire
from worker.domain import todos as todo_ids
from worker.domain.agent_events import (
    AgentEvent,
    ApprovalDecided,
    ApprovalRequested,
    HelperModelCall,
    ModelTurnEnded,
    TokenDelta,
    ToolEnded,
    ToolStarted,
)
from worker.domain.status_checks import CHECKS
from worker.domain.status_delta import StatusParts
from worker.domain.status_encoding import EntryEncoder
from worker.domain.status_entries import (
    COMPONENTS,
    GENERIC,
    SUB_AGENT_MESSAGES,
    TASK_TOOL,
    TODO_TOOL,
    Approval,
    Component,
    MessageEntry,
    SubAgentEntry,
    TodoEntry,
    ToolEntry,
    component_of,
    plain,
)
from worker.domain.status_seed import read_status
from worker.domain.usage import Tokens, UsageLedger, usage_strings

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Redactor = Callable[[str], str]

__all__ = [
    "CHANGED",
    "COMPONENTS",
    "GENERIC",
    "SIGNIFICANT",
    "SUB_AGENT_MESSAGES",
    "TASK_TOOL",
    "TODO_TOOL",
    "UNCHANGED",
    "Applied",
    "Component",
    "StatusBuilder",
    "StatusCounts",
    "rfc3339",
    "utc_now",
]

_FINISHED_TODO = frozenset({enum_pb2.TODO_COMPLETED, enum_pb2.TODO_CANCELLED})


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-01-02T03:04:05.678Z`: UTC, millisecond precision."""
    if moment.tzinfo is UTC:  # the clock's own: no conversion ("+00:00" becomes "Z")
        return moment.isoformat(timespec="milliseconds")[:-6] + "Z"
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


_TODO_STATUS: Mapping[str, enum_pb2.TodoStatus.ValueType] = {
    "pending": enum_pb2.TODO_PENDING,
    "in_progress": enum_pb2.TODO_IN_PROGRESS,
    "completed": enum_pb2.TODO_COMPLETED,
    "cancelled": enum_pb2.TODO_CANCELLED,
}
_TERMINAL_TOOL = frozenset(
    {enum_pb2.TOOL_CALL_COMPLETED, enum_pb2.TOOL_CALL_FAILED, enum_pb2.TOOL_CALL_SKIPPED}
)
_NOT_RUN = frozenset({enum_pb2.APPROVAL_ACTION_SKIP, enum_pb2.APPROVAL_ACTION_REJECT})
_TERMINAL_SUB = frozenset({enum_pb2.SUB_AGENT_COMPLETED, enum_pb2.SUB_AGENT_FAILED})


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
        self._encoder = EntryEncoder(redact, limits, self._mcp_tools)
        self._encoder.previewing = offloader is not None
        self._phase: enum_pb2.ExecutionPhase.ValueType = enum_pb2.EXECUTION_PENDING
        self._error = ""
        self._started_at = ""
        self._completed_at = ""
        self._messages: list[MessageEntry] = []
        self._by_key: dict[str, MessageEntry] = {}
        self._tools: dict[str, ToolEntry] = {}
        self._todos: dict[str, TodoEntry] = {}
        self._todo_order: list[str] = []
        self._todo_serial = 0
        self._subs: dict[str, SubAgentEntry] = {}
        self._usage = UsageLedger()
        self._usage_wire = b""
        # Event type → (its check, its handler): one lookup per event.
        handlers: dict[type, Callable[[Any], Applied]] = {
            TokenDelta: self._on_delta,
            ModelTurnEnded: self._on_turn,
            ToolStarted: self._on_tool_started,
            ToolEnded: self._on_tool_ended,
            ApprovalRequested: self._on_approval_requested,
            ApprovalDecided: self._on_approval_decided,
            HelperModelCall: self._on_helper,
        }
        self._handlers = {kind: (CHECKS[kind], handler) for kind, handler in handlers.items()}
        self._approvals: dict[str, Approval] = {}
        self._gate_subs: dict[str, str] = {}
        if initial is not None:
            self._seed(initial)
        if user_message is not None:
            self._add_human(user_message)

    # -- public surface -----------------------------------------------------------------------

    def apply(self, event: AgentEvent | object) -> Applied:
        """Fold one event in; a malformed event is logged and skipped, never raised."""
        found = self._handlers.get(type(event))
        if found is None:
            log.warning(
                "malformed_event_skipped",
                reason="unknown event type",
                event_type=type(event).__name__,
            )
            return UNCHANGED
        check, handler = found
        problem = check(event)
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
        tools = [self._tools[i] for i in self.pending_approvals]
        return api_pb2.AgentExecutionStatus(
            phase=self._phase,
            started_at=self._started_at,
            tool_calls=[
                api_pb2.ToolCall.FromString(self._encoder.tool(t)[t.head :]) for t in tools
            ],
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
        record = Approval(
            message,
            requested_at,
            enum_pb2.ApprovalAction.ValueType(action),
            approved_by,
            decided_at,
        )
        self._approvals[tool_call_id] = record
        tool = self._tool(tool_call_id)
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
            if message.kind == enum_pb2.MESSAGE_SYSTEM and message.text() == content:
                return UNCHANGED
        self._messages.append(MessageEntry(enum_pb2.MESSAGE_SYSTEM, [content], self._now()))
        return SIGNIFICANT

    def attach_offloader(self, offloader: Offloader | None) -> None:
        """Hand large contents to `offloader` from now on (None: keep them inline)."""
        self._offloader = offloader
        self._encoder.previewing = offloader is not None

    @property
    def phase(self) -> enum_pb2.ExecutionPhase.ValueType:
        return self._phase

    @property
    def error(self) -> str:
        """The run's error as the status carries it (masked), empty unless it failed."""
        return self._error

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
        """A fresh proto of the complete state (the orchestrator replaces lists wholesale),
        parsed from `encoded()`: the builder itself keeps no proto. Piece by piece (parsing
        concatenated fields is merging them), so the status is never joined into one buffer."""
        status = api_pb2.AgentExecutionStatus()
        for piece in self.encoded().pieces:
            status.MergeFromString(piece)
        return status

    def todo_items(self) -> list[api_pb2.TodoItem]:
        """The current todo list, in order (without encoding the whole status)."""
        return [
            api_pb2.TodoItem(
                id=t.id,
                content=t.content,
                status=t.status,
                created_at=t.created_at,
                updated_at=t.updated_at,
            )
            for t in self._todos.values()
        ]

    def encoded(self, *, fresh: bool = False) -> status_wire.EncodedStatus:
        """The same status as `snapshot()`, serialized from each entry's cached encoding.

        What a progress update sends: an unchanged entry costs one copy of its bytes (see
        `worker.domain.status_wire`). `fresh=True` encodes every entry anew, without the
        caches (what tests compare the cached form with).
        """
        status = self._parts(fresh=fresh).encoded()
        limits = self._limits
        if limits is not None and status.ByteSize() > limits.status_budget:
            status = self._fit(limits)
            if fresh:
                status = self._parts(fresh=True).encoded()
        return status

    def parts(self) -> StatusParts:
        """The same status as `encoded()`, as its entries' cached encodings: what a delta is
        computed from (`worker.domain.status_delta`), without joining them."""
        parts = self._parts()
        limits = self._limits
        if limits is not None and parts.size > limits.status_budget:
            self._fit(limits)
            parts = self._parts()
        return parts

    def _parts(self, *, fresh: bool = False) -> StatusParts:
        """Each entry's encoding (cached unless `fresh`), in the status's field order."""
        enc = self._encoder
        tools = self._tools
        w = status_wire
        return StatusParts(
            messages=[enc.message(m, w.MESSAGES, tools, fresh=fresh) for m in self._messages],
            phase=self._phase,
            tool_calls=[enc.tool(t, fresh=fresh) for t in tools.values()],
            tool_ids=list(tools),
            sub_agents=[enc.sub_agent(s, tools, fresh=fresh) for s in self._subs.values()],
            sub_ids=list(self._subs),
            error=self._error,
            started_at=self._started_at,
            completed_at=self._completed_at,
            todos=[enc.todo(todo, fresh=fresh) for todo in self._todos.values()],
            usage=self._usage_bytes(),
        )

    def _usage_bytes(self) -> bytes:
        """The `usage` field (b"" while no model call was counted), encoded once per change."""
        if self._usage.changed or (not self._usage_wire and not self._usage.empty):
            self._usage.changed = False
            self._usage_wire = (
                b""
                if self._usage.empty
                else status_wire.length_delimited(
                    status_wire.USAGE, self._usage.proto().SerializeToString()
                )
            )
        return self._usage_wire

    def _encode(self) -> status_wire.EncodedStatus:
        return self._parts().encoded()

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
                message.wire = b""
            sub.wire = b""
            return CHANGED
        message = self._by_key.get(event.message_id)
        if message is None:
            message = self._new_ai(event.message_id)
        elif not event.text:
            return UNCHANGED
        elif message.frozen:
            self._encoder.thaw_message(message)  # a turn replayed on resume
        if event.text:
            message.parts.append(event.text)
            if message.chars >= 0:
                message.chars += len(event.text)
            message.wire = b""
        return CHANGED

    def _on_turn(self, event: ModelTurnEnded) -> Applied:
        significant = False
        owner: MessageEntry | None = None
        # The ledger remembers the turn by the string its message already holds (one copy of
        # each id for the run, not one per place that remembers it).
        known = self._known_message(event.sub_agent_id, event.message_id)
        self._usage.turn(
            known.key if known is not None else event.message_id,
            event.usage,
            event.model_name,
            sub_agent=bool(event.sub_agent_id),
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
                sub.wire = b""
                owner = known or self._new_sub_message(sub, event.message_id)
                self._end_turn(owner, event)
        else:
            owner = known or self._new_ai(event.message_id)
            self._end_turn(owner, event)
            self._offload_message(owner)
        for request in event.tool_calls:
            tool = self._tools.get(request.id)
            if tool is None:
                tool = self._new_tool(request.id, request.name, request.args, event.sub_agent_id)
                significant = True
            if owner is not None and tool.owner is None:
                tool.owner = owner
                owner.tool_ids += (tool.id,)
        return SIGNIFICANT if significant else CHANGED

    def _known_message(self, sub_agent_id: str, key: str) -> MessageEntry | None:
        """The message streamed as `key` (by the agent, or by sub-agent `sub_agent_id`)."""
        if not sub_agent_id:
            return self._by_key.get(key)
        sub = self._subs.get(sub_agent_id)
        return sub.by_key.get(key) if sub is not None else None

    def _end_turn(self, message: MessageEntry, event: ModelTurnEnded) -> None:
        if message.frozen:
            self._encoder.thaw_message(message)  # a turn replayed on resume
        message.parts = [event.text] if event.text else []
        message.chars = len(event.text)
        message.cut = False
        message.streaming = False
        message.meta.pop("streaming", None)
        if event.model_name:
            message.meta["model"] = event.model_name
        if event.usage is not None:
            message.meta["usage"] = usage_strings(event.usage)
        message.wire = b""

    def _on_helper(self, event: HelperModelCall) -> Applied:
        calls = self._usage.helper(event.call_id, event.usage, event.helper, event.model_name)
        sub = self._subs.get(event.sub_agent_id) if event.sub_agent_id else None
        if sub is not None:
            if sub.helper_usage is None:
                sub.helper_usage = Tokens()
            sub.helper_usage.add(event.usage, calls)
            sub.wire = b""
        return CHANGED

    def _on_tool_started(self, event: ToolStarted) -> Applied:
        tool = self._tool(event.tool_call_id)
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
            sub.wire = b""
        return SIGNIFICANT

    def _on_tool_ended(self, event: ToolEnded) -> Applied:
        tool = self._tool(event.tool_call_id)
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
            sub.wire = b""
        return SIGNIFICANT

    def _on_approval_requested(self, event: ApprovalRequested) -> Applied:
        tool = self._tool(event.tool_call_id)
        if tool is None:
            sub_agent = event.sub_agent_id or self._gate_subs.get(event.tool_call_id, "")
            tool = self._new_tool(event.tool_call_id, event.name, event.args, sub_agent)
        record = tool.approval or self._approvals.get(tool.id) or Approval()
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
        tool = self._tool(event.tool_call_id)
        if tool is None:
            return UNCHANGED
        record = tool.approval or self._approvals.get(tool.id) or Approval()
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
        self._messages.append(MessageEntry(enum_pb2.MESSAGE_HUMAN, [content], self._now()))

    def _new_ai(self, key: str) -> MessageEntry:
        message = MessageEntry(
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

    def _new_sub_message(self, sub: SubAgentEntry, key: str) -> MessageEntry:
        message = MessageEntry(
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
    ) -> ToolEntry:
        plain_args = plain(args, self._redact, self._limits) if args else {}
        sub = self._subs.get(sub_agent_id) if sub_agent_id else None
        component, details = component_of(
            name,
            plain_args,
            mcp_server=self._mcp_tools.get(name),
            sub_agent_id=sub_agent_id,
            sub_agent_name=sub.name if sub is not None else "",
        )
        tool = ToolEntry(
            id=tool_id,
            name=sys.intern(name),  # a few names, thousands of calls
            args=plain_args,
            component=component,
            details=details,
            sub_agent_id=sys.intern(sub_agent_id),
            seq=self._next_seq(),
            approval=self._approvals.get(tool_id),
        )
        self._tools[tool_id] = tool
        if sub_agent_id:
            sub = self._subs.get(sub_agent_id)
            if sub is not None:
                sub.tool_calls += 1
                sub.wire = b""
        if name == TASK_TOOL:
            description = plain_args.get("description")
            sub_type = plain_args.get("subagent_type")
            self._subs[tool_id] = SubAgentEntry(
                id=tool_id,
                name=sub_type if isinstance(sub_type, str) else "",
                input=description if isinstance(description, str) else "",
                seq=self._next_seq(),
            )
        return tool

    def _tool(self, tool_id: str) -> ToolEntry | None:
        """The call `tool_id`, its contents read back if it was frozen (it is about to change)."""
        tool = self._tools.get(tool_id)
        if tool is not None and tool.frozen:
            self._encoder.thaw_tool(tool)
        return tool

    def _touch(self, tool: ToolEntry) -> None:
        """The call changed: it and the entries that embed it are encoded again."""
        if tool.frozen:
            self._encoder.thaw_tool(tool)
        tool.wire = b""
        owner = tool.owner
        if owner is not None:
            if owner.frozen:
                self._encoder.thaw_message(owner)
            owner.wire = b""
            if tool.sub_agent_id:
                sub = self._subs.get(tool.sub_agent_id)
                if sub is not None:
                    sub.wire = b""

    def _apply_todos(self, call: ToolEntry, now: str) -> None:
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
                    todo.wire = b""
        else:
            current: dict[str, TodoEntry] = {}
            for todo_id, (content, status) in zip(ids, entries, strict=True):
                found = self._todos.get(todo_id)
                todo = TodoEntry(todo_id, content, status, now, now) if found is None else found
                if todo.content != content or todo.status != status:
                    todo.content, todo.status, todo.updated_at = content, status, now
                    todo.wire = b""
                current[todo_id] = todo
            self._todos = current
            self._todo_order = ids
        dropped = [i for i, _ in previous if i not in kept]
        history: dict[str, Any] = {"todo_ids": list(ids)}
        if dropped:
            history["dropped_todo_ids"] = dropped
        call.details.update(history)
        call.fixed = b""
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
                message.wire = b""
                self._offload_message(message)

        for sub in self._subs.values():
            for message in sub.by_key.values():
                if message.streaming:
                    message.streaming = False
                    message.meta.pop("streaming", None)
                    message.wire = b""
                    sub.wire = b""

    # -- large content ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._serial += 1
        return self._serial

    def _offload_message(self, message: MessageEntry) -> None:
        limits, offloader = self._limits, self._offloader
        if limits is not None and offloader is not None:
            status_fit.offload_message(message, limits, offloader, self._redact)

    def _offload_result(self, tool: ToolEntry) -> None:
        tool.ref = None
        limits, offloader = self._limits, self._offloader
        if limits is not None and offloader is not None:
            status_fit.offload_result(tool, limits, offloader, self._touch)

    def _fit(self, limits: ContentLimits) -> status_wire.EncodedStatus:
        """The status cut to the budget (`worker.domain.status_fit`), logged once when even
        that is not enough."""
        candidates = status_fit.cut_candidates(
            self._messages,
            self._tools.values(),
            self._subs.values(),
            limits,
            previewing=self._offloader is not None,
        )
        status = status_fit.fit(
            self._encode(), limits, candidates, stale=self._stale, encode=self._encode
        )
        if status.ByteSize() > limits.status_budget and not self._over_budget_logged:
            self._over_budget_logged = True
            log.warning(
                "status_over_budget",
                bytes=status.ByteSize(),
                budget_bytes=limits.status_budget,
                messages=len(self._messages),
                tool_calls=len(self._tools),
                reason="nothing left to cut: the transcript's entries alone are over the budget",
            )
        return status

    def _stale(self, entry: MessageEntry | ToolEntry | SubAgentEntry) -> None:
        """`entry` changed (cut to fit): it is encoded again."""
        if isinstance(entry, ToolEntry):
            self._touch(entry)
            return
        if isinstance(entry, MessageEntry) and entry.frozen:
            self._encoder.thaw_message(entry)
        entry.wire = b""

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
                sub.wire = b""

    # -- resume -------------------------------------------------------------------------------

    def _seed(self, status: api_pb2.AgentExecutionStatus) -> None:
        seeded = read_status(status, self._next_seq)
        self._phase = seeded.phase
        self._error = seeded.error
        self._started_at = seeded.started_at
        self._completed_at = seeded.completed_at
        self._tools = seeded.tools
        self._messages = seeded.messages
        self._by_key = {m.key: m for m in seeded.messages if m.key}
        self._subs = seeded.subs
        self._todos = seeded.todos
        self._todo_order = seeded.todo_order
        self._todo_serial = seeded.todo_serial
        if status.HasField("usage"):
            # Without a stored usage (an earlier runner), the replayed turns count again.
            self._usage.seed(status.usage, seeded.turns)
