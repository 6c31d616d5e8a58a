"""When to push the execution's status to the orchestrator.

Pushing on every agent event turns each token into a database write; pushing every N events (what
upstream did) leaves a slow run looking frozen and hides a tool start until nine more events
arrive. The policy here flushes pending changes when any of these holds:

- `events_per_update` changes have accumulated since the last flush;
- `interval_ms` has passed since the last flush and something is pending (so a lone change is
  never older than the interval when it reaches the orchestrator, and a quiet run is not polled);
- a significant change arrived (phase, tool start or end, todo, sub-agent, error): `settle_ms`
  after it, so the changes that come with it join the same update.

Changes come in bursts: a model turn that asks for a tool, the tool's start, and a quick tool's
end arrive within a few milliseconds of each other. No update goes out sooner than `settle_ms`
after the oldest change it carries or the significant change that made it due (50 ms by default,
far below what a person watching notices), so a burst is one update instead of two. The first
and last rules are also held to `min_gap_ms` after the previous flush, so a long burst (a
sub-agent's tool calls) becomes one call per gap instead of one per change.

A slow orchestrator would otherwise be kept busy: with calls taking longer than the interval,
each update would start as soon as the previous one returned. The caller reports each call's
duration (`took`); the interval and the least gap grow to twice a moving average of it, so calls
occupy at most about half the time and each carries more changes, rather than updates queueing
behind one another. They shrink back as calls get fast again.

The policy only decides. It does no I/O and owns no timer: the caller records each change, asks
`due()`, and otherwise sleeps until `deadline()`, waking early when `record()` says the deadline
moved closer. The clock is injected so tests control time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Monotonic seconds, like `time.monotonic`."""

_SMOOTHING = 0.25
"""Weight of the newest call in the moving average of call durations."""


class UpdatePolicy:
    """Tracks changes since the last flush and says when the next flush is due."""

    def __init__(
        self,
        *,
        events_per_update: int = 10,
        interval_ms: int = 200,
        min_gap_ms: int = 50,
        settle_ms: int = 50,
        clock: Clock = time.monotonic,
    ) -> None:
        if events_per_update < 1:
            raise ValueError("events_per_update must be at least 1")
        if interval_ms < 0:
            raise ValueError("interval_ms must not be negative")
        if min_gap_ms < 0:
            raise ValueError("min_gap_ms must not be negative")
        if settle_ms < 0:
            raise ValueError("settle_ms must not be negative")
        self._every = events_per_update
        self._interval = interval_ms / 1000.0
        self._min_gap = min(min_gap_ms, interval_ms) / 1000.0
        self._settle = min(settle_ms, interval_ms) / 1000.0
        self._clock = clock
        self._call_seconds = 0.0  # moving average of the calls' duration (`took`)
        self._pending = 0
        self._first_at = 0.0
        self._significant_at: float | None = None
        # The interval counts from the last flush, so the very first change is not held back.
        self._last_flush = clock() - self._interval

    @property
    def pending(self) -> int:
        """Changes recorded since the last flush."""
        return self._pending

    def record(self, *, significant: bool = False) -> bool:
        """Note one applied change; returns whether the deadline moved closer with it (the first
        pending change, the first significant one, or the `events_per_update`-th), so a caller
        sleeping until the old deadline must look again."""
        self._pending += 1
        if self._pending == 1:
            self._first_at = self._clock()
            if significant:
                self._significant_at = self._first_at
            return True
        if significant and self._significant_at is None:
            self._significant_at = self._clock()
            return True
        return self._pending == self._every

    @property
    def pace_seconds(self) -> float:
        """The least time between flushes that the measured call time asks for (0 when calls
        are fast)."""
        return 2 * self._call_seconds

    def took(self, seconds: float) -> None:
        """One update call took `seconds`: slow calls stretch the interval (see the module
        docstring)."""
        if self._call_seconds == 0.0:
            self._call_seconds = seconds
        else:
            self._call_seconds += (seconds - self._call_seconds) * _SMOOTHING

    def due(self) -> bool:
        """Whether pending changes should be flushed now."""
        deadline = self.deadline()
        return deadline is not None and self._clock() >= deadline

    def deadline(self) -> float | None:
        """The clock reading at which pending changes fall due; None if nothing pends."""
        if self._pending == 0:
            return None
        pace = self.pace_seconds
        min_gap = max(self._min_gap, pace)
        at = self._last_flush + max(self._interval, pace)
        if self._pending >= self._every:
            at = min(at, self._last_flush + min_gap)
        if self._significant_at is not None:
            settled = max(self._last_flush + min_gap, self._significant_at + self._settle)
            at = min(at, settled)
        return max(at, self._first_at + self._settle)

    def flushed(self) -> None:
        """The caller took a snapshot of everything pending; start counting afresh."""
        self._pending = 0
        self._significant_at = None
        self._last_flush = self._clock()

    def retry_later(self) -> None:
        """The flushed snapshot did not land; its changes are pending again.

        The retried flush is not significant even if the lost one was: the caller's own backoff
        decides when to try again, and the next snapshot carries everything anyway.
        """
        if self._pending == 0:
            self._pending = 1
            self._first_at = self._clock()
