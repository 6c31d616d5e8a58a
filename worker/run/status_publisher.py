"""Pushes an execution's status to the orchestrator without ever making the agent wait.

The agent loop calls `offer()` after each applied event; it records the change with the update
policy and returns at once. A background task sends `updateStatus` when the policy says a flush is
due, one call at a time. Each send builds its snapshot from the newest offer at that moment, so
changes that arrive while a call is in flight are coalesced into the next one and older state is
never sent after newer state. Snapshots are complete (the orchestrator replaces lists wholesale).

With `STIGMER_STATUS_DELTAS` on and a snapshot given as `StatusParts` (`StatusBuilder.parts`),
every update after the first acknowledged one is a delta (`updateStatusDelta`, see
`worker.domain.status_delta`): what changed since the update the orchestrator stored last. An
orchestrator that does not serve the method gets whole statuses, as without the setting; one that
asks for a resync (a gap, a digest that differs) gets the whole status at once, in the same send.
Either way each call has its own number (`x-stigmer-seq`).

Transient failures (`Unavailable`) are retried with exponential backoff and full jitter; other
failures are logged and dropped, since the next snapshot carries the same state anyway.
`finish()` waits for the call in flight, then sends the final status until it lands or the final
deadline passes, and says whether it landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, cast

from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as execution_enum
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io

from worker.domain.fencing import update_numbered
from worker.domain.status_delta import (
    PAGE_BYTES,
    Delta,
    DeltaTracker,
    StatusParts,
    resync_pages,
)
from worker.domain.status_wire import EncodedStatus, StatusPayload
from worker.domain.update_policy import Clock, UpdatePolicy
from worker.errors import RunnerError
from worker.logs import get_logger
from worker.ports import StatusDeltaSink, StatusSink
from worker.settings import StatusSettings

log = get_logger(__name__)

SnapshotFn = Callable[[], StatusPayload | StatusParts]
Snapshot = StatusPayload | SnapshotFn
"""A complete status (a proto or already encoded), or a callable that builds one when a send
actually happens (`StatusBuilder.encoded`, or `StatusBuilder.parts`, which deltas need)."""


@dataclass
class PublisherStats:
    """Counters for metrics: what was offered, sent, lost and how long sends took."""

    offers: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    bytes_sent: int = 0
    deltas_sent: int = 0
    resyncs: int = 0
    resync_pages: int = 0
    last_latency_ms: float | None = None
    final_landed: bool | None = None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2**n)]."""

    base_seconds: float = 0.2
    cap_seconds: float = 5.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * (1 << min(attempt, 30)))
        # The floor keeps a zero draw from turning the retry into a tight loop.
        return max(self.base_seconds / 4, ceiling * rng())


def _as_fn(snapshot: Snapshot) -> SnapshotFn:
    if isinstance(snapshot, execution_api.AgentExecutionStatus | EncodedStatus):
        return lambda: snapshot
    return snapshot


def _summary(status: StatusPayload) -> dict[str, object]:
    """Phase and list sizes for the update's log line, without parsing an encoded status."""
    if isinstance(status, EncodedStatus):
        counts = (status.messages, status.tool_calls, status.todos, status.sub_agents)
    else:
        counts = (
            len(status.messages),
            len(status.tool_calls),
            len(status.todos),
            len(status.sub_agent_executions),
        )
    names = ("messages", "tool_calls", "todos", "sub_agents")
    return {"phase": _phase_name(status.phase), **dict(zip(names, counts, strict=True))}


def _delta_summary(delta: Delta, parts: StatusParts) -> dict[str, object]:
    return {
        "phase": _phase_name(parts.phase),
        "delta": True,
        "base_seq": delta.base_seq,
        "entries": delta.entries,
        "messages": len(parts.messages),
        "tool_calls": len(parts.tool_calls),
    }


def _phase_name(phase: int) -> str:
    try:
        return execution_enum.ExecutionPhase.Name(phase)  # type: ignore[arg-type]
    except ValueError:
        return str(phase)


