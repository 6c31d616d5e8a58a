"""Follow an execution live in a terminal: phase, elapsed time, streaming text, tools, todos.

Two sources feed one `ExecutionView`:

- the orchestrator's status stream: complete `AgentExecution` snapshots, a few per second,
  authoritative, ending after the terminal phase (folded from `subscribeDeltas` by
  `stigmer_cli.changes`, or `subscribe`'s whole states from an orchestrator without it);
- optionally the worker's live event stream on Redis (`docs/live-events.md`): every token delta
  and tool start as it happens, best effort.

The view reduces both into one state and reports each visible change (`Change`), so text shown
from the live stream is never shown again when a snapshot catches up, and a snapshot fills in
whatever the live stream missed. Two renderers draw the changes: `RichRenderer` (a `Live` footer
with the streaming text, running tools, todos and sub-agents above a status bar, with finished
messages and tool calls scrolling above it) on a terminal, and `PlainRenderer` (one line per
change, text streamed as it arrives) for pipes and CI logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, Protocol, Self

import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from stigmer_cli.changes import states as execution_states
from stigmer_cli.client import StigmerClient
from stigmer_cli.whole import window_of

log = structlog.get_logger(__name__)

Phase = enum_pb2.ExecutionPhase
AgentExecution = api_pb2.AgentExecution

TERMINAL_PHASES = frozenset(
    {
        enum_pb2.EXECUTION_COMPLETED,
        enum_pb2.EXECUTION_FAILED,
        enum_pb2.EXECUTION_CANCELLED,
        enum_pb2.EXECUTION_TERMINATED,
    }
)

PHASE_STYLES: Mapping[int, str] = {
    enum_pb2.EXECUTION_PHASE_UNSPECIFIED: "dim",
    enum_pb2.EXECUTION_PENDING: "yellow",
    enum_pb2.EXECUTION_IN_PROGRESS: "bold cyan",
    enum_pb2.EXECUTION_COMPLETED: "bold green",
    enum_pb2.EXECUTION_FAILED: "bold red",
    enum_pb2.EXECUTION_CANCELLED: "bold magenta",
    enum_pb2.EXECUTION_WAITING_FOR_APPROVAL: "bold yellow",
    enum_pb2.EXECUTION_PAUSED: "yellow",
    enum_pb2.EXECUTION_TERMINATED: "bold red",
}

# Tool and sub-agent states share one vocabulary of text "icons".
_PENDING, _RUNNING, _DONE, _FAILED = "pending", "running", "done", "failed"
# Run control (contract §7): a call waiting for a person, one a person skipped or rejected, one
# the run ended before; a sub-agent stopped with its run.
_WAITING, _SKIPPED, _INTERRUPTED, _CANCELLED = "waiting", "skipped", "interrupted", "cancelled"
STATE_STYLES: Mapping[str, str] = {
    _PENDING: "dim",
    _RUNNING: "cyan",
    _DONE: "green",
    _FAILED: "red",
    _WAITING: "bold yellow",
    _SKIPPED: "yellow",
    _INTERRUPTED: "magenta",
    _CANCELLED: "magenta",
}
_TOOL_STATES: Mapping[int, str] = {
    enum_pb2.TOOL_CALL_STATUS_UNSPECIFIED: _PENDING,
    enum_pb2.TOOL_CALL_PENDING: _PENDING,
    enum_pb2.TOOL_CALL_RUNNING: _RUNNING,
    enum_pb2.TOOL_CALL_COMPLETED: _DONE,
    enum_pb2.TOOL_CALL_FAILED: _FAILED,
    enum_pb2.TOOL_CALL_WAITING_APPROVAL: _WAITING,
    enum_pb2.TOOL_CALL_SKIPPED: _SKIPPED,
    enum_pb2.TOOL_CALL_INTERRUPTED: _INTERRUPTED,
}
_SUB_AGENT_STATES: Mapping[int, str] = {
    enum_pb2.SUB_AGENT_STATUS_UNSPECIFIED: _PENDING,
    enum_pb2.SUB_AGENT_PENDING: _PENDING,
    enum_pb2.SUB_AGENT_IN_PROGRESS: _RUNNING,
    enum_pb2.SUB_AGENT_COMPLETED: _DONE,
    enum_pb2.SUB_AGENT_FAILED: _FAILED,
    enum_pb2.SUB_AGENT_CANCELLED: _CANCELLED,
}
# Live events name states in text; both spellings seen in the wild are accepted.
_LIVE_TOOL_STATES: Mapping[str, str] = {
    "COMPLETED": _DONE,
    "TOOL_CALL_COMPLETED": _DONE,
    "FAILED": _FAILED,
    "TOOL_CALL_FAILED": _FAILED,
}
_LIVE_APPROVAL_STATES: Mapping[str, str] = {
    "WAITING_APPROVAL": _WAITING,
    "TOOL_CALL_WAITING_APPROVAL": _WAITING,
    "PENDING": _PENDING,
    "TOOL_CALL_PENDING": _PENDING,
    "SKIPPED": _SKIPPED,
    "TOOL_CALL_SKIPPED": _SKIPPED,
}
# A waiting call goes back to pending once approved, so the two share a rank. A person's skip
# or the orchestrator's interruption is final: a tool end the runner reports for a call that
# did not run (the model is told why) never turns it into a failure.
_RANK = {
    _PENDING: 0,
    _WAITING: 0,
    _RUNNING: 1,
    _DONE: 2,
    _FAILED: 2,
    _CANCELLED: 2,
    _SKIPPED: 3,
    _INTERRUPTED: 3,
}
_FINISHED = frozenset({_DONE, _FAILED, _SKIPPED, _INTERRUPTED, _CANCELLED})

TODO_MARKS: Mapping[int, str] = {
    enum_pb2.TODO_STATUS_UNSPECIFIED: "[ ]",
    enum_pb2.TODO_PENDING: "[ ]",
    enum_pb2.TODO_IN_PROGRESS: "[>]",
    enum_pb2.TODO_COMPLETED: "[x]",
    enum_pb2.TODO_CANCELLED: "[-]",
}
_TODO_STYLES: Mapping[int, str] = {
    enum_pb2.TODO_IN_PROGRESS: "bold cyan",
    enum_pb2.TODO_COMPLETED: "green",
    enum_pb2.TODO_CANCELLED: "dim strike",
}

TODO_TOOL = "write_todos"  # its effect shows as todos, not as a tool line
TASK_TOOL = "task"  # its effect shows as a sub-agent, not as a tool line
_SHOWN_ELSEWHERE = frozenset({TODO_TOOL, TASK_TOOL})

# The main argument worth showing for the tools agents use most; others show compact JSON.
_HEADLINE_ARGS = ("file_path", "path", "command", "description", "pattern", "query", "url")


def phase_name(phase: int) -> str:
    if phase not in Phase.values():
        return str(phase)
    return Phase.Name(Phase.ValueType(phase)).removeprefix("EXECUTION_")


def parse_phase(text: str) -> int | None:
    """`IN_PROGRESS` or `EXECUTION_IN_PROGRESS` → the enum value; None when unknown."""
    name = text.strip().upper()
    name = name if name.startswith("EXECUTION_") else "EXECUTION_" + name
    return Phase.Value(name) if name in Phase.keys() else None  # noqa: SIM118 (enum wrapper)


def workflow_id(execution_id: str) -> str:
    """The id of the invoke workflow the orchestrator starts for an execution."""
    return f"stigmer/agent-execution/invoke/{execution_id}"


def _clip(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_args(name: str, args: Mapping[str, Any]) -> str:
    """A short, human form of a tool call's arguments."""
    if name == TODO_TOOL and isinstance(args.get("todos"), list):
        return f"{len(args['todos'])} items"
    for key in _HEADLINE_ARGS:
        value = args.get(key)
        if isinstance(value, str) and value:
            return _clip(value, 70)
    if not args:
        return ""
    return _clip(json.dumps(dict(args), separators=(",", ":"), default=str), 70)


