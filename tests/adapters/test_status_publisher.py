"""The status publisher: coalescing, one call in flight, timers, retries and the final update."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as execution_enum
from structlog.testing import capture_logs

from worker.domain.status_wire import StatusPayload, as_status
from worker.errors import InvalidInput, NotFound, Unavailable
from worker.run.status_publisher import Backoff, StatusPublisher
from worker.settings import StatusSettings

FAST_BACKOFF = Backoff(base_seconds=0.01, cap_seconds=0.05)


class FakeStatusSink:
    """Records what lands; can be slowed, gated shut, or told to fail the next calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.failures: list[Exception] = []
        self.fail_always: Exception | None = None
        self.received: list[execution_api.AgentExecutionStatus] = []
        self.calls = 0
        self.started: list[float] = []  # time.monotonic() at each call's start
        self.in_flight = 0
        self.max_in_flight = 0

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        assert execution_id == "aex-1"
        self.calls += 1
        self.started.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_always is not None:
                raise self.fail_always
            if self.failures:
                raise self.failures.pop(0)
            copy = execution_api.AgentExecutionStatus()
            copy.CopyFrom(as_status(status))
            self.received.append(copy)
        finally:
            self.in_flight -= 1

    @property
    def counters(self) -> list[int]:
        """The `n` each received snapshot was built with (see `Producer`)."""
        return [len(s.messages) for s in self.received]


class Producer:
    """Stands in for the StatusBuilder: `n` changes so far, a complete snapshot on demand."""

    def __init__(self) -> None:
        self.n = 0
        self.builds = 0

    def snapshot(self) -> execution_api.AgentExecutionStatus:
        self.builds += 1
        return execution_api.AgentExecutionStatus(
            phase=execution_enum.EXECUTION_IN_PROGRESS,
            messages=[execution_api.AgentMessage(content=str(i)) for i in range(self.n)],
        )

    def final(self) -> execution_api.AgentExecutionStatus:
        status = self.snapshot()
        status.phase = execution_enum.EXECUTION_COMPLETED
        return status


def settings(events: int = 10, interval_ms: int = 200, final_s: float = 5.0) -> StatusSettings:
    return StatusSettings.model_validate(
        {
            "STIGMER_STATUS_UPDATE_EVENTS": events,
            "STIGMER_STATUS_UPDATE_INTERVAL_MS": interval_ms,
            "STIGMER_STATUS_FINAL_DEADLINE_SECONDS": final_s,
        }
    )


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
def sink() -> FakeStatusSink:
    return FakeStatusSink()


@pytest.fixture
def producer() -> Producer:
    return Producer()


@pytest.fixture
async def publisher(sink: FakeStatusSink) -> AsyncIterator[StatusPublisher]:
    async with StatusPublisher(
        sink, "aex-1", settings(events=5, interval_ms=50), backoff=FAST_BACKOFF
    ) as publisher:
        yield publisher


async def start_quiet(publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer) -> None:
    """Land a first update, so the interval starts counting from now."""
    producer.n += 1
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: len(sink.received) == 1)


async def test_a_fast_producer_is_coalesced_into_few_updates_in_order(producer: Producer) -> None:
    sink = FakeStatusSink(delay=0.02)
    async with StatusPublisher(sink, "aex-1", settings(events=10, interval_ms=50)) as publisher:
        for _ in range(500):
            producer.n += 1
            publisher.offer(producer.snapshot, significant=producer.n % 50 == 0)
            await asyncio.sleep(0)
        assert await publisher.finish(producer.final)

    assert len(sink.received) < 50
    assert sink.counters == sorted(set(sink.counters)), "an older snapshot followed a newer one"
    assert sink.counters[-1] == 500
    assert sink.received[-1].phase == execution_enum.EXECUTION_COMPLETED
    assert sink.max_in_flight == 1


async def test_snapshots_are_built_only_when_sent(producer: Producer) -> None:
    sink = FakeStatusSink(delay=0.01)
    async with StatusPublisher(sink, "aex-1", settings(events=10, interval_ms=50)) as publisher:
        for _ in range(300):
            producer.n += 1
            publisher.offer(producer.snapshot)
            await asyncio.sleep(0)
        await publisher.finish(producer.final)

    assert producer.builds == sink.calls
    assert producer.builds < 300


