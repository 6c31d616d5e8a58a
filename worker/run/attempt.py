"""What a run asks of the attempt that carries it: heartbeats, retries left, the worker's shutdown.

In the worker these are the running Temporal activity's facts
(`worker.activities.runner.temporal_attempt`); tests give fixed answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from worker.domain.fencing import RunAttempt
from worker.run.heartbeat import HeartbeatFn


def _no_timeout() -> float | None:
    return None


def _no(*_: object) -> bool:
    return False


def _unknown() -> RunAttempt | None:
    return None


@dataclass(frozen=True)
class AttemptControls:
    heartbeat: Callable[[], HeartbeatFn]
    """The current attempt's heartbeat function."""
    heartbeat_timeout: Callable[[], float | None] = _no_timeout
    """The attempt's heartbeat timeout in seconds (None: none), which caps the heartbeat period."""
    attempts_left: Callable[[], bool] = _no
    """Whether Temporal retries this attempt after a retryable error."""
    worker_stopping: Callable[[], Awaitable[None]] | None = None
    """Returns when the worker begins to shut down (None: never)."""
    cancelled_by_shutdown: Callable[[], bool] = _no
    """Whether the current cancellation is the worker's own, not the user's."""
    run_attempt: Callable[[], RunAttempt | None] = _unknown
    """The attempt's workflow run and number, sent with every status update so the orchestrator
    can fence stale attempts (None: unknown)."""