# -- the view -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolView:
    id: str
    name: str
    args: str
    state: str
    result: str = ""
    error: str = ""
    approval_message: str = ""


@dataclass(frozen=True, slots=True)
class TodoView:
    id: str
    content: str
    status: int


@dataclass(frozen=True, slots=True)
class SubAgentView:
    id: str
    name: str
    input: str
    state: str
    output: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    phase: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class TextAppended:
    """New text of the AI message at `index`; `restart` means it replaces what was shown."""

    index: int
    text: str
    restart: bool = False


@dataclass(frozen=True, slots=True)
class ToolChanged:
    tool: ToolView
    before: str | None  # the state shown before; None when the call is new


@dataclass(frozen=True, slots=True)
class TodoChanged:
    todo: TodoView
    new: bool


@dataclass(frozen=True, slots=True)
class SubAgentChanged:
    sub_agent: SubAgentView
    before: str | None


Change = PhaseChanged | TextAppended | ToolChanged | TodoChanged | SubAgentChanged


@dataclass
class ExecutionView:
    """What is known about one execution, merged from snapshots and live events."""

    execution_id: str
    clock: Callable[[], float] = time.monotonic
    phase: int = enum_pb2.EXECUTION_PHASE_UNSPECIFIED
    error: str = ""
    texts: dict[int, str] = field(default_factory=dict)
    tools: dict[str, ToolView] = field(default_factory=dict)
    todos: dict[str, TodoView] = field(default_factory=dict)
    sub_agents: dict[str, SubAgentView] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    latest: AgentExecution | None = None
    todo_order: list[str] = field(default_factory=list)  # contents, as write_todos listed them
    _live_texts: dict[int, str] = field(default_factory=dict)
    _todo_calls: set[str] = field(default_factory=set)
    _began: float | None = None
    _ended: float | None = None
    _started_at: datetime | None = None
    _completed_at: datetime | None = None

    def __post_init__(self) -> None:
        self._began = self.clock()

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def elapsed(self) -> float:
        """Seconds the execution has run: the orchestrator's times when known, else ours."""
        if self._started_at is not None and self._completed_at is not None:
            return max(0.0, (self._completed_at - self._started_at).total_seconds())
        end = self._ended if self._ended is not None else self.clock()
        return max(0.0, end - (self._began or end))

    # -- snapshots ----------------------------------------------------------------------------

    def apply_snapshot(self, execution: AgentExecution) -> list[Change]:
        """Merge a complete snapshot; returns the changes in reading order (each message's
        text, then the tool calls it asked for, their sub-agents and todos)."""
        self.latest = execution
        status = execution.status
        changes: list[Change] = []
        self._times(status.started_at, status.completed_at)
        if status.phase not in TERMINAL_PHASES:
            changes += self._set_phase(status.phase, status.error)
        tools = {t.id: t for t in status.tool_calls}
        subs = {s.id: s for s in status.sub_agent_executions}
        # Todos are reported after the latest call that wrote them.
        todo_calls = [t.id for t in status.tool_calls if t.name == TODO_TOOL]
        todos_after = todo_calls[-1] if todo_calls else None
        todos_done = False
        # A snapshot of a large execution is a window of its latest messages after a marker
        # (docs/stub-rpcs.md): messages are keyed by their index in the whole transcript.
        window = window_of(status.messages[0]) if status.messages else None
        shift = window["omitted_messages"] - 1 if window else 0
        for index, message in enumerate(status.messages):
            if message.type != enum_pb2.MESSAGE_AI:
                continue
            changes += self._set_text(index + shift, message.content)
            for requested in message.tool_calls:
                call = tools.pop(requested.id, None) or requested
                changes += self._set_tool(call)
                if requested.id in subs:
                    changes += self._set_sub_agent(subs.pop(requested.id))
                if call.id == todos_after:
                    changes += self._set_todos(status.todos.values())
                    todos_done = True
        for call in tools.values():
            changes += self._set_tool(call)
            if call.id in subs:
                changes += self._set_sub_agent(subs.pop(call.id))
        for sub in subs.values():
            changes += self._set_sub_agent(sub)
        if not todos_done:
            changes += self._set_todos(status.todos.values())
        self._usage(status)
        if status.phase in TERMINAL_PHASES:
            changes += self._set_phase(status.phase, status.error)
        return changes

    def _times(self, started_at: str, completed_at: str) -> None:
        self._started_at = _parse_time(started_at) or self._started_at
        self._completed_at = _parse_time(completed_at) or self._completed_at

    def _usage(self, status: api_pb2.AgentExecutionStatus) -> None:
        if status.HasField("usage"):
            # Contract §7 (ours): every model call, helper calls such as summarising included.
            self.input_tokens = max(self.input_tokens, status.usage.total.input_tokens)
            self.output_tokens = max(self.output_tokens, status.usage.total.output_tokens)
            return
        # A runner without §7 usage: add up the turns' metadata.
        sources = [m.metadata for m in status.messages if m.type == enum_pb2.MESSAGE_AI]
        sources += [s.metadata for s in status.sub_agent_executions]
        inputs = outputs = 0
        for meta in sources:
            usage = json_format.MessageToDict(meta).get("usage") or {}
            inputs += int(usage.get("input_tokens", 0) or 0)
            outputs += int(usage.get("output_tokens", 0) or 0)
        self.input_tokens = max(self.input_tokens, inputs)
        self.output_tokens = max(self.output_tokens, outputs)

    def _set_phase(self, phase: int, error: str = "") -> list[Change]:
        if phase in (self.phase, enum_pb2.EXECUTION_PHASE_UNSPECIFIED):
            return []
        if self.terminal:
            return []  # a terminal phase is final, whatever arrives late
        self.phase, self.error = phase, error or self.error
        if self.terminal:
            self._ended = self.clock()
        return [PhaseChanged(phase, self.error)]

    def _set_text(self, index: int, content: str) -> list[Change]:
        shown = self.texts.get(index, "")
        if content == shown or (len(content) < len(shown) and shown.startswith(content)):
            return []  # nothing new, or the live stream is ahead of this snapshot
        self.texts[index] = content
        if content.startswith(shown):
            return [TextAppended(index, content[len(shown) :])]
        return [TextAppended(index, content, restart=True)]

    def _set_tool(self, call: api_pb2.ToolCall) -> list[Change]:
        args = json_format.MessageToDict(call.args) if call.HasField("args") else {}
        self._note_todo_order(call.id, call.name, args)
        view = ToolView(
            id=call.id,
            name=call.name,
            args=describe_args(call.name, args),
            state=_TOOL_STATES.get(call.status, _PENDING),
            result=call.result,
            error=call.error,
            approval_message=call.approval_message,
        )
        return self._put_tool(view)

    def _put_tool(self, view: ToolView) -> list[Change]:
        before = self.tools.get(view.id)
        if before is not None:
            if _RANK[view.state] < _RANK[before.state]:
                return []  # a late snapshot never moves a call backwards
            view = replace(
                view,
                name=view.name or before.name,
                args=view.args or before.args,
                result=view.result or before.result,
                error=view.error or before.error,
                approval_message=view.approval_message or before.approval_message,
            )
            if view == before:
                return []
        self.tools[view.id] = view
        if before is not None and before.state == view.state:
            return []  # details filled in; nothing a reader would see change
        return [ToolChanged(view, before.state if before else None)]

    def _set_sub_agent(self, sub: api_pb2.SubAgentExecution) -> list[Change]:
        view = SubAgentView(
            id=sub.id,
            name=sub.name,
            input=sub.input,
            state=_SUB_AGENT_STATES.get(sub.status, _PENDING),
            output=sub.output,
            error=sub.error,
        )
        before = self.sub_agents.get(sub.id)
        if before is not None and _RANK[view.state] < _RANK[before.state]:
            return []
        self.sub_agents[sub.id] = view
        if before is not None and before.state == view.state:
            return []
        return [SubAgentChanged(view, before.state if before else None)]

    def _note_todo_order(self, call_id: str, name: str, args: Mapping[str, Any]) -> None:
        """The map of todos has no order; the latest `write_todos` call's list gives it."""
        todos = args.get("todos")
        if name != TODO_TOOL or not isinstance(todos, list) or call_id in self._todo_calls:
            return
        self._todo_calls.add(call_id)
        self.todo_order = [
            _normalise(str(t.get("content", ""))) for t in todos if isinstance(t, dict)
        ]

    def ordered_todos(self) -> list[TodoView]:
        return sorted(self.todos.values(), key=self._todo_rank)

    def _todo_rank(self, todo: TodoView) -> tuple[int, str]:
        content = _normalise(todo.content)
        order = self.todo_order
        return (order.index(content) if content in order else len(order), todo.id)

    def _set_todos(self, items: Iterable[api_pb2.TodoItem]) -> list[Change]:
        changes: list[Change] = []
        for item in sorted(items, key=lambda i: self._todo_rank(TodoView(i.id, i.content, 0))):
            view = TodoView(item.id, item.content, item.status)
            before = self.todos.get(item.id)
            if before == view:
                continue
            self.todos[item.id] = view
            changes.append(TodoChanged(view, new=before is None))
        return changes

    # -- live events --------------------------------------------------------------------------

    def _live_tool(
        self, event: Mapping[str, Any], states: Mapping[str, str], **details: str
    ) -> list[Change]:
        """A live tool event as the call's new view (its name and arguments kept from what is
        known when the event leaves them out); nothing for an event without an id or state."""
        call_id = event.get("tool_call_id", "")
        state = states.get(event.get("status", "").upper())
        if not call_id or state is None:
            return []
        known = self.tools.get(call_id)
        view = ToolView(
            call_id,
            event.get("name", "") or (known.name if known else ""),
            known.args if known else "",
            state,
            **details,
        )
        return self._put_tool(view)

    def apply_live(self, event: Mapping[str, str]) -> list[Change]:
        """Merge one live event (docs/live-events.md); unknown types and fields are ignored."""
        kind = event.get("type", "")
        if kind == "token":
            index = _int(event.get("message_index"))
            if index is None:
                return []
            live = self._live_texts.get(index, "") + event.get("text", "")
            self._live_texts[index] = live
            shown = self.texts.get(index, "")
            if len(live) > len(shown) and live.startswith(shown):
                self.texts[index] = live
                return [TextAppended(index, live[len(shown) :])]
            return []
        if kind == "tool_start":
            call_id = event.get("tool_call_id", "")
            name = event.get("name", "")
            try:
                args = json.loads(event.get("args") or "{}")
            except ValueError:
                args = {}
            args = args if isinstance(args, dict) else {}
            self._note_todo_order(call_id, name, args)
            described = describe_args(name, args)
            return self._put_tool(ToolView(call_id, name, described, _RUNNING)) if call_id else []
        if kind == "tool_end":
            return self._live_tool(
                event,
                _LIVE_TOOL_STATES,
                result=event.get("result", ""),
                error=event.get("error", ""),
            )
        if kind == "approval":
            # A gated call waiting (with the approver's message), or resumed with a decision.
            return self._live_tool(
                event, _LIVE_APPROVAL_STATES, approval_message=event.get("message", "")
            )
        if kind == "phase":
            phase = parse_phase(event.get("phase", ""))
            # The terminal phase comes from the orchestrator: only its snapshot is final.
            if phase is None or phase in TERMINAL_PHASES:
                return []
            return self._set_phase(phase, event.get("error", ""))
        return []


