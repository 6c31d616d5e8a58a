"""The `stigmer/agent-execution/invoke` workflow, hosted by the stub on its own task queue.

It does what the Go orchestrator's workflow does: `EnsureThread`, then `ExecuteGraphton` on the
runner's task queue named in the memo (`activityTaskQueue`, default `execution`). The runner
pushes progress itself through `updateStatus`; the workflow records only how the run ended,
through a local activity that merges the outcome of the runner's returned status (phase, error,
started and completed times) and never its lists: the transcript is the one the runner pushed.
The returned status may be slim (no lists, above the runner's result bound) or whole (an older
runner, or a small run); both record the same outcome.

Run control (contract §7, docs/run-control.md) makes `ExecuteGraphton` a loop of attempts:

- an attempt that returns `EXECUTION_WAITING_FOR_APPROVAL` stopped at a gate: the workflow runs
  nothing until every waiting call is decided (signal `approvalGateResolved`, one per call),
  then calls `ExecuteGraphton` again (the runner resumes from its checkpoint). The query
  `pendingApprovals` lists the calls still waiting;
- the signal `pause` cancels the running attempt (the stub recorded the pause on the execution
  first, so the runner reports PAUSED); the workflow records PAUSED and waits, with no activity
  running, for the signal `resume`;
- an attempt lost to a heartbeat timeout (a dead worker) is invoked again, a bounded number of
  times with a growing delay, so a run survives a lost worker under a 1-attempt policy;
- an attempt whose execution received no status update for `stall_seconds` is cancelled and the
  run ends FAILED "stalled: no events for N s" (the age is read by a local activity).

Deterministic code only: no I/O, no clocks but `workflow.now()`, imports limited to temporalio,
the standard library and the generated protos.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    TimeoutType,
    is_cancelled_exception,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

WORKFLOW_TYPE = "stigmer/agent-execution/invoke"
FINALIZE_ACTIVITY = "StubFinalizeExecution"
EVENT_AGE_ACTIVITY = "StubSecondsSinceLastEvent"
MEMO_ACTIVITY_TASK_QUEUE = "activityTaskQueue"
DEFAULT_ACTIVITY_TASK_QUEUE = "execution"

SIGNAL_APPROVAL = "approvalGateResolved"
SIGNAL_PAUSE = "pause"
SIGNAL_RESUME = "resume"
QUERY_PENDING_APPROVALS = "pendingApprovals"

Phase = enum_pb2.ExecutionPhase
ToolStatus = enum_pb2.ToolCallStatus
_TERMINAL = (
    Phase.EXECUTION_COMPLETED,
    Phase.EXECUTION_FAILED,
    Phase.EXECUTION_CANCELLED,
    Phase.EXECUTION_TERMINATED,
)


def workflow_id(execution_id: str) -> str:
    return f"{WORKFLOW_TYPE}/{execution_id}"


@dataclass(frozen=True)
class InvokeOptions:
    """Activity options; defaults are the Go orchestrator's, except ExecuteGraphton's attempts."""

    ensure_thread_timeout_seconds: float = 30.0
    ensure_thread_attempts: int = 3
    execute_timeout_seconds: float = 600.0
    execute_heartbeat_seconds: float = 30.0
    execute_schedule_to_start_seconds: float = 60.0
    execute_attempts: int = 3
    lost_worker_reinvokes: int = 3
    """How many times an attempt lost to a heartbeat timeout is invoked again."""
    lost_worker_backoff_seconds: float = 5.0
    """The delay before the first re-invocation; it doubles for each one after."""
    stall_seconds: float = 0.0
    """A run with no status update for this long ends FAILED (0: never)."""


@dataclass(frozen=True)
class PendingApproval:
    """A gated call waiting for a decision, as the `pendingApprovals` query lists it."""

    tool_call_id: str
    tool: str
    message: str
    requested_at: str


class Stalled(Exception):
    """The run produced no status update for the configured time."""


def describe_failure(err: BaseException) -> str:
    """`<activity>: <innermost message>`, e.g. `ExecuteGraphton: model refused the request`."""
    prefix = f"{err.activity_type}: " if isinstance(err, ActivityError) else ""
    inner: BaseException = err
    while isinstance(inner, FailureError) and inner.cause is not None:
        inner = inner.cause
    text = inner.message if isinstance(inner, FailureError) else str(inner)
    return prefix + (text or type(inner).__name__)


def outcome_of(status: api_pb2.AgentExecutionStatus) -> api_pb2.AgentExecutionStatus:
    """How a returned status says the run ended, without its lists (never merged)."""
    return api_pb2.AgentExecutionStatus(
        phase=status.phase,
        error=status.error,
        started_at=status.started_at,
        completed_at=status.completed_at,
    )


def _lost_worker(err: BaseException) -> bool:
    """An attempt that ended because its worker stopped heartbeating."""
    return (
        isinstance(err, ActivityError)
        and isinstance(err.cause, ActivityTimeout)
        and err.cause.type == TimeoutType.HEARTBEAT
    )


@workflow.defn(name=WORKFLOW_TYPE)
class InvokeAgentExecution:
    def __init__(self) -> None:
        self._waiting: dict[str, PendingApproval] = {}
        self._decided: set[str] = set()
        self._pause_requested = False
        self._resume_requested = False
        self._attempt: workflow.ActivityHandle[api_pb2.AgentExecutionStatus] | None = None

    @workflow.signal(name=SIGNAL_APPROVAL)
    def approval_gate_resolved(self, tool_call_id: str) -> None:
        """A decision on `tool_call_id` is recorded on the execution."""
        self._decided.add(tool_call_id)

    @workflow.signal(name=SIGNAL_PAUSE)
    def pause(self) -> None:
        """Stop the running attempt (the runner stops at a safe point and reports PAUSED)."""
        self._pause_requested = True
        self._resume_requested = False
        if self._attempt is not None and not self._attempt.done():
            self._attempt.cancel()

    @workflow.signal(name=SIGNAL_RESUME)
    def resume(self) -> None:
        self._resume_requested = True

    @workflow.query(name=QUERY_PENDING_APPROVALS)
    def pending_approvals(self) -> list[PendingApproval]:
        return [p for i, p in self._waiting.items() if i not in self._decided]

    @workflow.run
    async def run(
        self, execution: api_pb2.AgentExecution, options: InvokeOptions | None = None
    ) -> None:
        opts = options or InvokeOptions()
        execution_id = execution.metadata.id
        queue = workflow.memo_value(
            MEMO_ACTIVITY_TASK_QUEUE, DEFAULT_ACTIVITY_TASK_QUEUE, type_hint=str
        )
        try:
            thread_id = await workflow.execute_activity(
                "EnsureThread",
                args=[execution.spec.session_id, execution.spec.agent_id],
                task_queue=queue,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=opts.ensure_thread_timeout_seconds),
                retry_policy=RetryPolicy(maximum_attempts=opts.ensure_thread_attempts),
            )
            status = await self._execute(execution, thread_id, queue, opts)
        except Stalled as err:
            raise ApplicationError(str(err), type="Stalled", non_retryable=True) from None
        except (asyncio.CancelledError, Exception) as err:
            if is_cancelled_exception(err):
                await self._finalize(execution_id, Phase.EXECUTION_CANCELLED, "")
            else:
                await self._finalize(execution_id, Phase.EXECUTION_FAILED, describe_failure(err))
            raise
        final = outcome_of(status)
        if final.phase not in _TERMINAL:
            # The activity returned, so the run is over whatever phase the runner last reported.
            final.phase = Phase.EXECUTION_COMPLETED
        if not final.completed_at:
            final.completed_at = _rfc3339()
        await self._apply(execution_id, final)

    async def _execute(
        self, execution: api_pb2.AgentExecution, thread_id: str, queue: str, opts: InvokeOptions
    ) -> api_pb2.AgentExecutionStatus:
        """`ExecuteGraphton` until an attempt ends the run (a gate, a pause, a lost worker start
        another); returns the last attempt's status."""
        execution_id = execution.metadata.id
        lost = 0
        while True:
            if self._pause_requested:
                await self._hold_paused(execution_id)
            handle = workflow.start_activity(
                "ExecuteGraphton",
                args=[execution, thread_id],
                task_queue=queue,
                result_type=api_pb2.AgentExecutionStatus,
                start_to_close_timeout=timedelta(seconds=opts.execute_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=opts.execute_heartbeat_seconds),
                schedule_to_start_timeout=timedelta(seconds=opts.execute_schedule_to_start_seconds),
                retry_policy=RetryPolicy(maximum_attempts=opts.execute_attempts),
                # Wait for the runner to acknowledge, so its last status lands before ours.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self._attempt = handle
            try:
                if opts.stall_seconds > 0:
                    await self._watch_for_stall(execution_id, handle, opts.stall_seconds)
                status: api_pb2.AgentExecutionStatus = await handle
            except (asyncio.CancelledError, Exception) as err:
                if not handle.done():
                    # The workflow itself was cancelled while it watched the attempt.
                    handle.cancel()
                    await workflow.wait([handle])
                if self._pause_requested and is_cancelled_exception(err):
                    continue  # cancelled for a pause: hold at the top of the loop
                if _lost_worker(err) and lost < opts.lost_worker_reinvokes:
                    lost += 1
                    delay = opts.lost_worker_backoff_seconds * 2 ** (lost - 1)
                    workflow.logger.warning(
                        "ExecuteGraphton lost its worker; invoking it again (%d of %d) in %gs",
                        lost,
                        opts.lost_worker_reinvokes,
                        delay,
                    )
                    await workflow.sleep(delay)
                    continue
                raise
            finally:
                self._attempt = None
            if status.phase != Phase.EXECUTION_WAITING_FOR_APPROVAL:
                return status
            lost = 0  # the attempt ended well: the next one may lose its worker again
            await self._await_decisions(status)

    async def _await_decisions(self, status: api_pb2.AgentExecutionStatus) -> None:
        """Nothing runs until every call the attempt left waiting is decided."""
        self._waiting = {
            call.id: PendingApproval(
                call.id, call.name, call.approval_message, call.approval_requested_at
            )
            for call in status.tool_calls
            if call.status == ToolStatus.TOOL_CALL_WAITING_APPROVAL
        }
        await workflow.wait_condition(lambda: set(self._waiting) <= self._decided)
        self._waiting = {}

    async def _hold_paused(self, execution_id: str) -> None:
        """PAUSED with no activity running, until `resume`."""
        await self._apply(execution_id, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_PAUSED))
        await workflow.wait_condition(lambda: self._resume_requested)
        self._pause_requested = self._resume_requested = False
        await self._apply(
            execution_id, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
        )

    async def _watch_for_stall(
        self,
        execution_id: str,
        handle: workflow.ActivityHandle[api_pb2.AgentExecutionStatus],
        limit: float,
    ) -> None:
        """Return when the attempt is done; raise `Stalled` (the attempt cancelled) when the
        execution got no status update for `limit` seconds while this attempt ran (a run that
        waited days at a gate or paused is not stale when its next attempt starts)."""
        check = max(1.0, min(limit / 4, 30.0))
        began = workflow.now()
        while not handle.done():
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(handle.done, timeout=check)
            if handle.done():
                return
            age = await workflow.execute_local_activity(
                EVENT_AGE_ACTIVITY,
                execution_id,
                result_type=float,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
            running_for = (workflow.now() - began).total_seconds()
            if min(age, running_for) >= limit:
                # The verdict first, so the runner's CANCELLED (it is cancelled next) cannot
                # land before it: an ended execution keeps its outcome.
                stalled = Stalled(f"stalled: no events for {limit:g} s")
                await self._finalize(execution_id, Phase.EXECUTION_FAILED, str(stalled))
                handle.cancel()
                await workflow.wait([handle])
                raise stalled

    async def _finalize(self, execution_id: str, phase: Phase.ValueType, error: str) -> None:
        outcome = api_pb2.AgentExecutionStatus(phase=phase, error=error, completed_at=_rfc3339())
        await self._apply(execution_id, outcome)

    async def _apply(self, execution_id: str, status: api_pb2.AgentExecutionStatus) -> None:
        await workflow.execute_local_activity(
            FINALIZE_ACTIVITY,
            args=[execution_id, status],
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=10),
        )


def _rfc3339() -> str:
    return workflow.now().isoformat().replace("+00:00", "Z")


CLEANUP_WORKFLOW_TYPE = "stigmer/session/cleanup-sandbox"


def cleanup_workflow_id(session_id: str) -> str:
    return f"{CLEANUP_WORKFLOW_TYPE}/{session_id}"


@workflow.defn(name=CLEANUP_WORKFLOW_TYPE)
class CleanupSessionSandbox:
    """Remove a deleted session's sandbox through the runner's `CleanupSandbox` activity.

    The runner may be busy or down when the session is deleted, so the activity is retried for
    a while; an id it refuses (`InvalidInput`) is not retried.
    """

    @workflow.run
    async def run(self, sandbox_id: str, activity_task_queue: str) -> None:
        await workflow.execute_activity(
            "CleanupSandbox",
            sandbox_id,
            task_queue=activity_task_queue,
            start_to_close_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(
                maximum_attempts=20, non_retryable_error_types=["InvalidInput"]
            ),
        )
