"""Heartbeats on a timer, for the whole life of an activity, carrying the run's `Progress`.

Temporal only delivers cancellation to an activity that heartbeats, and the orchestrator's
heartbeat timeout is 30 s. A per-event heartbeat would go silent during a long model call or
tool run; a timer does not. The details carry progress, so the Temporal UI shows where a run is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

HeartbeatFn = Callable[..., None]
ProgressFn = Callable[[], Mapping[str, Any]]

# Beats per heartbeat timeout at least: one late beat (a busy loop, a slow Temporal server)
# must not make the server time the attempt out.
BEATS_PER_TIMEOUT = 3


@dataclass
class Progress:
    """What the heartbeat reports; updated in place by the run."""

    execution_id: str
    stage: str = "starting"
    events: int = 0
    messages: int = 0
    tool_calls: int = 0
    status_updates: int = 0
    started_monotonic: float = 0.0
    updates_sent: Callable[[], int] | None = field(default=None, repr=False)
    """Where `status_updates` comes from: the run's publisher, counting updates that landed."""

    def as_details(self) -> Mapping[str, Any]:
        if self.updates_sent is not None:
            self.status_updates = self.updates_sent()
        return {
            "execution_id": self.execution_id,
            "stage": self.stage,
            "events": self.events,
            "messages": self.messages,
            "tool_calls": self.tool_calls,
            "status_updates": self.status_updates,
            "elapsed_s": round(time.monotonic() - self.started_monotonic, 1),
        }


def beat_interval(configured: float, heartbeat_timeout: float | None) -> float:
    """The period to beat at: the configured one, shortened to a third of the activity's
    heartbeat timeout when the workflow set a timeout that short (None or 0: no timeout)."""
    if heartbeat_timeout is None or heartbeat_timeout <= 0:
        return configured
    return min(configured, heartbeat_timeout / BEATS_PER_TIMEOUT)


async def _beat(send: HeartbeatFn, progress: ProgressFn, interval: float) -> None:
    while True:
        try:
            send(dict(progress()))
        except Exception as err:  # a heartbeat must never kill the run it reports on
            log.warning("heartbeat_failed", error=str(err))
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def heartbeating(
    send: HeartbeatFn, progress: ProgressFn, *, interval: float
) -> AsyncIterator[None]:
    """Heartbeat `progress()` every `interval` seconds (and once at once) while the block runs."""
    task = asyncio.create_task(_beat(send, progress, interval), name="heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
