"""Which events the StatusBuilder can apply: one cheap check per event type.

A malformed event (a wrong type where the handlers rely on one, an id missing) is skipped and
logged by the builder, never raised. `CHECKS` maps each event type to its check, so the builder
finds the check and the handler of an event with the same one dict lookup; a token delta, most
of a run's events, passes through a check of a few identity tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.domain.agent_events import (
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

Check = Callable[[Any], "str | None"]


def _sub_agent_problem(event: object) -> str | None:
    if not isinstance(getattr(event, "sub_agent_id", ""), str):
        return "sub_agent_id is not a string"
    return None


def delta_problem(event: TokenDelta) -> str | None:
    message_id = event.message_id
    # The common case in three identity tests; anything else takes the full checks.
    if (
        type(message_id) is str
        and message_id
        and type(event.text) is str
        and type(event.sub_agent_id) is str
    ):
        return None
    if not isinstance(message_id, str) or not message_id:
        return "token delta without a message id"
    if not isinstance(event.text, str):
        return "token delta text is not a string"
    return _sub_agent_problem(event)


def turn_problem(event: ModelTurnEnded) -> str | None:
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
    return _sub_agent_problem(event)


def helper_problem(event: HelperModelCall) -> str | None:
    if not isinstance(event.usage, Usage):
        return "helper call without a usage"
    if not isinstance(event.call_id, str) or not isinstance(event.helper, str):
        return "helper call id or kind is not a string"
    if not isinstance(event.model_name, str):
        return "model name is not a string"
    return _sub_agent_problem(event)


def _tool_id_problem(event: ToolStarted | ToolEnded) -> str | None:
    if not isinstance(event.tool_call_id, str) or not event.tool_call_id:
        return "tool event without a tool call id"
    if not isinstance(event.name, str):
        return "tool name is not a string"
    return None


def started_problem(event: ToolStarted) -> str | None:
    problem = _tool_id_problem(event)
    if problem is None and not isinstance(event.args, Mapping):
        return "tool arguments are not a mapping"
    return problem or _sub_agent_problem(event)


def ended_problem(event: ToolEnded) -> str | None:
    problem = _tool_id_problem(event)
    if problem is None and not (isinstance(event.result, str) and isinstance(event.error, str)):
        return "tool result or error is not a string"
    return problem or _sub_agent_problem(event)


def approval_problem(event: ApprovalRequested | ApprovalDecided) -> str | None:
    if not isinstance(event.tool_call_id, str) or not event.tool_call_id:
        return "approval event without a tool call id"
    return _sub_agent_problem(event)


CHECKS: Mapping[type, Check] = {
    TokenDelta: delta_problem,
    ModelTurnEnded: turn_problem,
    ToolStarted: started_problem,
    ToolEnded: ended_problem,
    ApprovalRequested: approval_problem,
    ApprovalDecided: approval_problem,
    HelperModelCall: helper_problem,
}
"""Event type → its check: why the event cannot be applied, or None."""
