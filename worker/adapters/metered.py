"""A StatusSink that records each `updateStatus` (and `updateStatusDelta`) in the metrics
(sent/failed, latency)."""

from __future__ import annotations

import time

from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io

from worker.domain.status_wire import StatusPayload
from worker.observability.metrics import Metrics
from worker.ports import StatusDeltaSink, StatusSink


class MeteredStatusSink:
    def __init__(self, sink: StatusSink, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        started = time.perf_counter()
        ok = False
        try:
            await self._sink.update_status(execution_id, status)
            ok = True
        finally:
            self._metrics.status_update(ok=ok, seconds=time.perf_counter() - started)

    async def update_status_delta(
        self, execution_id: str, delta: bytes
    ) -> execution_io.StatusDeltaAck | None:
        """The inner sink's `update_status_delta`; None (not served) when it has none. A delta
        the orchestrator did not serve or store is not counted as an update sent."""
        if not hasattr(self._sink, "update_status_delta"):
            return None
        inner: StatusDeltaSink = self._sink  # type: ignore[assignment]
        started = time.perf_counter()
        ack: execution_io.StatusDeltaAck | None = None
        failed = True
        try:
            ack = await inner.update_status_delta(execution_id, delta)
            failed = False
        finally:
            if failed or (ack is not None and (ack.applied or ack.duplicate)):
                self._metrics.status_update(ok=not failed, seconds=time.perf_counter() - started)
        return ack
