"""What the agent run emits, as plain values: the input of the StatusBuilder.

`worker.agent.events` turns LangGraph stream items into these; recorded runs are stored as JSON
lines of them (`event_to_dict` / `event_from_dict`), so the reducer is tested on real streams
without LangChain objects, an event loop or a model.

Every event names the agent that produced it: `sub_agent_id` is empty for the main agent and is
the id of the `task` tool call that launched the sub-agent otherwise. Ids are the model's own (the
AI message id of a model turn, the tool-call id of a tool call), which makes every event
idempotent to re-apply: replaying a turn after a resume updates entries instead of adding them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one model turn, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One tool call the model asked for in a turn."""

    id: str
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """A piece of streamed model text; `message_id` identifies the model turn it belongs to."""

    message_id: str
    text: str
    sub_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class ModelTurnEnded:
    """A model turn finished: its complete text, the tool calls it requested, its usage."""

    message_id: str
    text: str
    tool_calls: tuple[ToolCallRequest, ...] = ()
    usage: Usage | None = None
    model_name: str = ""
    sub_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """A tool call began executing."""

    tool_call_id: str
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    sub_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class ToolEnded:
    """A tool call produced its result; a non-empty `error` means it failed."""

    tool_call_id: str
    name: str
    result: str
    error: str = ""
    sub_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """A gated tool call stopped before it ran: it waits for a person's decision.

    `message` is the approver's text, filled and redacted (`worker.domain.approvals`)."""

    tool_call_id: str
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""
    sub_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    """A person's decision on a gated call (`action`: an `ApprovalAction` number), as recorded
    by the orchestrator; the comment is what the model gets when the tool does not run."""

    tool_call_id: str
    action: int
    comment: str = ""
    approved_by: str = ""
    decided_at: str = ""
    sub_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class HelperModelCall:
    """Usage reported by a model call made inside the graph that is not an agent's turn.

    deepagents' summarisation (`helper="summarization"`), another middleware's internal call
    (`"middleware"`), a model called inside a tool (`"tool"`). Nothing of it enters the
    transcript; its tokens count in the execution's usage. One event per streamed piece that
    reports usage (a provider may report input and output tokens in different chunks), so the
    events of one call (`call_id`, the message id) add up; they are never replayed.
    """

    call_id: str
    usage: Usage
    helper: str
    model_name: str = ""
    sub_agent_id: str = ""


AgentEvent: TypeAlias = (
    TokenDelta
    | ModelTurnEnded
    | ToolStarted
    | ToolEnded
    | HelperModelCall
    | ApprovalRequested
    | ApprovalDecided
)

EVENT_TYPES: Mapping[str, type[AgentEvent]] = {
    cls.__name__: cls
    for cls in (
        TokenDelta,
        ModelTurnEnded,
        ToolStarted,
        ToolEnded,
        HelperModelCall,
        ApprovalRequested,
        ApprovalDecided,
    )
}


def event_to_dict(event: AgentEvent) -> dict[str, Any]:
    """A JSON-ready dict with a `type` key naming the event class."""
    out: dict[str, Any] = {"type": type(event).__name__}
    for name in event.__dataclass_fields__:
        value = getattr(event, name)
        if isinstance(value, Usage):
            value = {
                "input_tokens": value.input_tokens,
                "output_tokens": value.output_tokens,
                "total_tokens": value.total_tokens,
            }
        elif isinstance(value, tuple):
            value = [{"id": c.id, "name": c.name, "args": dict(c.args)} for c in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        out[name] = value
    return out


def event_from_dict(data: Mapping[str, Any]) -> AgentEvent:
    """The inverse of `event_to_dict`; raises `ValueError` on anything malformed."""
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    fields = {k: v for k, v in data.items() if k != "type"}
    try:
        if cls is ModelTurnEnded:
            calls = fields.get("tool_calls") or []
            fields["tool_calls"] = tuple(
                ToolCallRequest(id=c["id"], name=c["name"], args=c.get("args") or {}) for c in calls
            )
        if cls is ModelTurnEnded or cls is HelperModelCall:
            usage = fields.get("usage")
            fields["usage"] = Usage(**usage) if usage is not None else None
        return cls(**fields)
    except (TypeError, KeyError) as err:
        raise ValueError(f"malformed {kind} event: {err}") from err


def dumps(event: AgentEvent) -> str:
    """One JSON line (no trailing newline); values that are not JSON become strings."""
    return json.dumps(event_to_dict(event), default=str, ensure_ascii=False)


def loads(line: str) -> AgentEvent:
    return event_from_dict(json.loads(line))