async def test_at_most_one_update_is_in_flight_even_with_many_significant_changes(
    producer: Producer,
) -> None:
    sink = FakeStatusSink(delay=0.005)
    async with StatusPublisher(sink, "aex-1", settings(events=1, interval_ms=10)) as publisher:
        for _ in range(200):
            producer.n += 1
            publisher.offer(producer.snapshot, significant=True)
            if producer.n % 7 == 0:
                await asyncio.sleep(0.001)
        await publisher.finish(producer.final)

    assert sink.max_in_flight == 1
    assert sink.counters[-1] == 200


async def test_a_slow_orchestrator_gets_calls_spaced_by_twice_their_time_not_back_to_back(
    producer: Producer,
) -> None:
    """Calls of 100 ms against changes every few ms, each significant (due after the 50 ms least
    gap): without adapting, a call would start as soon as the previous one returned. The
    policy measures the calls (`UpdatePolicy.took`) and spaces their starts by twice that."""
    call_s = 0.1
    sink = FakeStatusSink(delay=call_s)
    async with StatusPublisher(sink, "aex-1", settings(events=1, interval_ms=200)) as publisher:
        until = time.monotonic() + 1.6
        while time.monotonic() < until:
            producer.n += 1
            publisher.offer(producer.snapshot, significant=True)
            await asyncio.sleep(0.003)
        await publisher.finish(producer.final)

    assert sink.max_in_flight == 1
    assert sink.counters[-1] == producer.n
    # From the second call on, the measured time paces the next (the final update excepted:
    # it goes as soon as the call in flight returns).
    gaps = [b - a for a, b in zip(sink.started[1:-1], sink.started[2:-1], strict=False)]
    assert gaps
    assert min(gaps) >= 2 * call_s * 0.95
    assert sink.calls <= 1.6 / (2 * call_s) + 3


async def test_later_state_supersedes_state_queued_behind_a_call_in_flight(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.gate = asyncio.Event()
    producer.n = 1
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: sink.in_flight == 1)
    for _ in range(4):
        producer.n += 1
        publisher.offer(producer.snapshot, significant=True)
    sink.gate.set()
    await eventually(lambda: len(sink.received) == 2)
    await asyncio.sleep(0.1)

    assert sink.counters == [1, 5]


async def test_a_plain_status_offer_is_sent_as_given(
    publisher: StatusPublisher, sink: FakeStatusSink
) -> None:
    status = execution_api.AgentExecutionStatus(phase=execution_enum.EXECUTION_IN_PROGRESS)
    publisher.offer(status, significant=True)
    await eventually(lambda: len(sink.received) == 1)

    assert sink.received[0] == status