class _Outcome(Enum):
    LANDED = "landed"
    DROPPED = "dropped"  # not retryable; the next snapshot supersedes it
    RETRY = "retry"


class StatusPublisher:
    """Progressive status updates for one execution.

    Use as `async with StatusPublisher(sink, execution_id, settings) as publisher:`; call
    `offer()` from the agent loop, then `await publisher.finish(final_status)`. Leaving the block
    without `finish()` stops the background task and abandons pending changes.
    """

    def __init__(
        self,
        sink: StatusSink,
        execution_id: str,
        settings: StatusSettings,
        *,
        backoff: Backoff | None = None,
        clock: Clock = time.monotonic,
        rng: Callable[[], float] = random.random,
        page_bytes: int = PAGE_BYTES,
    ) -> None:
        self._sink = sink
        self._page_bytes = page_bytes
        self._execution_id = execution_id
        self._final_deadline = settings.final_deadline_seconds
        self._policy = UpdatePolicy(
            events_per_update=settings.events_per_update,
            interval_ms=settings.interval_ms,
            min_gap_ms=settings.min_gap_ms,
            settle_ms=settings.settle_ms,
            clock=clock,
        )
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._rng = rng
        self._latest: SnapshotFn | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_at: float | None = None
        self._attempt = 0
        self._seq = 0
        self._stopping = False
        self._tracker: DeltaTracker | None = DeltaTracker() if settings.deltas else None
        self.stats = PublisherStats()

    async def __aenter__(self) -> StatusPublisher:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def updates_sent(self) -> int:
        """Status updates that reached the orchestrator so far (the heartbeat reports it)."""
        return self.stats.sent

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name="status-publisher-" + self._execution_id
            )

    def offer(self, snapshot: Snapshot, *, significant: bool = False) -> None:
        """Note that the status changed; never waits. The newest offer supersedes older ones."""
        if self._stopping:
            return
        self.stats.offers += 1
        self._latest = _as_fn(snapshot)
        # Waking the sender on every token would cost a loop iteration each; it only needs to
        # hear about a change that brings its deadline closer.
        if self._policy.record(significant=significant):
            self._wake.set()

    async def finish(self, final_status: Snapshot) -> bool:
        """Send the final status, retrying transient failures until the final deadline.

        Returns whether it landed. Offers made after this call are ignored.
        """
        deadline = self._clock() + self._final_deadline
        final = _as_fn(final_status)
        await self._stop_sender(deadline)
        attempt = 0
        while (remaining := deadline - self._clock()) > 0:
            outcome, error = await self._send(final, final=True, limit_seconds=remaining)
            if outcome is _Outcome.LANDED:
                self.stats.final_landed = True
                return True
            delay = min(self._backoff.delay(attempt, self._rng), deadline - self._clock())
            attempt += 1
            retry = outcome is _Outcome.RETRY and delay > 0
            self._log_failure(error, final=True, retry_in=delay if retry else None)
            if not retry:
                break
            await asyncio.sleep(delay)
        self.stats.final_landed = False
        log.error(
            "final_status_not_delivered",
            execution_id=self._execution_id,
            seq=self._seq,
            deadline_s=self._final_deadline,
        )
        return False

    async def aclose(self) -> None:
        """Stop the background sender at once, abandoning pending changes."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _stop_sender(self, deadline: float) -> None:
        """Let the call in flight complete (so it cannot land after the final one), then stop."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - self._clock()))
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._wait_until_due()
            if self._stopping:
                return
            snapshot = self._latest
            if snapshot is None:  # pragma: no cover - the policy only says due after an offer
                self._policy.flushed()
                continue
            self._policy.flushed()
            outcome, error = await self._send(snapshot, final=False, limit_seconds=None)
            if outcome is not _Outcome.RETRY:
                self._attempt = 0
                self._retry_at = None
                if outcome is _Outcome.DROPPED:
                    self._log_failure(error, final=False, retry_in=None)
                continue
            delay = self._backoff.delay(self._attempt, self._rng)
            self._attempt += 1
            self._retry_at = self._clock() + delay
            self._policy.retry_later()
            self._log_failure(error, final=False, retry_in=delay)

    async def _wait_until_due(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            now = self._clock()
            if self._retry_at is not None and now < self._retry_at:
                wake_at: float | None = self._retry_at
            elif self._policy.due():
                return
            else:
                wake_at = self._policy.deadline()
            self._wake.clear()
            # A timer that sets the event, not `asyncio.wait_for`: that would start a task per
            # wait, and the sender waits a few times per update.
            timer = None if wake_at is None else loop.call_later(wake_at - now, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _send(
        self, snapshot: SnapshotFn, *, final: bool, limit_seconds: float | None
    ) -> tuple[_Outcome, str]:
        """One update of a freshly built snapshot (a delta when it can be); the outcome and any
        error text."""
        self._seq += 1
        try:
            built = snapshot()
        except Exception as err:
            # A snapshot that cannot be built is a bug in the builder; the next one may work.
            self.stats.dropped += 1
            return _Outcome.DROPPED, "snapshot failed: " + repr(err)
        parts = built if isinstance(built, StatusParts) else None
        tracker = self._tracker
        if parts is not None and tracker is not None and tracker.has_base:
            sent = await self._send_delta(tracker, parts, final=final, limit_seconds=limit_seconds)
            if sent is not None:
                return sent
            self._seq += 1  # the whole status goes as an update of its own
        tracker = self._tracker
        if parts is not None and tracker is not None and parts.size > self._page_bytes:
            paged = await self._send_pages(tracker, parts, final=final, limit_seconds=limit_seconds)
            if paged is not None:
                return paged
        status: StatusPayload = parts.encoded() if parts is not None else cast(StatusPayload, built)
        outcome = await self._call(
            self._sink.update_status(self._execution_id, status),
            limit_seconds=limit_seconds,
            size=status.ByteSize(),
            final=final,
            fields=_summary(status),
        )
        if outcome[0] is _Outcome.LANDED and parts is not None and tracker is not None:
            tracker.acknowledged(parts, self._seq)
        return outcome

    async def _send_delta(
        self,
        tracker: DeltaTracker,
        parts: StatusParts,
        *,
        final: bool,
        limit_seconds: float | None,
    ) -> tuple[_Outcome, str] | None:
        """The update as a delta; None when the whole status must go instead (the orchestrator
        does not serve deltas, or asked for a resync)."""
        sink = self._sink
        if not hasattr(sink, "update_status_delta"):
            self._tracker = None
            return None
        delta_sink: StatusDeltaSink = sink  # type: ignore[assignment]
        delta = tracker.delta(self._execution_id, parts, self._seq, final=final)
        acks: list[execution_io.StatusDeltaAck | None] = []

        async def call() -> None:
            acks.append(await delta_sink.update_status_delta(self._execution_id, delta.data))

        outcome = await self._call(
            call(),
            limit_seconds=limit_seconds,
            size=delta.ByteSize(),
            final=final,
            fields=_delta_summary(delta, parts),
        )
        if outcome[0] is not _Outcome.LANDED:
            return outcome  # stored or not, unknown: the next delta's base says (resync if so)
        ack = acks[0]
        if ack is None:
            # Not served (logged once by the adapter): whole statuses from now on.
            self._tracker = None
            self.stats.sent -= 1  # nothing stored; the whole status goes next
            return None
        if ack.applied or (ack.duplicate and ack.stored_seq == delta.seq):
            tracker.acknowledged(parts, delta.seq)
            self.stats.deltas_sent += 1
            return outcome
        self.stats.sent -= 1  # nothing stored; the whole status goes next
        self.stats.resyncs += 1
        tracker.forget()
        log.info(
            "status_resync",
            execution_id=self._execution_id,
            seq=delta.seq,
            base_seq=delta.base_seq,
            stored_seq=ack.stored_seq,
            reason=ack.reason or ("duplicate" if ack.duplicate else "asked by the orchestrator"),
        )
        return None

    async def _send_pages(
        self,
        tracker: DeltaTracker,
        parts: StatusParts,
        *,
        final: bool,
        limit_seconds: float | None,
    ) -> tuple[_Outcome, str] | None:
        """The whole status in resync pages, none over `page_bytes` (`resync_pages`); None when
        the orchestrator does not serve deltas (the whole status goes in one update then)."""
        sink = self._sink
        if not hasattr(sink, "update_status_delta"):
            return None
        delta_sink: StatusDeltaSink = sink  # type: ignore[assignment]
        pages = resync_pages(
            self._execution_id, parts, self._seq, final=final, page_bytes=self._page_bytes
        )
        outcome: tuple[_Outcome, str] = (_Outcome.RETRY, "no page sent")
        for page in pages:
            self._seq = page.seq
            acks: list[execution_io.StatusDeltaAck | None] = []

            async def call(
                data: bytes = page.data, into: list[execution_io.StatusDeltaAck | None] = acks
            ) -> None:
                into.append(await delta_sink.update_status_delta(self._execution_id, data))

            outcome = await self._call(
                call(),
                limit_seconds=limit_seconds,
                size=page.ByteSize(),
                final=page.final,
                fields={**_delta_summary(page, parts), "page": page.seq - pages[0].seq + 1},
            )
            if outcome[0] is not _Outcome.LANDED:
                return outcome  # the next send starts the resync again, from a new first page
            ack = acks[0]
            if ack is None:
                self._tracker = None
                self.stats.sent -= 1
                return None
            self.stats.resync_pages += 1
            held = ack.staged if page is not pages[-1] else ack.applied
            if not held:
                # The stub did not keep the page (or the whole): start over at the next send.
                return _Outcome.RETRY, ack.reason or "a resync page was not held"
        tracker.acknowledged(parts, pages[-1].seq)
        log.info(
            "status_resync_paged",
            execution_id=self._execution_id,
            pages=len(pages),
            first_seq=pages[0].seq,
            seq=pages[-1].seq,
            bytes=sum(page.ByteSize() for page in pages),
        )
        return outcome

    async def _call(
        self,
        call: Coroutine[Any, Any, None],
        *,
        limit_seconds: float | None,
        size: int,
        final: bool,
        fields: dict[str, object],
    ) -> tuple[_Outcome, str]:
        started = time.perf_counter()
        try:
            # The number names this call within the attempt, so the orchestrator can refuse an
            # older call that lands after it (`worker.domain.fencing`).
            with update_numbered(self._seq):
                await asyncio.wait_for(call, limit_seconds)
        except TimeoutError:
            self.stats.failed += 1
            return _Outcome.RETRY, "final deadline passed during the call"
        except Exception as err:
            # Whatever the sink raises, the publisher lives on: the next snapshot supersedes.
            self.stats.failed += 1
            error = str(err) or type(err).__name__
            if isinstance(err, RunnerError) and err.retryable:
                return _Outcome.RETRY, error
            self.stats.dropped += 1
            return _Outcome.DROPPED, error
        elapsed = time.perf_counter() - started
        latency_ms = round(elapsed * 1000, 1)
        self._policy.took(elapsed)
        self.stats.sent += 1
        self.stats.bytes_sent += size
        self.stats.last_latency_ms = latency_ms
        # Progress updates come several times a second per execution: DEBUG, with metrics
        # counting them; the final one, which says the outcome reached the orchestrator, INFO.
        (log.info if final else log.debug)(
            "status_update_sent",
            execution_id=self._execution_id,
            seq=self._seq,
            **fields,
            bytes=size,
            latency_ms=latency_ms,
            final=final,
        )
        return _Outcome.LANDED, ""

    def _log_failure(self, error: str, *, final: bool, retry_in: float | None) -> None:
        log.warning(
            "status_update_failed",
            execution_id=self._execution_id,
            seq=self._seq,
            error=error,
            final=final,
            retry_in_ms=None if retry_in is None else round(retry_in * 1000),
        )
