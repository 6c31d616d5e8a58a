"""A workflow that calls one runner activity by name with the payloads a test chooses, and reports
how the attempt ended instead of failing, so a test can read the error Temporal recorded."""

from __future__ import annotations

import json
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api

ATTEMPTS = 3
RAW = "ExecuteGraphton(raw)"
"""ExecuteGraphton with the `texts` as its arguments: payloads of the wrong type."""


@workflow.defn(name="test/reliability/probe")
class Probe:
    @workflow.run
    async def run(
        self, activity: str, execution: execution_api.AgentExecution, texts: list[str], queue: str
    ) -> str:
        args: list[object]
        if activity == "ExecuteGraphton":
            args = [execution, *texts]
        elif activity == RAW:
            activity, args = "ExecuteGraphton", list(texts)
        else:
            args = list(texts)
        try:
            await workflow.execute_activity(
                activity,
                args=args,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(
                    maximum_attempts=ATTEMPTS, initial_interval=timedelta(milliseconds=200)
                ),
            )
        except ActivityError as err:
            cause = err.cause
            return json.dumps(
                {
                    "type": (cause.type or "") if isinstance(cause, ApplicationError) else "",
                    "message": cause.message if isinstance(cause, FailureError) else err.message,
                    "non_retryable": isinstance(cause, ApplicationError) and cause.non_retryable,
                    "retry_state": err.retry_state.name if err.retry_state else "",
                }
            )
        return json.dumps({"type": ""})
