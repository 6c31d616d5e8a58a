"""Temporal adapters: the client connection and the `Workflows` port of the executions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from stigmer_stub.codec import with_codec
from stigmer_stub.converter import DATA_CONVERTER
from stigmer_stub.errors import Unavailable
from stigmer_stub.logs import get_logger
from stigmer_stub.settings import TemporalSettings, WorkflowSettings
from stigmer_stub.workflow import (
    MEMO_ACTIVITY_TASK_QUEUE,
    QUERY_PENDING_APPROVALS,
    WORKFLOW_TYPE,
    CleanupSessionSandbox,
    InvokeAgentExecution,
    InvokeOptions,
    PendingApproval,
    cleanup_workflow_id,
    workflow_id,
)

RPC_TIMEOUT = timedelta(seconds=10)

log = get_logger(__name__)


async def connect(settings: TemporalSettings) -> Client:
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        data_converter=with_codec(DATA_CONVERTER, settings.payload_key()),
    )


def invoke_options(settings: WorkflowSettings) -> InvokeOptions:
    return InvokeOptions(
        ensure_thread_timeout_seconds=settings.ensure_thread_timeout_seconds,
        ensure_thread_attempts=settings.ensure_thread_attempts,
        execute_timeout_seconds=settings.execute_timeout_seconds,
        execute_heartbeat_seconds=settings.execute_heartbeat_seconds,
        execute_schedule_to_start_seconds=settings.execute_schedule_to_start_seconds,
        execute_attempts=settings.execute_attempts,
        lost_worker_reinvokes=settings.lost_worker_reinvokes,
        lost_worker_backoff_seconds=settings.lost_worker_backoff_seconds,
        stall_seconds=settings.stall_seconds,
    )


class TemporalWorkflows:
    """Starts and cancels `stigmer/agent-execution/invoke` workflows."""

    def __init__(
        self, client: Client, settings: TemporalSettings, workflow_settings: WorkflowSettings
    ) -> None:
        self._client = client
        self._settings = settings
        self._options = invoke_options(workflow_settings)
        run_timeout = workflow_settings.run_timeout_seconds
        self._run_timeout = timedelta(seconds=run_timeout) if run_timeout else None

    async def start(self, execution: api_pb2.AgentExecution) -> None:
        wf_id = workflow_id(execution.metadata.id)
        try:
            await self._client.start_workflow(
                InvokeAgentExecution.run,
                args=[execution, self._options],
                id=wf_id,
                task_queue=self._settings.workflow_task_queue,
                memo={MEMO_ACTIVITY_TASK_QUEUE: self._settings.runner_task_queue},
                run_timeout=self._run_timeout,
                rpc_timeout=RPC_TIMEOUT,
            )
        except (RPCError, WorkflowAlreadyStartedError) as err:
            raise Unavailable(f"{WORKFLOW_TYPE} {wf_id}: {err}") from err
        log.info(
            "workflow_started",
            workflow_id=wf_id,
            task_queue=self._settings.workflow_task_queue,
            activity_task_queue=self._settings.runner_task_queue,
        )

    async def cleanup_sandbox(self, session_id: str, sandbox_id: str) -> None:
        """Start the cleanup of a deleted session's sandbox on the runner's queue."""
        wf_id = cleanup_workflow_id(session_id)
        try:
            await self._client.start_workflow(
                CleanupSessionSandbox.run,
                args=[sandbox_id, self._settings.runner_task_queue],
                id=wf_id,
                task_queue=self._settings.workflow_task_queue,
                rpc_timeout=RPC_TIMEOUT,
            )
        except (RPCError, WorkflowAlreadyStartedError) as err:
            raise Unavailable(f"{wf_id}: {err}") from err
        log.info("sandbox_cleanup_started", workflow_id=wf_id, sandbox_id=sandbox_id)

    async def cancel(self, execution_id: str) -> None:
        handle = self._client.get_workflow_handle(workflow_id(execution_id))
        try:
            await handle.cancel(rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return  # never started, or already ended
            raise Unavailable(f"cancel {handle.id}: {err}") from err
        try:
            async with asyncio.timeout(self._settings.cancel_wait_seconds):
                await handle.result()
        except WorkflowFailureError:
            pass  # ended cancelled or failed: either way it has ended
        except TimeoutError:
            log.warning("workflow_cancel_wait_timed_out", workflow_id=handle.id)
        except RPCError as err:
            raise Unavailable(f"wait for {handle.id}: {err}") from err

    async def signal(self, execution_id: str, name: str, *args: object) -> None:
        handle = self._client.get_workflow_handle(workflow_id(execution_id))
        try:
            await handle.signal(name, args=list(args), rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise Unavailable(f"{handle.id} is not running") from err
            raise Unavailable(f"signal {name} to {handle.id}: {err}") from err
        log.info("workflow_signalled", workflow_id=handle.id, signal=name)

    async def terminate(self, execution_id: str, reason: str) -> None:
        handle = self._client.get_workflow_handle(workflow_id(execution_id))
        try:
            await handle.terminate(reason=reason, rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return  # never started, or already ended
            raise Unavailable(f"terminate {handle.id}: {err}") from err
        log.info("workflow_terminated", workflow_id=handle.id)

    async def pending_approvals(self, execution_id: str) -> list[PendingApproval]:
        """The workflow's `pendingApprovals` query (what the Temporal UI shows too)."""
        handle = self._client.get_workflow_handle(workflow_id(execution_id))
        try:
            result: list[PendingApproval] = await handle.query(
                QUERY_PENDING_APPROVALS, result_type=list[PendingApproval], rpc_timeout=RPC_TIMEOUT
            )
        except RPCError as err:
            raise Unavailable(f"query {handle.id}: {err}") from err
        return result