def _normalise(content: str) -> str:
    return " ".join(content.split()).casefold()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _parse_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- summaries ------------------------------------------------------------------------------------


def undecided(execution: AgentExecution) -> list[api_pb2.ToolCall]:
    """The calls waiting for a person's decision, while the execution waits for one."""
    if execution.status.phase != enum_pb2.EXECUTION_WAITING_FOR_APPROVAL:
        return []
    return [
        c
        for c in execution.status.tool_calls
        if c.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL
        and c.approval_action == enum_pb2.APPROVAL_ACTION_UNSPECIFIED
    ]


def final_answer(execution: AgentExecution) -> str:
    """The text of the last AI message that has any."""
    for message in reversed(execution.status.messages):
        if message.type == enum_pb2.MESSAGE_AI and message.content.strip():
            return message.content
    return ""


def summary_line(view: ExecutionView) -> str:
    """`COMPLETED in 6.2s · 9 messages · 12 tool calls · 5/5 todos · 1 sub-agent · 3,456 tokens`."""
    status = view.latest.status if view.latest is not None else api_pb2.AgentExecutionStatus()
    parts = [f"{phase_name(view.phase)} in {view.elapsed:.1f}s"]
    parts.append(_count(len(status.messages), "message"))
    failed = sum(1 for t in view.tools.values() if t.state == _FAILED)
    parts.append(_count(len(view.tools), "tool call") + (f" ({failed} failed)" if failed else ""))
    if view.todos:
        done = sum(1 for t in view.todos.values() if t.status == enum_pb2.TODO_COMPLETED)
        parts.append(f"{done}/{len(view.todos)} todos done")
    if view.sub_agents:
        parts.append(_count(len(view.sub_agents), "sub-agent"))
    if view.input_tokens or view.output_tokens:
        parts.append(f"{view.input_tokens:,} tokens in / {view.output_tokens:,} out")
    return " · ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- renderers ------------------------------------------------------------------------------------


