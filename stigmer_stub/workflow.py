"""The `stigmer/agent-execution/invoke` workflow, hosted by the stub on its own task queue.

It does what the Go orchestrator's workflow does: `EnsureThread`, then `ExecuteGraphton` on the
runner's task queue named in the memo (`activityTaskQueue`, default `execution`). The runner
pushes progress itself through `updateStatus`; the workflow records only how the run ended,
through a local activity that merges the outcome of the runner's returned status (phase, error,
started and completed times) and never its lists: the transcript is the one the runner pushed.
The returned status may be slim (no lists, above the runner's result bound) or whole (an older
runner, or a small run); both record the same outcome.

Deterministic code only: no I/O, no clocks but `workflow.now()`, imports limited to temporalio,
the standard library and the generated protos.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

WORKFLOW_TYPE = "stigmer/agent-execution/invoke"
FINALIZE_ACTIVITY = "StubFinalizeExecution"
MEMO_ACTIVITY_TASK_QUEUE = "activityTaskQueue"
DEFAULT_ACTIVITY_TASK_QUEUE = "execution"

Phase = enum_pb2.ExecutionPhase
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


@workflow.defn(name=WORKFLOW_TYPE)
class InvokeAgentExecution:
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
            status = await workflow.execute_activity(
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
