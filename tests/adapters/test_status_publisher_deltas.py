"""The status publisher with deltas on, against fake sinks: probe, resync, plain sinks."""

from __future__ import annotations

import asyncio

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, io_pb2

from worker.adapters.metered import MeteredStatusSink
from worker.domain.agent_events import TokenDelta
from worker.domain.status_builder import StatusBuilder
from worker.domain.status_wire import StatusPayload, as_status
from worker.observability.metrics import Metrics
from worker.ports import StatusSink
from worker.run.status_publisher import StatusPublisher
from worker.settings import StatusSettings

SETTINGS = StatusSettings.model_validate(
    {
        "STIGMER_STATUS_UPDATE_EVENTS": 1,
        "STIGMER_STATUS_UPDATE_INTERVAL_MS": 10,
        "STIGMER_STATUS_UPDATE_MIN_GAP_MS": 0,
        "STIGMER_STATUS_UPDATE_SETTLE_MS": 0,
        "STIGMER_STATUS_FINAL_DEADLINE_SECONDS": 5,
        "STIGMER_STATUS_DELTAS": True,
    }
)


class FakeDeltaSink:
    """A fake orchestrator: keeps whole statuses; answers deltas with what `answer` says
    ("apply", "resync" or "unsupported", which is None as the adapter returns it)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.whole: list[api_pb2.AgentExecutionStatus] = []
        self.deltas: list[io_pb2.AgentExecutionStatusDelta] = []

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        self.whole.append(as_status(status))

    async def update_status_delta(
        self, execution_id: str, delta: bytes
    ) -> io_pb2.StatusDeltaAck | None:
        parsed = io_pb2.AgentExecutionStatusDelta.FromString(delta)
        self.deltas.append(parsed)
        if self.answer == "unsupported":
            return None
        if self.answer == "resync":
            return io_pb2.StatusDeltaAck(resync=True, reason="fake: gap")
        return io_pb2.StatusDeltaAck(applied=True, stored_seq=parsed.seq)


class PlainSink:
    """A fake January sink: `update_status` only."""

    def __init__(self) -> None:
        self.whole: list[api_pb2.AgentExecutionStatus] = []

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        self.whole.append(as_status(status))


async def publish_run(sink: StatusSink, changes: int = 5) -> StatusPublisher:
    builder = StatusBuilder(user_message="hi")
    builder.start()
    publisher = StatusPublisher(sink, "aex-1", SETTINGS)
    async with publisher:
        publisher.offer(builder.parts)
        await asyncio.sleep(0.05)
        for n in range(changes):
            builder.apply(TokenDelta(message_id="m", text=f"part {n} "))
            publisher.offer(builder.parts)
            await asyncio.sleep(0.05)
        builder.complete()
        assert await publisher.finish(builder.parts)
    if isinstance(sink, PlainSink):
        assert sink.whole[-1] == builder.snapshot()
    return publisher


async def test_deltas_follow_the_first_whole_status() -> None:
    sink = FakeDeltaSink("apply")
    publisher = await publish_run(sink)
    assert len(sink.whole) == 1
    assert len(sink.deltas) == 6
    assert sink.deltas[-1].final_digest
    assert [d.base_seq for d in sink.deltas] == [d.seq - 1 for d in sink.deltas]
    assert publisher.stats.deltas_sent == 6


async def test_an_orchestrator_without_deltas_gets_whole_statuses_after_one_probe() -> None:
    sink = FakeDeltaSink("unsupported")
    await publish_run(sink)
    assert len(sink.deltas) == 1
    assert len(sink.whole) == 7


async def test_a_resync_sends_the_whole_status_in_the_same_send() -> None:
    sink = FakeDeltaSink("resync")
    publisher = await publish_run(sink)
    # Every delta is refused; each is followed at once by the whole status.
    assert len(sink.deltas) == 6
    assert len(sink.whole) == 7
    assert publisher.stats.resyncs == 6
    assert publisher.stats.sent == 7


async def test_a_sink_of_the_january_contract_gets_whole_statuses() -> None:
    sink = PlainSink()
    await publish_run(sink)
    assert len(sink.whole) == 7


async def test_the_metered_sink_passes_deltas_through_and_counts_the_stored_ones() -> None:
    inner = FakeDeltaSink("apply")
    metrics = Metrics()
    await publish_run(MeteredStatusSink(inner, metrics))
    assert len(inner.deltas) == 6
    assert len(inner.whole) == 1
    rendered = metrics.render()[0].decode()
    assert "agent_runner_status_updates_sent_total 7.0" in rendered


async def test_the_metered_sink_around_a_january_sink_says_not_served() -> None:
    inner = PlainSink()
    await publish_run(MeteredStatusSink(inner, Metrics()))
    assert len(inner.whole) == 7
