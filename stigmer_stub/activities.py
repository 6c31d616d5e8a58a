"""The stub's own (local) activity: recording the workflow's verdict on an execution."""

from __future__ import annotations

from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from temporalio import activity

from stigmer_stub.errors import NotFound
from stigmer_stub.executions import ExecutionOps
from stigmer_stub.logs import get_logger
from stigmer_stub.workflow import FINALIZE_ACTIVITY

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
