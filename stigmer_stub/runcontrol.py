"""Run control (contract §7, docs/run-control.md): approvals, pause, resume, terminate, recover.

Each operation checks the execution's state, records what changed on the stored execution
(under compare-and-swap), then tells the invoke workflow (a signal, a termination, a new run).
The `cancel` RPC lives with the create pipeline in `executions.py`.

The pause marker: before the workflow cancels the attempt for a pause, the execution's metadata
annotation `stigmer.ai/requested-transition` is `pause`, so the runner, cancelled, reports PAUSED
instead of CANCELLED; `resume` removes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from stigmer_stub.errors import FailedPrecondition, InvalidArgument, Unavailable
from stigmer_stub.executions import ExecutionOps, outcome, rfc3339
from stigmer_stub.logs import get_logger
from stigmer_stub.merge import is_terminal
from stigmer_stub.status_wire import split_status

Phase = enum_pb2.ExecutionPhase
ToolStatus = enum_pb2.ToolCallStatus
Action = enum_pb2.ApprovalAction
Execution = api_pb2.AgentExecution

TRANSITION_ANNOTATION = "stigmer.ai/requested-transition"
PAUSE = "pause"
PAUSE_REASON_ANNOTATION = "stigmer.ai/pause-reason"
"""Why the run was paused, when the person said (removed on resume)."""

log = get_logger(__name__)


def anonymous() -> str:
    return "anonymous"


caller_identity: Callable[[], str] = anonymous
"""Who decides an approval (`approved_by`). Point it at the caller's identity once the stub
authenticates callers (API keys); until then every decision is "anonymous"."""


class RunControlWorkflows(Protocol):
    """What run control needs of the invoke workflows (Temporal in production)."""

    async def signal(self, execution_id: str, name: str, *args: object) -> None:
        """Send signal `name`; raises `Unavailable` when the workflow cannot be reached."""

    async def terminate(self, execution_id: str, reason: str) -> None:
        """Terminate the workflow at once; one that does not exist or ended is not an error."""

    async def start(self, execution: Execution) -> None:
        """Start a (new run of the) execution's workflow."""