class Renderer(Protocol):
    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def show(self, view: ExecutionView, changes: list[Change]) -> None: ...

    def tick(self, view: ExecutionView) -> None: ...

    def suspend(self) -> AbstractContextManager[None]:
        """Step aside while the person is asked something (an approval)."""
        ...


def _tool_line(tool: ToolView) -> str:
    """`name args -> result`; the state is shown in front by the renderer."""
    line = tool.name
    if tool.args:
        line += f" {tool.args}"
    if tool.state == _FAILED and tool.error:
        line += f" -> {_clip(tool.error, 80)}"
    elif tool.state in (_DONE, _SKIPPED) and tool.result:
        line += f" -> {_clip(tool.result, 60)}"
    elif tool.state == _WAITING and tool.approval_message:
        line += f" -- needs approval: {_clip(tool.approval_message, 100)}"
    return line


def _sub_agent_line(sub: SubAgentView) -> str:
    line = f"sub-agent {sub.name or 'task'}: {_clip(sub.input, 70)}"
    if sub.state == _DONE and sub.output:
        line += f" -> {_clip(sub.output, 80)}"
    if sub.state == _FAILED and sub.error:
        line += f" -> {_clip(sub.error, 80)}"
    return line


def _todo_line(todo: TodoView) -> str:
    return f"{TODO_MARKS.get(todo.status, '[?]')} {todo.content}"