async def test_pending_changes_are_flushed_by_the_timer(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    await start_quiet(publisher, sink, producer)
    offered_at = time.monotonic()
    producer.n += 1
    publisher.offer(producer.snapshot)
    await asyncio.sleep(0.02)
    assert len(sink.received) == 1, "flushed before the interval"

    await eventually(lambda: len(sink.received) == 2, within=1.0)

    # The interval counts from the previous flush, which preceded the offer: only "later than at
    # once" is a property; how much later depends on the scheduler.
    assert time.monotonic() - offered_at > 0.02
    assert sink.counters == [1, 2]


async def test_n_events_flush_without_waiting_for_the_timer(
    sink: FakeStatusSink, producer: Producer
) -> None:
    async with StatusPublisher(sink, "aex-1", settings(events=5, interval_ms=60_000)) as publisher:
        await start_quiet(publisher, sink, producer)
        for _ in range(4):
            producer.n += 1
            publisher.offer(producer.snapshot)
        await asyncio.sleep(0.05)
        assert len(sink.received) == 1

        producer.n += 1
        publisher.offer(producer.snapshot)
        await eventually(lambda: len(sink.received) == 2, within=1.0)

    assert sink.counters == [1, 6]


@pytest.mark.parametrize(
    "pause", [0.05, 0.0], ids=["after the minimum gap", "inside the minimum gap"]
)
async def test_a_significant_change_wakes_a_sender_waiting_for_the_interval(
    sink: FakeStatusSink, producer: Producer, pause: float
) -> None:
    async with StatusPublisher(
        sink, "aex-1", settings(events=100, interval_ms=60_000)
    ) as publisher:
        await start_quiet(publisher, sink, producer)
        producer.n += 1
        publisher.offer(producer.snapshot)  # pending: the sender sleeps until the interval
        await asyncio.sleep(pause)
        assert len(sink.received) == 1

        producer.n += 1
        publisher.offer(producer.snapshot, significant=True)
        await eventually(lambda: len(sink.received) == 2, within=1.0)

    assert sink.counters == [1, 3]


async def test_transient_failures_are_retried_with_backoff_and_logged(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.failures = [Unavailable("updateStatus: UNAVAILABLE: down"), Unavailable("again")]
    producer.n = 3
    with capture_logs() as logs:
        publisher.offer(producer.snapshot, significant=True)
        await eventually(lambda: len(sink.received) == 1)

    assert sink.calls == 3
    assert sink.counters == [3]
    assert publisher.stats.failed == 2
    assert publisher.stats.sent == 1
    failures = [e for e in logs if e["event"] == "status_update_failed"]
    assert [e["log_level"] for e in failures] == ["warning", "warning"]
    assert failures[0]["error"] == "updateStatus: UNAVAILABLE: down"
    assert failures[0]["retry_in_ms"] is not None
    assert failures[0]["seq"] == 1


async def test_a_retry_sends_the_newest_state(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.failures = [Unavailable("down")]
    sink.delay = 0.02
    producer.n = 1
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: sink.calls == 1)
    producer.n = 2
    publisher.offer(producer.snapshot)
    await eventually(lambda: len(sink.received) == 1)

    assert sink.counters == [2]


async def test_a_non_retryable_failure_is_dropped_and_the_next_change_goes_through(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.failures = [InvalidInput("updateStatus: INVALID_ARGUMENT: bad")]
    producer.n = 1
    with capture_logs() as logs:
        publisher.offer(producer.snapshot, significant=True)
        await eventually(lambda: sink.calls == 1)
        await asyncio.sleep(0.1)
    assert sink.calls == 1
    assert publisher.stats.dropped == 1
    assert [(e["event"], e["retry_in_ms"]) for e in logs if e["log_level"] == "warning"] == [
        ("status_update_failed", None)
    ]

    producer.n = 2
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: len(sink.received) == 1)
    assert sink.counters == [2]


async def test_an_unexpected_sink_error_does_not_stop_the_publisher(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.failures = [RuntimeError("boom")]
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: sink.calls == 1)
    producer.n = 1
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: len(sink.received) == 1)

    assert sink.counters == [1]


async def test_the_final_status_is_retried_until_it_lands(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.failures = [Unavailable("down")] * 3
    producer.n = 4

    landed = await publisher.finish(producer.final)

    assert landed
    assert publisher.stats.final_landed is True
    assert sink.calls == 4
    assert sink.received[-1].phase == execution_enum.EXECUTION_COMPLETED
    assert sink.counters == [4]


async def test_the_final_status_gives_up_when_the_deadline_passes(
    sink: FakeStatusSink, producer: Producer
) -> None:
    sink.fail_always = Unavailable("down")
    async with StatusPublisher(
        sink, "aex-1", settings(final_s=0.3), backoff=FAST_BACKOFF
    ) as publisher:
        started = time.monotonic()
        with capture_logs() as logs:
            landed = await publisher.finish(producer.final)
        elapsed = time.monotonic() - started

    assert not landed
    assert publisher.stats.final_landed is False
    assert 0.25 <= elapsed < 1.0
    assert sink.calls > 2
    assert any(e["event"] == "final_status_not_delivered" for e in logs)


async def test_the_final_status_gives_up_at_the_deadline_while_the_sink_hangs(
    sink: FakeStatusSink, producer: Producer
) -> None:
    sink.gate = asyncio.Event()
    async with StatusPublisher(sink, "aex-1", settings(final_s=0.2)) as publisher:
        started = time.monotonic()
        landed = await publisher.finish(producer.final)

    assert not landed
    assert time.monotonic() - started < 1.0


async def test_a_non_retryable_final_failure_returns_at_once(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.failures = [NotFound("updateStatus: NOT_FOUND: no such execution")]

    assert not await publisher.finish(producer.final)
    assert sink.calls == 1


async def test_the_final_status_waits_for_the_call_in_flight_and_lands_last(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.delay = 0.1
    producer.n = 1
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: sink.in_flight == 1)
    producer.n = 2

    assert await publisher.finish(producer.final)

    assert sink.max_in_flight == 1
    assert [s.phase for s in sink.received] == [
        execution_enum.EXECUTION_IN_PROGRESS,
        execution_enum.EXECUTION_COMPLETED,
    ]
    assert sink.counters == [1, 2]


async def test_offers_after_finish_are_ignored(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    assert await publisher.finish(producer.final)
    producer.n = 9
    publisher.offer(producer.snapshot, significant=True)
    await asyncio.sleep(0.05)

    assert sink.calls == 1


async def test_offer_never_blocks_while_the_sink_hangs(
    publisher: StatusPublisher, sink: FakeStatusSink, producer: Producer
) -> None:
    sink.gate = asyncio.Event()
    producer.n = 1
    publisher.offer(producer.snapshot, significant=True)
    await eventually(lambda: sink.in_flight == 1)

    started = time.monotonic()
    for _ in range(20_000):
        producer.n += 1
        publisher.offer(producer.snapshot, significant=True)
    offers_took = time.monotonic() - started
    loop_started = time.monotonic()
    await asyncio.sleep(0.01)
    loop_lag = time.monotonic() - loop_started

    assert offers_took < 0.5
    assert loop_lag < 0.2
    assert sink.calls == 1
    assert producer.builds == 1
    sink.gate.set()
    await eventually(lambda: len(sink.received) == 2)
    assert sink.counters == [1, 20_001]


async def test_a_progress_update_is_logged_at_debug_with_its_number_and_counts(
    publisher: StatusPublisher, sink: FakeStatusSink
) -> None:
    status = execution_api.AgentExecutionStatus(
        phase=execution_enum.EXECUTION_IN_PROGRESS,
        messages=[execution_api.AgentMessage(content="hi")],
        tool_calls=[execution_api.ToolCall(id="t1"), execution_api.ToolCall(id="t2")],
    )
    status.todos["a"].content = "plan"
    with capture_logs() as logs:
        publisher.offer(status, significant=True)
        await eventually(lambda: len(sink.received) == 1)

    sent = [e for e in logs if e["event"] == "status_update_sent"]
    assert len(sent) == 1
    assert dict(sent[0]) | {"latency_ms": 0} == {
        "event": "status_update_sent",
        "log_level": "debug",
        "execution_id": "aex-1",
        "seq": 1,
        "phase": "EXECUTION_IN_PROGRESS",
        "messages": 1,
        "tool_calls": 2,
        "todos": 1,
        "sub_agents": 0,
        "bytes": status.ByteSize(),
        "latency_ms": 0,
        "final": False,
    }
    assert publisher.stats.bytes_sent == status.ByteSize()
    assert publisher.stats.last_latency_ms is not None


async def test_leaving_without_finish_stops_the_sender(
    sink: FakeStatusSink, producer: Producer
) -> None:
    sink.gate = asyncio.Event()
    async with StatusPublisher(sink, "aex-1", settings()) as publisher:
        publisher.offer(producer.snapshot, significant=True)
        await eventually(lambda: sink.in_flight == 1)

    assert sink.in_flight == 0


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    backoff = Backoff(base_seconds=0.1, cap_seconds=1.0)

    assert backoff.delay(0, rng=lambda: 1.0) == pytest.approx(0.1)
    assert backoff.delay(3, rng=lambda: 1.0) == pytest.approx(0.8)
    assert backoff.delay(10, rng=lambda: 1.0) == pytest.approx(1.0)
    assert backoff.delay(3, rng=lambda: 0.5) == pytest.approx(0.4)
    assert backoff.delay(3, rng=lambda: 0.0) == pytest.approx(0.025)


async def test_the_final_update_is_logged_as_final(
    sink: FakeStatusSink, producer: Producer
) -> None:
    async with StatusPublisher(sink, "aex-1", settings()) as publisher:
        with capture_logs() as logs:
            assert await publisher.finish(producer.final)
    sent = [e for e in logs if e["event"] == "status_update_sent"]
    assert [(e["log_level"], e["final"]) for e in sent] == [("info", True)]
