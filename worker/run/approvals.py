"""Run control for one run: its approval gates, the recorded decisions, and pause.

Gates: an agent with `tool_approvals` (and an execution without `auto_approve_all`) runs with the
approval gate (`worker.agent.approval_gate`). Each attempt reads the execution as the
orchestrator stores it now (`get`; the one the workflow passed is from create time) for the
decisions made since the last attempt and the tools approved for the rest of the run. An agent
without policies is never gated and nothing here asks the orchestrator anything.

Compatibility: whether the orchestrator serves §7 is probed once per process. Without it a run
may still have gates, but the first gated call fails the run closed (`ApprovalsUnsupported`,
non-retryable) before any §7 value reaches the orchestrator.

Pause: the orchestrator records a requested pause on the execution before it cancels the attempt
(the annotation `stigmer.ai/requested-transition` = `pause`, docs/run-control.md); a cancelled
run asks, and reports PAUSED instead of CANCELLED.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api

from worker.domain.approvals import Decision, GateRules, policies_of, recorded_approvals
from worker.domain.status_builder import StatusBuilder
from worker.errors import ConfigurationError, RunnerError
from worker.ports import RunControl

log = structlog.get_logger(__name__)

TRANSITION_ANNOTATION = "stigmer.ai/requested-transition"
PAUSE = "pause"


class ApprovalsUnsupported(ConfigurationError):
    """A gated tool was called, but the orchestrator cannot record a person's decision."""


UNSUPPORTED_MESSAGE = (
    "tool {tool!r} requires approval, but the orchestrator cannot approve tools (it does not "
    "serve the run-control RPCs of contract §7); the call was not run"
)


@dataclass
class Approvals:
    """One run's gates: the rules the gate applies and the decisions to resume with."""

    rules: GateRules
    supported: bool
    decisions: Mapping[str, Decision] = field(default_factory=dict)


async def prepare_approvals(
    run_control: RunControl | None,
    execution: execution_api.AgentExecution,
    agent: agent_api.Agent,
    builder: StatusBuilder,
) -> Approvals | None:
    """The run's gates, or None when nothing is gated (no policy, or `auto_approve_all`).

    The approvals recorded so far are put on the builder, so a resumed run's transcript keeps
    them; tools approved with APPROVE_ALL are not gated again.
    """
    policies = policies_of(agent)
    if not policies:
        return None
    if execution.spec.auto_approve_all:
        log.info("approval_gates_waived", policies=len(policies))
        return None
    supported = run_control is not None and await run_control.supports_run_control()
    rules = GateRules(policies)
    if not supported or run_control is None:
        log.warning("approval_gates_unsupported", policies=len(policies))
        return Approvals(rules, supported=False)
    stored = await run_control.get_execution(execution.metadata.id)
    recorded = recorded_approvals(stored)
    for gate in recorded.gates.values():
        decision = recorded.decisions.get(gate.tool_call_id)
        builder.seed_approval(
            gate.tool_call_id,
            message=gate.message,
            requested_at=gate.requested_at,
            action=decision.action if decision else 0,
            approved_by=decision.approved_by if decision else "",
            decided_at=decision.decided_at if decision else "",
            sub_agent_id=gate.sub_agent_id,
        )
    rules.approved_all.update(recorded.approved_all)
    log.info(
        "approval_gates_on",
        policies=len(policies),
        decided=len(recorded.decisions),
        waiting=len(recorded.pending()),
        approved_for_run=sorted(recorded.approved_all),
    )
    return Approvals(rules, supported=True, decisions=dict(recorded.decisions))


async def pause_requested(run_control: RunControl | None, execution_id: str) -> bool:
    """Whether the orchestrator asked for a pause (a cancel otherwise). Best effort: when it
    cannot be asked, the cancellation counts as a cancel."""
    if run_control is None:
        return False
    try:
        # A January orchestrator never pauses: no §7 phase is sent to it whatever it stores.
        if not await run_control.supports_run_control():
            return False
        stored = await run_control.get_execution(execution_id)
    except RunnerError as err:
        log.warning("pause_check_failed", error=str(err))
        return False
    return stored.metadata.annotations.get(TRANSITION_ANNOTATION, "") == PAUSE