class PlainRenderer:
    """One line per change, for pipes and CI logs; text streams as it arrives.

    Phase, todo and sub-agent changes come only with status snapshots, which trail the live text;
    one that arrives while a message is streaming is held until that message's line ends, so a
    sentence is never cut in two.
    """

    def __init__(
        self, out: IO[str] | None = None, *, indent: str = "  ", summary: bool = True
    ) -> None:
        self.out = out or sys.stdout
        self.indent = indent
        self.summary = summary  # end with the summary line (off when the caller prints one)
        self._open_text: int | None = None  # the message whose text the current line holds
        self._line_start = False  # the open text ended with a newline
        self._held: list[str] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end_text()
        self.out.flush()

    def tick(self, view: ExecutionView) -> None:
        """Plain output has no clock to redraw."""

    @contextlib.contextmanager
    def suspend(self) -> Iterator[None]:
        self._end_text()
        self.out.flush()
        yield

    def show(self, view: ExecutionView, changes: list[Change]) -> None:
        for change in changes:
            match change:
                case TextAppended(index, text, restart):
                    self._text(index, text, restart)
                case PhaseChanged(phase, error):
                    if view.terminal:
                        if self.summary:
                            self._line(f"-- {summary_line(view)}" + (f": {error}" if error else ""))
                        else:
                            self._end_text()
                    else:
                        self._line(f"-- {phase_name(phase)} ({view.elapsed:.1f}s)", hold=True)
                case ToolChanged(tool, _):
                    if tool.state != _PENDING and tool.name not in _SHOWN_ELSEWHERE:
                        self._line(f"[{tool.state}] {_tool_line(tool)}")
                case SubAgentChanged(sub, _):
                    if sub.state != _PENDING:
                        self._line(f"[{sub.state}] {_sub_agent_line(sub)}", hold=True)
                case TodoChanged(todo, _):
                    self._line("todo " + _todo_line(todo), hold=True)
        self.out.flush()

    def _text(self, index: int, text: str, restart: bool) -> None:
        if self._open_text != index or restart:
            self._end_text()
            self.out.write(f"{self.indent}assistant: ")
            self._open_text = index
            self._line_start = False
        # Continuation lines are indented under the label; blank lines stay blank.
        for number, part in enumerate(text.split("\n")):
            if number:
                self.out.write("\n")
                self._line_start = True
            if part:
                if self._line_start:
                    self.out.write(self.indent + "  ")
                    self._line_start = False
                self.out.write(part)

    def _line(self, line: str, *, hold: bool = False) -> None:
        if hold and self._open_text is not None:
            self._held.append(line)
            return
        self._end_text()
        self.out.write(f"{self.indent}{line}\n")

    def _end_text(self) -> None:
        if self._open_text is not None:
            if not self._line_start:
                self.out.write("\n")
            self._open_text = None
        held, self._held = self._held, []
        for line in held:
            self.out.write(f"{self.indent}{line}\n")


