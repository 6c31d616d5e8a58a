"""How an incoming `AgentExecutionStatus` merges into the stored one (contract §4), done right.

Field by field, as the Go server does: `messages`, `tool_calls`, `sub_agent_executions` and
`todos` are replaced wholesale when the incoming one is non-empty and kept when empty; `phase`
is overwritten unless UNSPECIFIED; `error`, `started_at`, `completed_at` are overwritten when
non-empty; `usage` (contract §7, ours) is replaced when set. Unlike the Go server, a terminal
outcome is final: once the phase is COMPLETED, FAILED or CANCELLED, later runner updates cannot
change phase, error or completion time (they may still complete the transcript). Only the
orchestrator's own workflow, which knows how the run really ended, merges *authoritatively* past
that guard.

Pure functions; the store applies them under compare-and-swap. On `updateStatus` the four lists
never reach `merge_status` as messages: the store applies the same list rule to their encoded
entries (`store/executions.py`) and merges only the rest of the status here.
"""

from __future__ import annotations

from collections.abc import Iterable

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

TERMINAL_PHASES = frozenset(
    {
        enum_pb2.ExecutionPhase.EXECUTION_COMPLETED,
        enum_pb2.ExecutionPhase.EXECUTION_FAILED,
        enum_pb2.ExecutionPhase.EXECUTION_CANCELLED,
        enum_pb2.ExecutionPhase.EXECUTION_TERMINATED,
    }
)


def is_terminal(phase: enum_pb2.ExecutionPhase.ValueType) -> bool:
    return phase in TERMINAL_PHASES


def merge_status(
    current: api_pb2.AgentExecutionStatus,
    incoming: api_pb2.AgentExecutionStatus,
    *,
    authoritative: bool = False,
) -> api_pb2.AgentExecutionStatus:
    """The stored status after `incoming` lands; neither argument is modified.

    `audit` and `callback_token` are the orchestrator's own and never taken from `incoming`.
    """
    merged = api_pb2.AgentExecutionStatus()
    merged.CopyFrom(current)
    if incoming.messages:
        del merged.messages[:]
        merged.messages.extend(incoming.messages)
    if incoming.tool_calls:
        del merged.tool_calls[:]
        merged.tool_calls.extend(incoming.tool_calls)
    if incoming.sub_agent_executions:
        del merged.sub_agent_executions[:]
        merged.sub_agent_executions.extend(incoming.sub_agent_executions)
    if incoming.todos:
        merged.todos.clear()
        for key, todo in incoming.todos.items():
            merged.todos[key].CopyFrom(todo)
    if incoming.started_at:
        merged.started_at = incoming.started_at
    if incoming.HasField("usage"):
        # Contract §7 (ours): the runner sends the execution's whole usage; it replaces ours.
        merged.usage.CopyFrom(incoming.usage)
    outcome_open = authoritative or not is_terminal(current.phase)
    if outcome_open:
        if incoming.phase != enum_pb2.ExecutionPhase.EXECUTION_PHASE_UNSPECIFIED:
            merged.phase = incoming.phase
        if incoming.error:
            merged.error = incoming.error
        elif authoritative and incoming.phase == enum_pb2.ExecutionPhase.EXECUTION_COMPLETED:
            # A retried attempt succeeded: the earlier attempt's error no longer describes the run.
            merged.error = ""
        if incoming.completed_at:
            merged.completed_at = incoming.completed_at
    return merged


_UNSETTLED_CALLS = frozenset(
    {
        enum_pb2.ToolCallStatus.TOOL_CALL_PENDING,
        enum_pb2.ToolCallStatus.TOOL_CALL_RUNNING,
        enum_pb2.ToolCallStatus.TOOL_CALL_WAITING_APPROVAL,
    }
)
_RUNNING_SUB_AGENTS = frozenset(
    {enum_pb2.SubAgentStatus.SUB_AGENT_PENDING, enum_pb2.SubAgentStatus.SUB_AGENT_IN_PROGRESS}
)


def ended(
    phase: enum_pb2.ExecutionPhase.ValueType,
    tool_calls: Iterable[bytes],
    sub_agents: Iterable[bytes],
) -> bool:
    """Whether an execution in `phase` with these list entries (encoded `ToolCall`s and
    `SubAgentExecution`s) is over for a watcher: terminal, and settled (`settle` would change
    nothing). An ended run is stored terminal first and settled by the next write, so a stream
    that stopped at the first would miss the second. Parses the entries only when terminal."""
    if not is_terminal(phase):
        return False
    if any(api_pb2.ToolCall.FromString(e).status in _UNSETTLED_CALLS for e in tool_calls):
        return False
    return not any(
        api_pb2.SubAgentExecution.FromString(e).status in _RUNNING_SUB_AGENTS for e in sub_agents
    )


def settle(status: api_pb2.AgentExecutionStatus) -> bool:
    """Once the execution has ended, nothing in it is still going (contract §7): every tool
    call still PENDING, RUNNING or WAITING_APPROVAL becomes TOOL_CALL_INTERRUPTED, and every
    sub-agent still pending or running becomes CANCELLED (the run was cancelled or terminated)
    or FAILED (it failed, or completed without it). Changes `status` in place; True if it did.
    """
    phase = status.phase
    if not is_terminal(phase):
        return False
    changed = False
    for call in status.tool_calls:
        if call.status in _UNSETTLED_CALLS:
            call.status = enum_pb2.ToolCallStatus.TOOL_CALL_INTERRUPTED
            if not call.completed_at and status.completed_at:
                call.completed_at = status.completed_at
            changed = True
    stopped = phase in (
        enum_pb2.ExecutionPhase.EXECUTION_CANCELLED,
        enum_pb2.ExecutionPhase.EXECUTION_TERMINATED,
    )
    for sub in status.sub_agent_executions:
        if sub.status in _RUNNING_SUB_AGENTS:
            sub.status = (
                enum_pb2.SubAgentStatus.SUB_AGENT_CANCELLED
                if stopped
                else enum_pb2.SubAgentStatus.SUB_AGENT_FAILED
            )
            changed = True
    return changed
