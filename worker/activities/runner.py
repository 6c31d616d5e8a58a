"""The Temporal surface of the runner: the three activities the orchestrator's workflow calls.

Names and signatures are the contract (§1): `EnsureThread(session_id, agent_id) -> str`,
`ExecuteGraphton(AgentExecution, thread_id) -> AgentExecutionStatus`, `CleanupSandbox(sandbox_id)`.
`ExecuteGraphton` also takes the later upstream form (§7), `ExecuteGraphton(execution_id,
thread_id)`: a `json/plain` string first argument is an execution id, read from the orchestrator.
Its result is bounded (`worker.activities.result`). Each method unpacks, delegates and translates
errors; the work lives in `worker.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from temporalio import activity
from temporalio.exceptions import ApplicationError

from worker.activities.result import bounded_result
from worker.domain.fencing import RunAttempt
from worker.domain.status_wire import StatusPayload
from worker.domain.threads import ephemeral_thread_id, thread_id_for_session
from worker.errors import InvalidInput, RunnerError
from worker.logs import SECRETS
from worker.ports import ExecutionSource, SessionStore
from worker.run.attempt import AttemptControls

log = structlog.get_logger(__name__)


class ExecutionService(Protocol):
    async def run(self, execution: execution_api.AgentExecution, thread_id: str) -> StatusPayload:
        """The run's final status: a proto, or its entries' encodings (never parsed whole)."""
        ...


class SandboxCleaner(Protocol):
    async def cleanup(self, sandbox_id: str) -> bool: ...


def attempts_left() -> bool:
    """Whether Temporal will retry this activity after a retryable failure of this attempt."""
    info = activity.info()
    policy = info.retry_policy
    if policy is None:
        return False
    return policy.maximum_attempts == 0 or info.attempt < policy.maximum_attempts


def current_attempt() -> RunAttempt | None:
    """The running activity attempt: its workflow run and activity, and its attempt number (1 on
    the first try).

    Attempt numbers grow within a workflow run; a new run of the same workflow starts over, so
    the orchestrator orders attempts within one run id (`worker.domain.fencing`)."""
    info = activity.info()
    if not info.workflow_run_id:
        return None  # an activity started on its own, outside any workflow
    # The activity id is part of the run's key: a workflow that invokes ExecuteGraphton again
    # (after an approval gate, or a worker lost to a heartbeat timeout) starts a new activity
    # whose attempts count from 1 again; the orchestrator orders such keys by first write, so
    # a presumed-dead worker of the earlier activity is refused once its replacement has written.
    return RunAttempt(run_id=f"{info.workflow_run_id}:{info.activity_id}", number=info.attempt)


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
        run_attempt=current_attempt,
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
    message = SECRETS.redact(str(err))
    if len(message) > FAILURE_MESSAGE_MAX_CHARS:
        # A failure is stored in the workflow history; an error quoting a huge tool output must
        # not make it the next thing over Temporal's size limits.
        message = (
            message[:FAILURE_MESSAGE_MAX_CHARS] + f"… [{len(message)} characters in all; the "
            "worker's log has the whole error]"
        )
    wait = getattr(err, "retry_after", None)
    return ApplicationError(
        message,
        type=type(err).__name__,
        non_retryable=not err.retryable,
        next_retry_delay=timedelta(seconds=wait) if wait else None,
    )


FAILURE_MESSAGE_MAX_CHARS = 16 * 1024
"""The longest failure message an activity reports to Temporal."""


class RunnerActivities:
    def __init__(
        self,
        sessions: SessionStore,
        executions: ExecutionService,
        sandboxes: SandboxCleaner,
        *,
        source: ExecutionSource | None = None,
        result_max_bytes: int = 256 * 1024,
    ) -> None:
        """`source` reads an execution by id (the later upstream signature); `result_max_bytes`
        bounds the ExecuteGraphton result (`STIGMER_RESULT_MAX_BYTES`)."""
        self._sessions = sessions
        self._executions = executions
        self._sandboxes = sandboxes
        self._source = source
        self._result_max_bytes = result_max_bytes

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
        self, execution: execution_api.AgentExecution | str, thread_id: str
    ) -> execution_api.AgentExecutionStatus:
        # The run's secrets stay registered until its error has been masked for Temporal.
        with SECRETS.run_scope():
            try:
                if isinstance(execution, str):
                    execution = await self._fetch(execution)
                status = await self._executions.run(execution, thread_id)
                return bounded_result(status, self._result_max_bytes)
            except RunnerError as err:
                raise to_application_error(err) from None

    async def _fetch(self, execution_id: str) -> execution_api.AgentExecution:
        """The execution named by the later upstream signature, as the orchestrator stores it."""
        execution_id = execution_id.strip()
        if not execution_id:
            raise InvalidInput("ExecuteGraphton: the execution id is empty")
        if self._source is None:
            raise InvalidInput("ExecuteGraphton got an execution id; this runner reads none")
        execution = await self._source.get_execution(execution_id)
        log.info("execution_fetched", execution_id=execution_id)
        return execution

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