class RichRenderer:
    """A live footer (streaming text, running tools, sub-agents, todos, status bar) with
    finished messages and tool calls printed above it as they complete."""

    def __init__(self, console: Console, *, max_text_lines: int = 12) -> None:
        self.console = console
        self.max_text_lines = max_text_lines
        self._streaming: int | None = None
        self._view: ExecutionView | None = None
        self._live = Live(
            console=console,
            auto_refresh=False,  # redrawn from the event loop: no thread reads the view
            transient=False,
            vertical_overflow="visible",
        )

    def __enter__(self) -> Self:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._view is not None:
            self._flush_text(self._view)
            self._live.update(self._footer(self._view), refresh=True)
        self._live.stop()

    def tick(self, view: ExecutionView) -> None:
        self._view = view
        self._live.update(self._footer(view), refresh=True)

    @contextlib.contextmanager
    def suspend(self) -> Iterator[None]:
        if self._view is not None:
            self._flush_text(self._view)
        self._live.stop()
        try:
            yield
        finally:
            self._live.start()

    def show(self, view: ExecutionView, changes: list[Change]) -> None:
        self._view = view
        for change in changes:
            match change:
                case TextAppended(index, _, restart):
                    if self._streaming is not None and (self._streaming != index or restart):
                        self._flush_text(view)
                    self._streaming = index
                case ToolChanged(tool, _):
                    self._flush_text(view)
                    shown = tool.state in _FINISHED or tool.state == _WAITING
                    if shown and tool.name not in _SHOWN_ELSEWHERE:
                        self._print_line(_state_line(tool.state, _tool_line(tool)))
                case SubAgentChanged(sub, _):
                    self._flush_text(view)
                    if sub.state in _FINISHED:
                        self._print_line(_state_line(sub.state, _sub_agent_line(sub)))
                case PhaseChanged():
                    if view.terminal:
                        self._flush_text(view)
                case TodoChanged():
                    pass  # the footer shows the list
        self._live.update(self._footer(view), refresh=True)

    def _print_line(self, text: Text) -> None:
        # console.print joins Text objects into a new one, dropping their own no_wrap.
        self._live.console.print(text, no_wrap=True, overflow="ellipsis")

    def _flush_text(self, view: ExecutionView) -> None:
        if self._streaming is None:
            return
        content = view.texts.get(self._streaming, "").strip()
        self._streaming = None
        if content:
            self._live.console.print(_assistant(content))

    def _footer(self, view: ExecutionView) -> RenderableType:
        width = max(20, self.console.width)
        below: list[Text] = []
        for tool in view.tools.values():
            if tool.state == _RUNNING and tool.name not in _SHOWN_ELSEWHERE:
                below.append(_state_line(tool.state, _tool_tail(tool)))
        for sub in view.sub_agents.values():
            if sub.state in (_PENDING, _RUNNING):
                below.append(
                    _state_line(sub.state, f"sub-agent {sub.name}: {_clip(sub.input, 60)}")
                )
        if view.todos:
            below.append(_todo_block(view.ordered_todos()))
        below.append(_status_bar(view))
        if self._streaming is None:
            return Group(*below)
        # The footer must fit the screen, or the terminal scrolls and leaves copies behind:
        # the streaming text gets what the rest leaves, its latest lines first.
        used = sum(len(part.wrap(self.console, width)) for part in below)
        budget = max(2, min(self.max_text_lines, self.console.height - used - 2))
        streaming = _assistant(view.texts.get(self._streaming, "") + "▌")
        lines = list(streaming.wrap(self.console, width))[-budget:]
        return Group(Text("\n").join(lines), *below)


