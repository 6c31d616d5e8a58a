"""The approval gate: an agent middleware that stops a gated tool call before it runs.

After each model turn (`after_model`), the calls that `GateRules` gates are put to a person with
a LangGraph `interrupt`: the graph stops there with its checkpoint saved, before the tools node
runs anything, and `astream` simply ends. The same middleware instance is given to the main agent
and to every sub-agent, so a call a sub-agent makes is gated the same way; the sub-agent's
interrupt surfaces through the `task` call that runs it, and resuming re-enters the sub-agent at
its own checkpoint.

Why a middleware of our own rather than langchain's `HumanInTheLoopMiddleware` or Graphton's
`approval_checker`: Graphton's checker wraps only its sandbox and MCP tools and interrupts inside
the tool (after the tool call has started), and neither knows APPROVE_ALL for a whole execution
or takes decisions keyed by tool-call id. Keyed decisions keep a resume exact even when the set of
gated calls shrinks between attempts (a tool approved for the rest of the run is no longer gated).

Interrupt value: `{"kind": "stigmer.approval", "calls": [{"tool_call_id", "name", "args",
"message"}]}`. Resume value: `{"decisions": {<tool_call_id>: {"action": <ApprovalAction number>,
"comment": str}}}`. An approved call is left to the tools node; a skipped or rejected one gets a
`ToolMessage` written here (the person's comment for a rejection), which the agent's routing
treats as already answered, so the tool never runs. A gated call without a decision does not run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from langchain.agents.middleware.types import AgentMiddleware, AgentState
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from worker.domain.approvals import (
    APPROVE,
    APPROVE_ALL,
    REJECT,
    SKIP,
    Decision,
    GateRules,
    approval_message,
)

INTERRUPT_KIND = "stigmer.approval"
_ACTIONS = frozenset({APPROVE, SKIP, REJECT, APPROVE_ALL})


def resume_value(decisions: Mapping[str, Decision]) -> dict[str, Any]:
    """The `Command(resume=...)` value answering an approval interrupt."""
    return {
        "decisions": {
            call_id: {"action": int(d.action), "comment": d.comment}
            for call_id, d in decisions.items()
        }
    }


def gated_calls(value: Any) -> list[dict[str, Any]]:
    """The calls an interrupt value from this gate waits on (empty for any other interrupt)."""
    if not isinstance(value, Mapping) or value.get("kind") != INTERRUPT_KIND:
        return []
    calls = value.get("calls")
    return [dict(c) for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []


class ApprovalGate(AgentMiddleware[Any, Any, Any]):
    """Interrupts before gated tool calls; see the module docstring."""

    def __init__(self, rules: GateRules, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._rules = rules
        self._redact = redact

    @property
    def name(self) -> str:
        return "StigmerApprovalGate"

    def after_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        messages = state.get("messages") or []
        if not messages or not isinstance(messages[-1], AIMessage):
            return None
        turn = messages[-1]
        gated: list[dict[str, Any]] = []
        for call in turn.tool_calls:
            call_id = call.get("id")
            if not call_id:
                continue
            policy = self._rules.policy_for(call["name"])
            if policy is None:
                continue
            args = dict(call.get("args") or {})
            gated.append(
                {
                    "tool_call_id": call_id,
                    "name": call["name"],
                    "args": args,
                    "message": approval_message(policy, call["name"], args, self._redact),
                }
            )
        if not gated:
            return None
        answer = interrupt({"kind": INTERRUPT_KIND, "calls": gated})
        decisions = answer.get("decisions") if isinstance(answer, Mapping) else None
        decided: Mapping[str, Any] = decisions if isinstance(decisions, Mapping) else {}
        answers: list[ToolMessage] = []
        for request in gated:
            decision = _decision(request["tool_call_id"], decided.get(request["tool_call_id"]))
            if decision.action == APPROVE_ALL:
                self._rules.approved_all.add(request["name"])
            if decision.runs:
                continue
            answers.append(
                ToolMessage(
                    content=decision.tool_result(),
                    name=request["name"],
                    tool_call_id=request["tool_call_id"],
                    status="error" if decision.action == REJECT else "success",
                )
            )
        return {"messages": answers} if answers else None

    async def aafter_model(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        return self.after_model(state, runtime)


def _decision(call_id: str, raw: Any) -> Decision:
    if isinstance(raw, Mapping):
        action = raw.get("action")
        comment = raw.get("comment")
        if isinstance(action, int) and action in _ACTIONS:
            kind = enum_pb2.ApprovalAction.ValueType(action)
            return Decision(call_id, kind, comment if isinstance(comment, str) else "")
    # No decision for this call: it does not run (the runner resumes only when all are in).
    return Decision(call_id, enum_pb2.APPROVAL_ACTION_UNSPECIFIED)


__all__ = ["INTERRUPT_KIND", "ApprovalGate", "gated_calls", "resume_value"]