class RunControl:
    def __init__(
        self,
        executions: ExecutionOps,
        workflows: RunControlWorkflows,
        *,
        wait_seconds: float = 60.0,
        poll_seconds: float = 0.1,
    ) -> None:
        self.executions = executions
        self.workflows = workflows
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds

    # -- approvals ---------------------------------------------------------------------------

    async def submit_approval(
        self,
        execution_id: str,
        tool_call_id: str,
        action: enum_pb2.ApprovalAction.ValueType,
        comment: str = "",
    ) -> Execution:
        """Record a person's decision on a call waiting for approval and tell the workflow.

        APPROVE_ALL also decides the other calls of the same tool still waiting in this
        execution (the person asked not to be asked again for that tool).
        """
        if not execution_id:
            raise InvalidArgument("agent_execution_id", "is required")
        if not tool_call_id:
            raise InvalidArgument("tool_call_id", "is required")
        if action == Action.APPROVAL_ACTION_UNSPECIFIED or action not in Action.values():
            raise InvalidArgument(
                "action", "must be APPROVE, SKIP, REJECT or APPROVE_ALL (not UNSPECIFIED)"
            )
        decided: list[str] = []
        now = rfc3339(self.executions.clock)
        who = caller_identity() or anonymous()

        def decide(execution: Execution) -> Execution:
            decided.clear()
            status = execution.status
            if status.phase != Phase.EXECUTION_WAITING_FOR_APPROVAL:
                raise FailedPrecondition(
                    f"execution {execution_id!r} is not waiting for approval "
                    f"(phase {Phase.Name(status.phase)})"
                )
            call = next((c for c in status.tool_calls if c.id == tool_call_id), None)
            if call is None:
                raise FailedPrecondition(
                    f"execution {execution_id!r} has no tool call {tool_call_id!r}"
                )
            if call.approval_action != Action.APPROVAL_ACTION_UNSPECIFIED:
                raise FailedPrecondition(
                    f"tool call {tool_call_id!r} was already decided: "
                    f"{Action.Name(call.approval_action)} by {call.approved_by or 'anonymous'} "
                    f"at {call.approval_decided_at}"
                )
            if call.status != ToolStatus.TOOL_CALL_WAITING_APPROVAL:
                raise FailedPrecondition(
                    f"tool call {tool_call_id!r} is not waiting for approval "
                    f"(status {ToolStatus.Name(call.status)})"
                )
            targets = [call]
            if action == Action.APPROVAL_ACTION_APPROVE_ALL:
                targets += [
                    c
                    for c in status.tool_calls
                    if c.id != call.id and c.name == call.name and _undecided(c)
                ]
            for target in targets:
                target.approval_action = action
                target.approved_by = who
                target.approval_decided_at = now
                if target is call and comment:
                    # Agreed with the runner: the call has not run, so `result` carries the
                    # comment (for a REJECT, what the model gets as the tool's result).
                    target.result = comment
                decided.append(target.id)
            return execution

        updated = await self.executions.collection.mutate(
            execution_id, decide, field="agent_execution_id"
        )
        log.info(
            "approval_recorded",
            execution_id=execution_id,
            tool_call_ids=decided,
            action=Action.Name(action),
            approved_by=who,
        )
        for call_id in decided:
            await self._signal(execution_id, "approvalGateResolved", call_id)
        return updated

    # -- pause and resume --------------------------------------------------------------------

    async def pause(self, execution_id: str, reason: str = "") -> Execution:
        """Mark the pause on the execution, have the workflow stop the attempt, and return the
        execution once it is PAUSED (or has ended otherwise, or the wait ran out)."""
        current = await self.executions.get(execution_id, field="id")
        phase = current.status.phase
        if phase not in (Phase.EXECUTION_PENDING, Phase.EXECUTION_IN_PROGRESS):
            raise FailedPrecondition(
                f"execution {execution_id!r} cannot be paused in phase {Phase.Name(phase)} "
                "(only a PENDING or IN_PROGRESS run can)"
            )

        def mark(head: Execution) -> None:
            head.metadata.annotations[TRANSITION_ANNOTATION] = PAUSE
            if reason.strip():
                head.metadata.annotations[PAUSE_REASON_ANNOTATION] = reason.strip()

        await self._change_head(execution_id, mark)
        log.info("execution_pause_requested", execution_id=execution_id, reason=reason)
        await self._signal(execution_id, "pause")
        return await self._wait_for(execution_id, lambda p: p == Phase.EXECUTION_PAUSED)

    async def resume(self, execution_id: str) -> Execution:
        """Clear the pause marker and have the workflow run the execution on."""
        current = await self.executions.get(execution_id, field="id")
        if current.status.phase != Phase.EXECUTION_PAUSED:
            raise FailedPrecondition(
                f"execution {execution_id!r} is not paused "
                f"(phase {Phase.Name(current.status.phase)})"
            )

        def unmark(head: Execution) -> None:
            head.metadata.annotations.pop(TRANSITION_ANNOTATION, None)
            head.metadata.annotations.pop(PAUSE_REASON_ANNOTATION, None)

        await self._change_head(execution_id, unmark)
        log.info("execution_resume_requested", execution_id=execution_id)
        await self._signal(execution_id, "resume")
        return await self._wait_for(execution_id, lambda p: p != Phase.EXECUTION_PAUSED)

    # -- terminate and recover ---------------------------------------------------------------

    async def terminate(self, execution_id: str, reason: str = "") -> Execution:
        """Stop the run at once: the workflow is terminated (its attempt loses its heartbeat
        and is cancelled on the runner), the execution ends TERMINATED with the reason."""
        current = await self.executions.get(execution_id, field="id")
        if is_terminal(current.status.phase):
            raise FailedPrecondition(
                f"execution {execution_id!r} has already ended "
                f"({Phase.Name(current.status.phase)}); there is nothing to terminate"
            )
        reason = reason.strip() or "terminated by request"
        log.info("execution_terminate_requested", execution_id=execution_id, reason=reason)
        # The verdict first: the runner, cancelled when its heartbeat finds the workflow gone,
        # reports CANCELLED, which an ended execution no longer takes.
        ended = outcome(Phase.EXECUTION_TERMINATED, f"terminated: {reason}", self.executions.clock)
        terminated = await self.executions.finalize(execution_id, ended)
        try:
            await self.workflows.terminate(execution_id, reason)
        except Unavailable as err:
            log.warning("workflow_terminate_failed", execution_id=execution_id, error=str(err))
        return terminated

    async def recover(self, execution_id: str) -> Execution:
        """Reopen a FAILED execution: a new run of its invoke workflow (same execution id, the
        earlier runs stay in Temporal's history) continues it from the runner's checkpoint."""
        current = await self.executions.get(execution_id, field="id")
        if current.status.phase != Phase.EXECUTION_FAILED:
            raise FailedPrecondition(
                f"execution {execution_id!r} is {Phase.Name(current.status.phase)}; "
                "only a FAILED execution can be recovered"
            )
        previous_error = current.status.error

        def reopen(head: Execution) -> None:
            if head.status.phase != Phase.EXECUTION_FAILED:
                raise FailedPrecondition(
                    f"execution {execution_id!r} changed to "
                    f"{Phase.Name(head.status.phase)} meanwhile"
                )
            head.status.phase = Phase.EXECUTION_PENDING
            head.status.error = ""
            head.status.completed_at = ""
            head.metadata.annotations.pop(TRANSITION_ANNOTATION, None)
            recoveries = int(head.metadata.annotations.get(RECOVERIES_ANNOTATION, "0") or 0)
            head.metadata.annotations[RECOVERIES_ANNOTATION] = str(recoveries + 1)

        await self._change_head(execution_id, reopen, authoritative=True)
        # The workflow input stays small: the execution without its transcript (the runner
        # reads what it needs from its checkpoint and the orchestrator).
        start = Execution()
        start.metadata.CopyFrom(current.metadata)
        start.spec.CopyFrom(current.spec)
        start.status.phase = Phase.EXECUTION_PENDING
        try:
            await self._start_again(start)
        except Unavailable as err:
            error = f"recover: {err} (was: {previous_error})"
            failed = outcome(Phase.EXECUTION_FAILED, error, self.executions.clock)
            await self.executions.finalize(execution_id, failed)
            raise
        log.info("execution_recovered", execution_id=execution_id, previous_error=previous_error)
        return await self.executions.get(execution_id, field="id")

    # -- helpers -----------------------------------------------------------------------------

    async def _start_again(self, execution: Execution, tries: int = 10) -> None:
        """Start the new workflow run; the failed run may take a moment to close after its
        verdict is stored (its id is taken until then), so a refusal is retried a few times."""
        for attempt in range(1, tries + 1):
            try:
                await self.workflows.start(execution)
            except Unavailable:
                if attempt == tries:
                    raise
                await asyncio.sleep(self.poll_seconds * 5)
            else:
                return

    async def _change_head(
        self,
        execution_id: str,
        change: Callable[[Execution], None],
        *,
        authoritative: bool = False,
    ) -> None:
        """Change the execution without its status lists (metadata, phase), under CAS."""

        def guarded(head: Execution) -> None:
            if not authoritative and is_terminal(head.status.phase):
                raise FailedPrecondition(
                    f"execution {execution_id!r} has ended "
                    f"({Phase.Name(head.status.phase)}) meanwhile"
                )
            change(head)

        await self.executions.executions.merge_status(
            execution_id,
            split_status(api_pb2.AgentExecutionStatus()),
            guarded,
            _no_new_entries,
            field="id",
        )

    async def _signal(self, execution_id: str, name: str, *args: object) -> None:
        try:
            await self.workflows.signal(execution_id, name, *args)
        except Unavailable as err:
            log.warning("workflow_signal_failed", execution_id=execution_id, signal=name)
            raise Unavailable(
                f"recorded on the execution, but its workflow could not be told ({name}): {err}"
            ) from err

    async def _wait_for(
        self, execution_id: str, reached: Callable[[enum_pb2.ExecutionPhase.ValueType], bool]
    ) -> Execution:
        """The execution once its phase satisfies `reached` or is terminal; bounded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while True:
            current = await self.executions.get(execution_id, field="id")
            phase = current.status.phase
            if reached(phase) or is_terminal(phase) or loop.time() > deadline:
                return current
            await asyncio.sleep(self.poll_seconds)


RECOVERIES_ANNOTATION = "stigmer.ai/recoveries"
"""How many times the execution was recovered (each recovery is a new workflow run)."""


def _undecided(call: api_pb2.ToolCall) -> bool:
    return (
        call.status == ToolStatus.TOOL_CALL_WAITING_APPROVAL
        and call.approval_action == Action.APPROVAL_ACTION_UNSPECIFIED
    )


def pending_calls(execution: Execution) -> Iterable[api_pb2.ToolCall]:
    """The execution's calls waiting for a decision."""
    return (c for c in execution.status.tool_calls if _undecided(c))


def _no_new_entries(name: str, index: int, encoded: bytes) -> None:
    raise AssertionError("a head-only change carries no list entries")  # pragma: no cover