def _state_line(state: str, rest: str) -> Text:
    text = Text("  ")
    text.append(f"[{state}]", style=STATE_STYLES.get(state, ""))
    text.append(" " + rest)
    text.no_wrap, text.overflow = True, "ellipsis"  # one line each, however long
    return text


def _tool_tail(tool: ToolView) -> str:
    return f"{tool.name} {tool.args}".strip()


def _assistant(content: str) -> Text:
    text = Text("assistant ", style="bold magenta")
    text.append(content)
    return text


def _todo_block(todos: Iterable[TodoView]) -> Text:
    text = Text("todos", style="bold")
    for todo in todos:
        text.append("\n  ")
        text.append(_todo_line(todo), style=_TODO_STYLES.get(todo.status, ""))
    return text


def _status_bar(view: ExecutionView) -> Text:
    text = Text("● ", style=PHASE_STYLES.get(view.phase, ""))
    text.append(phase_name(view.phase), style=PHASE_STYLES.get(view.phase, ""))
    text.append(f"  {view.elapsed:5.1f}s", style="bold")
    text.append(f"  {view.execution_id}", style="dim")
    done = sum(1 for t in view.tools.values() if t.state in (_DONE, _FAILED))
    text.append(f"  tools {done}/{len(view.tools)}", style="dim")
    if view.input_tokens or view.output_tokens:
        text.append(f"  tokens {view.input_tokens:,} in / {view.output_tokens:,} out", style="dim")
    if view.terminal and view.error:
        text.append(f"\n  error: {view.error}", style="red")
    return text


# -- following ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    execution: AgentExecution


@dataclass(frozen=True, slots=True)
class _LiveEvent:
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Ended:
    error: BaseException | None = None


_Item = _Snapshot | _LiveEvent | _Ended


def live_stream_key(execution_id: str) -> str:
    return f"stigmer:execution:{execution_id}:events"


