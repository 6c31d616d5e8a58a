"""When to push the execution's status to the orchestrator.

Pushing on every agent event turns each token into a database write; pushing every N events (what
upstream did) leaves a slow run looking frozen and hides a tool start until nine more events
arrive. The policy here flushes pending changes when any of these holds:

- `events_per_update` changes have accumulated since the last flush;
- `interval_ms` has passed since the last flush and something is pending (so a lone change is
  never older than the interval when it reaches the orchestrator, and a quiet run is not polled);
- a significant change arrived (phase, tool start or end, todo, sub-agent, error): at once.

The first and last rules are held to `min_gap_ms` after the previous flush: a burst of tool
starts and ends (each one significant) becomes one call instead of one per change, which keeps
the call count under "every N events" while a change still waits at most the gap.

The policy only decides. It does no I/O and owns no timer: the caller asks `due()` after each
change and sleeps until `deadline()` otherwise. The clock is injected so tests control time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Monotonic seconds, like `time.monotonic`."""


class UpdatePolicy:
    """Tracks changes since the last flush and says when the next flush is due."""

    def __init__(
        self,
        *,
        events_per_update: int = 10,
        interval_ms: int = 200,
        min_gap_ms: int = 50,
        clock: Clock = time.monotonic,
    ) -> None:
        if events_per_update < 1:
            raise ValueError("events_per_update must be at least 1")
        if interval_ms < 0:
            raise ValueError("interval_ms must not be negative")
        self._every = events_per_update
        self._interval = interval_ms / 1000.0
        if min_gap_ms < 0:
            raise ValueError("min_gap_ms must not be negative")
        self._min_gap = min(min_gap_ms, interval_ms) / 1000.0
        self._clock = clock
        self._pending = 0
        self._significant = False
        # The interval counts from the last flush, so the very first change is not held back.
        self._last_flush = clock() - self._interval

    @property
    def pending(self) -> int:
        """Changes recorded since the last flush."""
        return self._pending

    def record(self, *, significant: bool = False) -> bool:
        """Note one applied change; returns whether a flush is due now."""
        self._pending += 1
        self._significant = self._significant or significant
        return self.due()

    def due(self) -> bool:
        """Whether pending changes should be flushed now."""
        if self._pending == 0:
            return False
        deadline = self.deadline()
        return deadline is not None and self._clock() >= deadline

    def deadline(self) -> float | None:
        """The clock reading at which pending changes fall due by time; None if nothing pends."""
        if self._pending == 0:
            return None
        if self._significant or self._pending >= self._every:
            return self._last_flush + self._min_gap
        return self._last_flush + self._interval

    def flushed(self) -> None:
        """The caller took a snapshot of everything pending; start counting afresh."""
        self._pending = 0
        self._significant = False
        self._last_flush = self._clock()

    def retry_later(self) -> None:
        """The flushed snapshot did not land; its changes are pending again.

        The retried flush is not significant even if the lost one was: the caller's own backoff
        decides when to try again, and the next snapshot carries everything anyway.
        """
        self._pending = max(self._pending, 1)
