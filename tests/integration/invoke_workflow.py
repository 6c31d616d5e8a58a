"""A test workflow that drives the runner exactly as the orchestrator's invoke workflow does.

It calls the activities by name (the contract), with proto payloads, on the runner's queue; it
lives in its own module so Temporal's workflow sandbox can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue, RetryPolicy

with workflow.unsafe.imports_passed_through():
    from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
    from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as execution_enum

EXECUTION_TYPE = b"ai.stigmer.agentic.agentexecution.v1.AgentExecution"


@workflow.defn(name="test/agent-execution/invoke")
class InvokeForTest:
    @workflow.run
    async def run(
        self, execution: execution_api.AgentExecution, queue: str
    ) -> execution_api.AgentExecutionStatus:
        thread_id: str = await workflow.execute_activity(
            "EnsureThread",
            args=[execution.spec.session_id, execution.spec.agent_id],
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
            result_type=str,
        )
        status: execution_api.AgentExecutionStatus = await workflow.execute_activity(
            "ExecuteGraphton",
            args=[execution, thread_id],
            task_queue=queue,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
            result_type=execution_api.AgentExecutionStatus,
        )
        return status


@workflow.defn(name="test/agent-execution/invoke-by-id")
class InvokeByIdForTest:
    """The later upstream form (contract §7): `ExecuteGraphton(execution_id, thread_id)`, both
    arguments `json/plain` strings; the runner reads the execution from the orchestrator."""

    @workflow.run
    async def run(
        self, execution_id: str, session_id: str, queue: str
    ) -> execution_api.AgentExecutionStatus:
        thread_id: str = await workflow.execute_activity(
            "EnsureThread",
            args=[session_id, ""],
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            result_type=str,
        )
        status: execution_api.AgentExecutionStatus = await workflow.execute_activity(
            "ExecuteGraphton",
            args=[execution_id, thread_id],
            task_queue=queue,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
            result_type=execution_api.AgentExecutionStatus,
        )
        return status


@workflow.defn(name="test/agent-execution/invoke-raw")
class InvokeRawForTest:
    """The January signature with the execution as another SDK's orchestrator (TypeScript, Go)
    writes it: a hand-made `json/protobuf` payload of camelCase ProtoJSON, which may carry fields
    this runner does not know."""

    @workflow.run
    async def run(
        self, execution_json: str, session_id: str, queue: str
    ) -> execution_api.AgentExecutionStatus:
        thread_id: str = await workflow.execute_activity(
            "EnsureThread",
            args=[session_id, ""],
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            result_type=str,
        )
        execution = Payload(
            metadata={"encoding": b"json/protobuf", "messageType": EXECUTION_TYPE},
            data=execution_json.encode(),
        )
        status: execution_api.AgentExecutionStatus = await workflow.execute_activity(
            "ExecuteGraphton",
            args=[RawValue(execution), thread_id],
            task_queue=queue,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
            result_type=execution_api.AgentExecutionStatus,
        )
        return status


@workflow.defn(name="test/agent-execution/invoke-gated")
class InvokeWithGatesForTest:
    """Like `InvokeForTest`, but an attempt that ends WAITING_FOR_APPROVAL waits (no activity
    running) for the test's `decided` signal, then calls ExecuteGraphton again, as the
    orchestrator's workflow does once the decisions are recorded. Returns the last status."""

    def __init__(self) -> None:
        self._signals = 0

    @workflow.signal
    def decided(self) -> None:
        self._signals += 1

    @workflow.run
    async def run(
        self, execution: execution_api.AgentExecution, queue: str
    ) -> execution_api.AgentExecutionStatus:
        thread_id: str = await workflow.execute_activity(
            "EnsureThread",
            args=[execution.spec.session_id, execution.spec.agent_id],
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
            result_type=str,
        )
        gates = 0
        while True:
            status: execution_api.AgentExecutionStatus = await workflow.execute_activity(
                "ExecuteGraphton",
                args=[execution, thread_id],
                task_queue=queue,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
                result_type=execution_api.AgentExecutionStatus,
            )
            if status.phase != execution_enum.EXECUTION_WAITING_FOR_APPROVAL:
                return status
            gates += 1
            await workflow.wait_condition(self._decided_for(gates))

    def _decided_for(self, gates: int) -> Callable[[], bool]:
        return lambda: self._signals >= gates
