"""The Temporal surface of the runner: the three activities the orchestrator's workflow calls.

Names and signatures are the contract (§1): `EnsureThread(session_id, agent_id) -> str`,
`ExecuteGraphton(AgentExecution, thread_id) -> AgentExecutionStatus`, `CleanupSandbox(sandbox_id)`.
Each method unpacks, delegates and translates errors; the work lives in `worker.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from temporalio import activity
from temporalio.exceptions import ApplicationError

from worker.domain.threads import ephemeral_thread_id, thread_id_for_session
from worker.errors import RunnerError
from worker.logs import SECRETS
from worker.ports import SessionStore
from worker.run.attempt import AttemptControls

log = structlog.get_logger(__name__)


class ExecutionService(Protocol):
    async def run(
        self, execution: execution_api.AgentExecution, thread_id: str
    ) -> execution_api.AgentExecutionStatus: ...


class SandboxCleaner(Protocol):
    async def cleanup(self, sandbox_id: str) -> bool: ...


def attempts_left() -> bool:
    """Whether Temporal will retry this activity after a retryable failure of this attempt."""
    info = activity.info()
    policy = info.retry_policy
    if policy is None:
        return False
    return policy.maximum_attempts == 0 or info.attempt < policy.maximum_attempts


def cancelled_by_worker_shutdown() -> bool:
    """Whether this activity is being cancelled because its worker is shutting down (the
    graceful window ran out), not because the workflow asked."""
    details = activity.cancellation_details()
    if details is not None:
        return details.worker_shutdown and not details.cancel_requested
    return activity.is_worker_shutdown()


def activity_heartbeat_timeout() -> float | None:
    """The running activity's heartbeat timeout in seconds, as its workflow set it (None: none)."""
    timeout = activity.info().heartbeat_timeout
    return timeout.total_seconds() if timeout else None


def temporal_attempt() -> AttemptControls:
    """A run's view of the Temporal activity attempt that carries it."""
    return AttemptControls(
        heartbeat=lambda: activity.heartbeat,
        heartbeat_timeout=activity_heartbeat_timeout,
        attempts_left=attempts_left,
        worker_stopping=activity.wait_for_worker_shutdown,
        cancelled_by_shutdown=cancelled_by_worker_shutdown,
    )


def to_application_error(err: RunnerError) -> ApplicationError:
    """A typed Temporal error: `type` is the class name, retryability from the error.

    Raise it `from None`: Temporal stores an exception's whole cause chain (messages and stack
    traces) in the failure, where the raw library errors under a `RunnerError` would put
    unredacted text (a provider's error quoting a key) into the history, and the orchestrator
    would show the innermost, least clear message. The worker's log keeps the chain, redacted.
    A dependency that said when to come back (`Unavailable.retry_after`) sets the next retry's
    delay, so the retry policy's backoff does not hammer it sooner.
    """
    wait = getattr(err, "retry_after", None)
    return ApplicationError(
        SECRETS.redact(str(err)),
        type=type(err).__name__,
        non_retryable=not err.retryable,
        next_retry_delay=timedelta(seconds=wait) if wait else None,
    )


class RunnerActivities:
    def __init__(
        self, sessions: SessionStore, executions: ExecutionService, sandboxes: SandboxCleaner
    ) -> None:
        self._sessions = sessions
        self._executions = executions
        self._sandboxes = sandboxes

    @activity.defn(name="EnsureThread")
    async def ensure_thread(self, session_id: str, agent_id: str) -> str:
        """The session's stable thread, recorded on the session (best effort, idempotent)."""
        if not session_id:
            info = activity.info()
            thread_id = ephemeral_thread_id(info.workflow_id or info.activity_id)
            log.info("thread_ensured", thread_id=thread_id, agent_id=agent_id, ephemeral=True)
            return thread_id
        thread_id = thread_id_for_session(session_id)
        try:
            session = await self._sessions.get_session(session_id)
            if session.spec.thread_id != thread_id:
                session.spec.thread_id = thread_id
                await self._sessions.update_session(session)
            recorded = True
        except RunnerError as err:
            # The thread id is derived, not stored: the run works without the record.
            log.warning("thread_record_failed", session_id=session_id, error=str(err))
            recorded = False
        log.info("thread_ensured", thread_id=thread_id, session_id=session_id, recorded=recorded)
        return thread_id

    @activity.defn(name="ExecuteGraphton")
    async def execute_graphton(
        self, execution: execution_api.AgentExecution, thread_id: str
    ) -> execution_api.AgentExecutionStatus:
        # The run's secrets stay registered until its error has been masked for Temporal.
        with SECRETS.run_scope():
            try:
                return await self._executions.run(execution, thread_id)
            except RunnerError as err:
                raise to_application_error(err) from None

    @activity.defn(name="CleanupSandbox")
    async def cleanup_sandbox(self, sandbox_id: str) -> None:
        if not sandbox_id.strip():
            raise ApplicationError("sandbox_id is empty", type="InvalidInput", non_retryable=True)
        try:
            removed = await self._sandboxes.cleanup(sandbox_id)
        except RunnerError as err:
            raise to_application_error(err) from None
        log.info("sandbox_cleaned", sandbox_id=sandbox_id, removed=removed)

    def all(self) -> list[Callable[..., Any]]:
        return [self.ensure_thread, self.execute_graphton, self.cleanup_sandbox]