async def read_live_events(
    redis_url: str, execution_id: str, *, block_ms: int = 1000
) -> AsyncIterator[Mapping[str, str]]:
    """Every event of the execution's live stream from its start, until its `end` event."""
    from redis.asyncio import Redis  # noqa: PLC0415 (optional path; keeps CLI start-up quick)

    client: Redis = Redis.from_url(
        redis_url, decode_responses=True, socket_timeout=5 + block_ms / 1000
    )
    key, last = live_stream_key(execution_id), "0"
    try:
        while True:
            # decode_responses=True: [(key, [(entry_id, {field: value}), ...])] or None.
            batches: Any = await client.xread({key: last}, block=block_ms, count=500)
            for _key, entries in batches or []:
                for entry_id, event in entries:
                    last = entry_id
                    yield event
                    if event.get("type") == "end":
                        return
    finally:
        await client.aclose()


async def follow_execution(
    client: StigmerClient,
    execution_id: str,
    *,
    redis_url: str | None = None,
    renderer: Renderer | None = None,
    console: Console | None = None,
) -> AgentExecution:
    """Render the execution until it reaches a terminal phase; returns its final state.

    The renderer defaults to `RichRenderer` on a terminal and `PlainRenderer` otherwise.
    """
    view = await watch(
        client, execution_id, redis_url=redis_url, renderer=renderer, console=console
    )
    assert view.latest is not None  # noqa: S101 (watch raises when no state arrived)
    return view.latest


async def _pump_snapshots(
    client: StigmerClient, execution_id: str, queue: asyncio.Queue[_Item]
) -> None:
    try:
        async for execution in execution_states(client, execution_id):
            await queue.put(_Snapshot(execution))
    except Exception as err:  # handed to the consumer, which raises it
        await queue.put(_Ended(err))
    else:
        await queue.put(_Ended())


async def _pump_live(url: str, execution_id: str, queue: asyncio.Queue[_Item]) -> None:
    try:
        async for event in read_live_events(url, execution_id):
            await queue.put(_LiveEvent(event))
    except Exception as err:  # best effort: the status stream still flows
        log.info("live_events_unavailable", redis=url, error=str(err))


async def _render_until_ended(
    view: ExecutionView,
    queue: asyncio.Queue[_Item],
    renderer: Renderer,
    tick_seconds: float,
    on_approval: Callable[[list[api_pb2.ToolCall]], Awaitable[None]] | None = None,
) -> None:
    """Draw each snapshot and live event as it comes (and tick between them) until the
    execution is terminal or its subscription ends; a subscription error is raised. Calls
    waiting for a decision go to `on_approval` once each, with the renderer stepped aside."""
    asked: set[str] = set()
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), tick_seconds)
        except TimeoutError:
            renderer.tick(view)
            continue
        if isinstance(item, _Ended):
            if item.error is not None:
                raise item.error
            return
        if isinstance(item, _Snapshot):
            renderer.show(view, view.apply_snapshot(item.execution))
            waiting = [c for c in undecided(item.execution) if c.id not in asked]
            if on_approval is not None and waiting:
                asked.update(c.id for c in waiting)
                with renderer.suspend():
                    await on_approval(waiting)
        else:
            renderer.show(view, view.apply_live(item.fields))
        if view.terminal:
            return


async def watch(
    client: StigmerClient,
    execution_id: str,
    *,
    redis_url: str | None = None,
    renderer: Renderer | None = None,
    console: Console | None = None,
    tick_seconds: float = 0.1,
    on_approval: Callable[[list[api_pb2.ToolCall]], Awaitable[None]] | None = None,
) -> ExecutionView:
    """`follow_execution`, returning the whole view (counts, usage, elapsed time).

    With `on_approval`, calls waiting for a decision are handed to it (once each) while the
    execution is WAITING_FOR_APPROVAL, with the renderer stepped aside: it asks the person.
    """
    console = console or Console()
    renderer = renderer or (
        RichRenderer(console) if console.is_terminal else PlainRenderer(console.file)
    )
    view = ExecutionView(execution_id)
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump_snapshots(client, execution_id, queue))]
    if redis_url:
        tasks.append(asyncio.create_task(_pump_live(redis_url, execution_id, queue)))
    try:
        with renderer:
            await _render_until_ended(view, queue, renderer, tick_seconds, on_approval)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if view.latest is None:
        raise RuntimeError(f"the subscription of {execution_id} ended before any state arrived")
    return view
