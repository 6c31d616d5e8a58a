"""A StatusSink that records each `updateStatus` in the metrics (sent/failed, latency)."""

from __future__ import annotations

import time

from worker.domain.status_wire import StatusPayload
from worker.observability.metrics import Metrics
from worker.ports import StatusSink


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
