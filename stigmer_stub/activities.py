"""The stub's own (local) activities: recording the workflow's verdict on an execution, and how
long ago the execution last changed (the workflow's stall check)."""

from __future__ import annotations

from datetime import UTC

from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from temporalio import activity

from stigmer_stub.errors import NotFound
from stigmer_stub.executions import ExecutionOps
from stigmer_stub.logs import get_logger
from stigmer_stub.workflow import EVENT_AGE_ACTIVITY, FINALIZE_ACTIVITY

log = get_logger(__name__)


class StubActivities:
    def __init__(self, executions: ExecutionOps) -> None:
        self._executions = executions

    @activity.defn(name=FINALIZE_ACTIVITY)
    async def finalize(self, execution_id: str, status: api_pb2.AgentExecutionStatus) -> None:
        """Merge authoritatively; an execution deleted meanwhile has nothing left to record."""
        try:
            await self._executions.finalize(execution_id, status)
        except NotFound:
            log.warning("finalize_skipped_deleted", execution_id=execution_id)

    @activity.defn(name=EVENT_AGE_ACTIVITY)
    async def seconds_since_last_event(self, execution_id: str) -> float:
        """Seconds since the execution's status last changed (a runner update or ours); 0 for
        an execution deleted meanwhile (nothing to call stalled)."""
        try:
            execution = await self._executions.get(execution_id, field="execution_id")
        except NotFound:
            return 0.0
        audit = execution.status.audit.status_audit
        if not audit.HasField("updated_at"):
            return 0.0
        last = audit.updated_at.ToDatetime(tzinfo=UTC)
        return max(0.0, (self._executions.clock() - last).total_seconds())
