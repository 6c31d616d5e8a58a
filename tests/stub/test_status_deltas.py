"""`updateStatusDelta` end to end: the runner's publisher against a real stub (gRPC, MongoDB-wire).

Each test drives a `StatusBuilder` through a scripted run, publishing with deltas on, and checks
the stored status against the runner's final status field by field. A fault-injecting sink
(named as such) loses, duplicates and reorders deltas on the way; the stub must never store a
wrong status (it asks for a resync instead).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2, enum_pb2, io_pb2

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import running_stub
from stigmer_stub.settings import Settings
from stigmer_stub.status_wire import entries
from tests.stub.support import Stub, stub_settings
from worker.adapters.auth import StaticToken
from worker.adapters.orchestrator import GrpcOrchestrator
from worker.domain import fencing
from worker.domain.agent_events import (
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
)
from worker.domain.fencing import RunAttempt, attempt_bound
from worker.domain.status_builder import StatusBuilder
from worker.domain.status_delta import PAGE_BYTES
from worker.domain.status_wire import StatusPayload
from worker.errors import Unavailable
from worker.run.status_publisher import StatusPublisher
from worker.settings import BackendSettings, StatusSettings

pytestmark = pytest.mark.integration


def settings(*, deltas: bool = True) -> StatusSettings:
    # Every change is its own update: the most deltas, the most chances to go wrong.
    return StatusSettings.model_validate(
        {
            "STIGMER_STATUS_UPDATE_EVENTS": 1,
            "STIGMER_STATUS_UPDATE_INTERVAL_MS": 10,
            "STIGMER_STATUS_UPDATE_MIN_GAP_MS": 0,
            "STIGMER_STATUS_UPDATE_SETTLE_MS": 0,
            "STIGMER_STATUS_FINAL_DEADLINE_SECONDS": 20,
            "STIGMER_STATUS_DELTAS": deltas,
        }
    )


def orchestrator(address: str) -> GrpcOrchestrator:
    backend = BackendSettings.model_validate(
        {"STIGMER_BACKEND_ENDPOINT": address, "STIGMER_BACKEND_TIMEOUT_SECONDS": "10"}
    )
    return GrpcOrchestrator(backend, tokens=StaticToken(""))


class FaultySink:
    """A fake sink around the real adapter: `fault(n)` decides what happens to the n-th delta
    (from 0): "send", "lose" (never sent, the caller sees UNAVAILABLE), "lose_ack" (sent,
    stored, the caller sees UNAVAILABLE), "twice" (sent two times) or "hold" (kept back and sent
    after the next delta, so the two arrive in the wrong order)."""

    def __init__(self, inner: GrpcOrchestrator, fault: Callable[[int], str]) -> None:
        self.inner = inner
        self.fault = fault
        self.deltas = 0
        self.full = 0
        self.held: Callable[[], Awaitable[io_pb2.StatusDeltaAck | None]] | None = None

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        self.full += 1
        await self.inner.update_status(execution_id, status)

    async def update_status_delta(
        self, execution_id: str, delta: bytes
    ) -> io_pb2.StatusDeltaAck | None:
        what = self.fault(self.deltas)
        self.deltas += 1
        send = self.inner.update_status_delta
        if what == "lose":
            raise Unavailable("fake: delta lost")
        if what == "lose_ack":
            await send(execution_id, delta)
            raise Unavailable("fake: ack lost")
        if what == "twice":
            await send(execution_id, delta)
            return await send(execution_id, delta)
        if what == "hold":
            # The caller's metadata (attempt, seq) is read when the call is made: bind it now.
            metadata = fencing.update_metadata()
            seq = int(dict(metadata)[fencing.SEQ_HEADER])

            async def later() -> io_pb2.StatusDeltaAck | None:
                with fencing.update_numbered(seq):
                    return await send(execution_id, delta)

            self.held = later
            raise Unavailable("fake: delta delayed")
        ack = await send(execution_id, delta)
        if self.held is not None:
            held, self.held = self.held, None
            await held()  # arrives after a newer delta: must not be applied over it
        return ack


async def scripted_turn(
    builder: StatusBuilder, publish: Callable[[], Awaitable[None]], turn: int
) -> None:
    """One model turn: a streamed answer, a tool call started and ended."""
    key = f"m{turn}"
    text = ""
    for piece in range(6):
        chunk = f"turn {turn} piece {piece}. "
        text += chunk
        builder.apply(TokenDelta(message_id=key, text=chunk))
        await publish()
    call = ToolCallRequest(id=f"call-{turn}", name="execute", args={"command": f"ls {turn}"})
    builder.apply(ModelTurnEnded(message_id=key, text=text, tool_calls=(call,)))
    await publish()
    builder.apply(ToolStarted(tool_call_id=call.id, name=call.name, args=call.args))
    await publish()
    builder.apply(ToolEnded(tool_call_id=call.id, name=call.name, result=f"out {turn}\n" * 3))
    await publish()


async def run_and_compare(
    stub_address: str,
    client: StigmerClient,
    agent_id: str,
    *,
    deltas: bool = True,
    fault: Callable[[int], str] | None = None,
    turns: int = 8,
    between: Callable[[int], Awaitable[None]] | None = None,
    read: Callable[[], StigmerClient] | None = None,
    page_bytes: int | None = None,
) -> tuple[StatusPublisher, FaultySink]:
    created = await client.create_execution("hello", agent_id=agent_id)
    execution_id = created.metadata.id
    inner = orchestrator(stub_address)
    sink = FaultySink(inner, fault or (lambda _: "send"))
    builder = StatusBuilder(user_message="hello")
    try:
        with attempt_bound(RunAttempt("run-" + uuid.uuid4().hex[:8], 1)):
            publisher = StatusPublisher(
                sink, execution_id, settings(deltas=deltas), page_bytes=page_bytes or PAGE_BYTES
            )
            async with publisher:
                builder.start()
                for turn in range(turns):
                    if between is not None:
                        await between(turn)

                    async def publish() -> None:
                        # Wait for the update to go, so (almost) every change is its own update.
                        publisher.offer(builder.parts)
                        await _drain(publisher)

                    await scripted_turn(builder, publish, turn)
                builder.complete()
                assert await publisher.finish(builder.parts)
    finally:
        await inner.close()
    final = builder.snapshot()
    reader = read() if read is not None else client
    stored = (await reader.get_execution(execution_id)).status
    _assert_same(stored, final)
    return publisher, sink


async def _drain(publisher: StatusPublisher) -> None:
    for _ in range(200):
        if publisher.stats.offers and not publisher._policy.pending:
            await asyncio.sleep(0.02)
            return
        await asyncio.sleep(0.01)


def _assert_same(stored: api_pb2.AgentExecutionStatus, final: api_pb2.AgentExecutionStatus) -> None:
    assert list(stored.messages) == list(final.messages)
    assert list(stored.tool_calls) == list(final.tool_calls)
    assert list(stored.sub_agent_executions) == list(final.sub_agent_executions)
    assert dict(stored.todos) == dict(final.todos)
    assert stored.usage == final.usage
    assert stored.phase == final.phase == enum_pb2.EXECUTION_COMPLETED
    assert (stored.error, stored.started_at, stored.completed_at) == (
        final.error,
        final.started_at,
        final.completed_at,
    )


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    agent = await stub.client.create_agent("Delta Agent", instructions="answer")
    return agent.metadata.id


async def test_deltas_store_the_runners_final_status(stub: Stub, agent_id: str) -> None:
    publisher, sink = await run_and_compare(stub.address, stub.client, agent_id)
    assert publisher.stats.deltas_sent > 30
    assert publisher.stats.resyncs == 0
    assert sink.full == 1  # the first update only


async def test_deltas_cost_less_than_whole_statuses(stub: Stub, agent_id: str) -> None:
    with_deltas, _ = await run_and_compare(stub.address, stub.client, agent_id)
    whole, sink = await run_and_compare(stub.address, stub.client, agent_id, deltas=False)
    assert sink.deltas == 0
    assert with_deltas.stats.bytes_sent * 3 < whole.stats.bytes_sent


@pytest.mark.parametrize("fault", ["lose", "lose_ack", "twice", "hold"])
async def test_a_lost_duplicated_or_reordered_delta_never_corrupts_the_status(
    stub: Stub, agent_id: str, fault: str
) -> None:
    publisher, _ = await run_and_compare(
        stub.address, stub.client, agent_id, fault=lambda n: fault if n % 7 == 3 else "send"
    )
    if fault == "lose_ack":
        # The runner did not see the ack: its next delta applies on an older update than the
        # stub holds, so the stub asks for the whole status.
        assert publisher.stats.resyncs > 0
    else:
        # A lost delta is carried by the next one (same base); a duplicate, or the held delta
        # arriving after a newer one, is acknowledged as a duplicate and not applied.
        assert publisher.stats.resyncs == 0


class OwnStubs:
    """Stubs on one database that a test starts and stops itself (deltas off, a restart)."""

    def __init__(self, base: Settings) -> None:
        self.base = base
        self.stacks: list[AsyncExitStack] = []

    async def start(self, *, deltas: bool = True, port: int = 0) -> tuple[Stub, AsyncExitStack]:
        limits = self.base.limits.model_copy(update={"status_deltas": deltas})
        grpc_settings = self.base.grpc.model_copy(update={"port": port})
        settings = self.base.model_copy(update={"limits": limits, "grpc": grpc_settings})
        stacked = AsyncExitStack()
        self.stacks.append(stacked)
        running = await stacked.enter_async_context(running_stub(settings))
        client = await stacked.enter_async_context(StigmerClient(running.address))
        return Stub(running, settings, client), stacked

    async def close(self) -> None:
        for stacked in reversed(self.stacks):
            await stacked.aclose()


@pytest.fixture
async def own_stubs(stack: Endpoints) -> AsyncIterator[OwnStubs]:
    suffix = uuid.uuid4().hex[:10]
    stubs = OwnStubs(stub_settings(stack, database=f"stub_{suffix}", suffix=suffix))
    yield stubs
    await stubs.close()


async def test_with_deltas_turned_off_the_stub_answers_unimplemented_and_gets_whole_statuses(
    own_stubs: OwnStubs,
) -> None:
    off, _ = await own_stubs.start(deltas=False)
    agent = await off.client.create_agent("Whole Agent", instructions="answer")
    publisher, sink = await run_and_compare(off.address, off.client, agent.metadata.id)
    assert sink.deltas == 1  # the probe; every later update was whole
    assert publisher.stats.deltas_sent == 0
    assert sink.full == publisher.stats.sent


async def test_a_stub_restart_mid_run_loses_nothing(own_stubs: OwnStubs) -> None:
    first, first_stack = await own_stubs.start()
    agent = await first.client.create_agent("Restart Agent", instructions="answer")
    port = first.running.port
    clients = {"now": first.client}

    async def restart(turn: int) -> None:
        if turn == 4:
            # The stub stops and a new one takes its place on the same port and database;
            # the runner's next calls fail until it is up (retried), then go on.
            await first_stack.aclose()
            second, _ = await own_stubs.start(port=port)
            clients["now"] = second.client

    publisher, sink = await run_and_compare(
        first.address, first.client, agent.metadata.id, between=restart, read=lambda: clients["now"]
    )
    assert publisher.stats.deltas_sent > 20
    assert sink.full >= 1


async def test_a_stub_that_lost_the_base_asks_for_a_resync(own_stubs: OwnStubs) -> None:
    """A stub restarted on a restored backup (its fence behind the runner's) resyncs."""
    stub, _ = await own_stubs.start()
    agent = await stub.client.create_agent("Backup Agent", instructions="answer")

    async def roll_back(turn: int) -> None:
        if turn == 4:
            # The fence goes back to the first update, as a database restored from a backup
            # would: the next delta's base is not what the stub holds.
            await stub.running.database.executions.raw.update_many({}, {"$set": {"fence.seq": 1}})

    publisher, _ = await run_and_compare(
        stub.address, stub.client, agent.metadata.id, between=roll_back
    )
    assert publisher.stats.resyncs == 1


async def _roll_back_fences(stub: Stub) -> None:
    # As a database restored from a backup: the next delta's base is not what the stub holds.
    await stub.running.database.executions.raw.update_many({}, {"$set": {"fence.seq": 1}})


async def test_a_resync_larger_than_a_page_goes_in_pages_and_is_stored_whole(
    own_stubs: OwnStubs,
) -> None:
    stub, _ = await own_stubs.start()
    agent = await stub.client.create_agent("Paged Agent", instructions="answer")

    async def roll_back(turn: int) -> None:
        if turn == 4:
            await _roll_back_fences(stub)

    publisher, sink = await run_and_compare(
        stub.address, stub.client, agent.metadata.id, between=roll_back, page_bytes=1024
    )
    assert publisher.stats.resyncs == 1
    assert publisher.stats.resync_pages > 3  # the status at turn 4 is several KiB
    assert sink.full == 1  # only the attempt's first (small) status went whole
    held = await stub.running.database.status_pages.count_documents({})
    assert held == 0  # the pages are gone once stored


async def test_a_lost_page_starts_the_resync_over_and_the_status_ends_right(
    own_stubs: OwnStubs,
) -> None:
    stub, _ = await own_stubs.start()
    agent = await stub.client.create_agent("Lost Page Agent", instructions="answer")
    state: dict[str, int | None] = {"armed": 0, "refused": None}

    async def roll_back(turn: int) -> None:
        if turn == 4:
            await _roll_back_fences(stub)
            state["armed"] = 1

    def fault(n: int) -> str:
        if state["armed"] and state["refused"] is None:
            state["refused"] = n  # this delta is answered with a resync; pages follow
        refused = state["refused"]
        return "lose" if refused is not None and n == refused + 2 else "send"

    publisher, sink = await run_and_compare(
        stub.address,
        stub.client,
        agent.metadata.id,
        between=roll_back,
        fault=fault,
        page_bytes=1024,
    )
    assert publisher.stats.resyncs == 1
    assert sink.full == 1


async def test_resync_pages_are_held_until_the_last_one_arrives(stub: Stub, agent_id: str) -> None:
    created = await stub.client.create_execution("hello", agent_id=agent_id)
    execution_id = created.metadata.id
    commands = stub.client.execution_commands
    run = "run-pages/1"
    old = api_pb2.AgentMessage(type=enum_pb2.MESSAGE_AI, content="stored before")
    await commands.updateStatus(
        command_pb2.AgentExecutionUpdateStatusInput(
            execution_id=execution_id,
            status=api_pb2.AgentExecutionStatus(
                phase=enum_pb2.EXECUTION_IN_PROGRESS, messages=[old]
            ),
        ),
        metadata=((fencing.ATTEMPT_HEADER, run), (fencing.SEQ_HEADER, "1")),
        timeout=30,
    )
    new = [api_pb2.AgentMessage(type=enum_pb2.MESSAGE_AI, content=f"resent {i}") for i in range(3)]

    def page(seq: int, position: int, **more: object) -> io_pb2.AgentExecutionStatusDelta:
        return io_pb2.AgentExecutionStatusDelta(
            execution_id=execution_id,
            seq=seq,
            messages=[new[position]],
            message_positions=[position],
            resync_page=True,
            **more,  # type: ignore[arg-type]
        )

    async def send(delta: io_pb2.AgentExecutionStatusDelta) -> io_pb2.StatusDeltaAck:
        metadata = ((fencing.ATTEMPT_HEADER, run), (fencing.SEQ_HEADER, str(delta.seq)))
        ack: io_pb2.StatusDeltaAck = await commands.updateStatusDelta(
            delta, metadata=metadata, timeout=30
        )
        return ack

    assert (await send(page(2, 0))).staged
    assert (await send(page(3, 1))).staged
    between = await stub.client.get_execution(execution_id)
    assert list(between.status.messages) == [old]  # nothing applied yet

    missing = await send(page(5, 2, resync_from=2, phase=enum_pb2.EXECUTION_IN_PROGRESS))
    assert missing.resync  # page 4 never came
    done = await send(page(4, 2, resync_from=2, phase=enum_pb2.EXECUTION_IN_PROGRESS))

    assert done.applied
    assert done.stored_seq == 4
    after = await stub.client.get_execution(execution_id)
    assert list(after.status.messages) == new


async def test_a_delta_appending_text_writes_only_the_tail(stub: Stub, agent_id: str) -> None:
    created = await stub.client.create_execution("hello", agent_id=agent_id)
    execution_id = created.metadata.id
    metadata = ((fencing.ATTEMPT_HEADER, "run-slices/1"), (fencing.SEQ_HEADER, "1"))
    # 3 MiB of messages: sealed slices of at most 1 MiB and a tail (`store/segments.py`).
    messages = [
        api_pb2.AgentMessage(type=enum_pb2.MESSAGE_AI, content=f"{i:03d}" + "x" * 60_000)
        for i in range(50)
    ]
    status = api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_IN_PROGRESS, messages=messages)
    commands = stub.client.execution_commands
    await commands.updateStatus(
        command_pb2.AgentExecutionUpdateStatusInput(execution_id=execution_id, status=status),
        metadata=metadata,
        timeout=30,
    )
    raw = stub.running.database.executions.raw
    stored = await raw.find_one({"_id": execution_id})
    assert stored is not None
    before = stored["segments_messages"]
    assert len(before) >= 2

    delta = io_pb2.AgentExecutionStatusDelta(
        execution_id=execution_id,
        seq=2,
        base_seq=1,
        phase=enum_pb2.EXECUTION_IN_PROGRESS,
        appended_text=" and more",
        appended_position=49,
    )
    ack = await commands.updateStatusDelta(
        delta,
        metadata=((fencing.ATTEMPT_HEADER, "run-slices/1"), (fencing.SEQ_HEADER, "2")),
        timeout=30,
    )

    assert ack.applied
    stored = await raw.find_one({"_id": execution_id})
    assert stored is not None
    assert stored["segments_messages"] == before  # no slice written again
    tail = entries("messages", stored["status_messages"])
    assert api_pb2.AgentMessage.FromString(tail[-1]).content.endswith("x and more")
    read = await stub.client.get_execution(execution_id)
    assert read.status.messages[49].content.endswith("x and more")
    assert read.status.messages[:49] == messages[:49]
