"""Approval gates as plain values: which tool calls wait for a person, and what was decided.

An agent declares its gates in `AgentSpec.tool_approvals` (contract §7): a tool name or a glob
(`execute`, `write_*`, an MCP tool as `<server>/<tool>`) and a message with `{arg}` placeholders.
`GateRules` answers "does this call wait?" for the main agent and every sub-agent alike; the tools
a person approved for the rest of the execution (APPROVE_ALL) are remembered in it.

A decision is recorded by the orchestrator on the pending `ToolCall` (`approval_action`,
`approved_by`, `approval_decided_at`, and the person's comment in `result`; see
docs/run-control.md). `recorded_approvals` reads them back from the execution as the orchestrator
stores it, with what the runner itself recorded when the call was gated (`approval_message`,
`approval_requested_at`).
"""

from __future__ import annotations

import fnmatch
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

Action: TypeAlias = enum_pb2.ApprovalAction.ValueType

APPROVE = enum_pb2.APPROVAL_ACTION_APPROVE
SKIP = enum_pb2.APPROVAL_ACTION_SKIP
REJECT = enum_pb2.APPROVAL_ACTION_REJECT
APPROVE_ALL = enum_pb2.APPROVAL_ACTION_APPROVE_ALL
RUNS = frozenset({APPROVE, APPROVE_ALL})
"""Actions after which the tool runs."""

DEFAULT_MESSAGE = "The agent wants to run {tool}."
SKIPPED_RESULT = "The user skipped this tool call; it was not run. Carry on without its result."
REJECTED_RESULT = "The user rejected this tool call; it was not run."
_ARG_PREVIEW = 200


@dataclass(frozen=True)
class Policy:
    """One `ToolApprovalPolicy`: the tool name or glob, and the message shown to the approver."""

    tool: str
    message: str = ""

    def matches(self, name: str, server: str = "") -> bool:
        pattern = self.tool.strip()
        if not pattern:
            return False
        if "/" in pattern:
            return bool(server) and fnmatch.fnmatchcase(f"{server}/{name}", pattern)
        return fnmatch.fnmatchcase(name, pattern)


@dataclass
class GateRules:
    """Which calls of one execution wait for a person.

    `approved_all` grows when a person answers APPROVE_ALL: later calls of that tool run without
    asking, for the rest of the execution (seeded on every attempt from the recorded decisions).
    `mcp_servers` maps an MCP tool's name to its server, so `<server>/<tool>` patterns match.
    """

    policies: tuple[Policy, ...]
    approved_all: set[str] = field(default_factory=set)
    mcp_servers: Mapping[str, str] = field(default_factory=dict)

    def policy_for(self, name: str) -> Policy | None:
        """The first policy gating a call of `name`, or None when the call runs freely."""
        if name in self.approved_all:
            return None
        server = self.mcp_servers.get(name, "")
        return next((p for p in self.policies if p.matches(name, server)), None)

    def __bool__(self) -> bool:
        return bool(self.policies)


def policies_of(agent: agent_api.Agent) -> tuple[Policy, ...]:
    return tuple(
        Policy(p.tool.strip(), p.message) for p in agent.spec.tool_approvals if p.tool.strip()
    )


def approval_message(
    policy: Policy, name: str, args: Mapping[str, Any], redact: Callable[[str], str]
) -> str:
    """The policy's message with `{arg}` placeholders filled from the call's arguments, redacted.

    `{tool}` names the tool; a placeholder naming no argument stays as written, and a template
    that does not parse is shown as is: the message must never fail the run.
    """
    template = policy.message.strip() or DEFAULT_MESSAGE
    values = {"tool": name, **{k: _preview(v) for k, v in args.items()}}
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return redact(template)
    out: list[str] = []
    for literal, field_name, spec, conversion in parts:
        out.append(literal)
        if field_name is None:
            continue
        if field_name in values:
            out.append(values[field_name])
        else:
            suffix = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            out.append("{" + field_name + suffix + "}")
    return redact("".join(out))


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _ARG_PREVIEW else text[: _ARG_PREVIEW - 1] + "…"


@dataclass(frozen=True)
class Gate:
    """A call that waits (or waited) for a person, as the runner recorded it."""

    tool_call_id: str
    name: str
    message: str
    requested_at: str = ""
    sub_agent_id: str = ""
    """The `task` call of the sub-agent that made the call (empty: the main agent)."""


@dataclass(frozen=True)
class Decision:
    """A person's answer for one gated call, as the orchestrator recorded it."""

    tool_call_id: str
    action: Action
    comment: str = ""
    approved_by: str = ""
    decided_at: str = ""

    @property
    def runs(self) -> bool:
        return self.action in RUNS

    def tool_result(self) -> str:
        """What the model is told instead of the tool's result when the tool does not run."""
        if self.action == REJECT:
            return self.comment.strip() or REJECTED_RESULT
        return SKIPPED_RESULT


@dataclass(frozen=True)
class Recorded:
    """The gates and decisions of one execution, read from the orchestrator."""

    gates: Mapping[str, Gate] = field(default_factory=dict)
    decisions: Mapping[str, Decision] = field(default_factory=dict)
    approved_all: frozenset[str] = frozenset()

    def pending(self) -> list[Gate]:
        return [g for i, g in self.gates.items() if i not in self.decisions]


def recorded_approvals(execution: execution_api.AgentExecution) -> Recorded:
    """The gates the runner recorded on the execution and the decisions made on them."""
    gates: dict[str, Gate] = {}
    decisions: dict[str, Decision] = {}
    approved_all: set[str] = set()
    for call in _calls(execution.status):
        if not call.requires_approval or not call.id:
            continue
        meta = call.component_metadata.metadata.fields
        sub_agent = meta["sub_agent_id"].string_value if "sub_agent_id" in meta else ""
        gates[call.id] = Gate(
            call.id, call.name, call.approval_message, call.approval_requested_at, sub_agent
        )
        action = call.approval_action
        if action == enum_pb2.APPROVAL_ACTION_UNSPECIFIED:
            continue
        decisions[call.id] = Decision(
            tool_call_id=call.id,
            action=action,
            comment=call.result if action not in RUNS else "",
            approved_by=call.approved_by,
            decided_at=call.approval_decided_at,
        )
        if action == APPROVE_ALL:
            approved_all.add(call.name)
    return Recorded(gates, decisions, frozenset(approved_all))


def _calls(status: execution_api.AgentExecutionStatus) -> Iterable[execution_api.ToolCall]:
    seen: set[str] = set()
    for call in status.tool_calls:
        seen.add(call.id)
        yield call
    for message in status.messages:
        for call in message.tool_calls:
            if call.id not in seen:
                seen.add(call.id)
                yield call
