"""`subscribeDeltas` against a real stub (gRPC, MongoDB-wire): folded, it is `get --full`.

The runner's side is the real `StatusBuilder` and `StatusPublisher` (deltas on and off, so the
stub stores both `updateStatusDelta` and whole `updateStatus`); subscribers fold the stream with
the CLI's `ExecutionFold`, and after every update each folded state must equal the execution as
`stigmer get --full` reads it (`whole_execution`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2, query_pb2_grpc
from grpc import aio

from stigmer_cli.changes import ExecutionFold, states
from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_cli.whole import whole_execution
from stigmer_stub import status_wire, subscriptions
from stigmer_stub.store import executions as execution_store
from stigmer_stub.store import segments as segment_store
from stigmer_stub.subscriptions import DeltaSubscriptions, State
from tests.stub.support import Stub
from tests.stub.test_status_deltas import _drain, orchestrator, scripted_turn, settings
from worker.domain.agent_events import ModelTurnEnded, ToolCallRequest, ToolEnded, ToolStarted
from worker.domain.fencing import RunAttempt, attempt_bound
from worker.domain.status_builder import StatusBuilder
from worker.run.status_publisher import StatusPublisher

pytestmark = pytest.mark.integration

Phase = enum_pb2.ExecutionPhase
MessageType = enum_pb2.MessageType
KiB = 1024
MiB = 1024 * KiB


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    agent = await stub.client.create_agent("Subscribed Agent", instructions="answer")
    return agent.metadata.id


@dataclass
class Follower:
    """One subscriber folding its stream in a task; `states` are copies of each whole state."""

    client: StigmerClient
    execution_id: str
    fold: ExecutionFold = field(default_factory=ExecutionFold)
    states: list[api_pb2.AgentExecution] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    heads: int = 0  # changes after the first that carried the execution's head again
    matched: int = 0  # the index of the state `reaches` matched last
    task: asyncio.Task[None] | None = None

    def start(self) -> Follower:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for change in self.client.subscribe_deltas(self.execution_id):
            self.sizes.append(change.ByteSize())
            self.heads += int(change.HasField("execution") and not change.snapshot)
            state = self.fold.apply(change)
            if state is not None:
                copy = api_pb2.AgentExecution()
                copy.CopyFrom(state)
                self.states.append(copy)

    async def reaches(self, expected: api_pb2.AgentExecution, seconds: float = 30) -> None:
        """Wait until a folded state, after the one matched last, is `expected` (fails on
        timeout or a failed stream). Later ones may have arrived already: the runner's next
        update can land between reading `expected` and looking here."""
        async with asyncio.timeout(seconds):
            while True:
                for index in range(self.matched, len(self.states)):
                    if self.states[index] == expected:
                        self.matched = index
                        return
                assert self.task is not None
                if self.task.done():
                    self.task.result()  # raises what ended it
                    raise AssertionError("the stream ended without reaching the state")
                await asyncio.sleep(0.01)

    async def started(self) -> Follower:
        async with asyncio.timeout(20):
            while not self.states:
                await asyncio.sleep(0.01)
        return self

    async def ended(self) -> None:
        assert self.task is not None
        async with asyncio.timeout(20):
            await self.task


async def run_with_followers(
    stub: Stub,
    agent_id: str,
    *,
    deltas: bool,
    followers: int,
    turns: int = 4,
    joining: Callable[[str], Awaitable[None]] | None = None,
) -> list[Follower]:
    """A scripted run published by the real publisher; after each update every follower's
    folded state equals `get --full`."""
    created = await stub.client.create_execution("hello", agent_id=agent_id)
    execution_id = created.metadata.id
    watching = [
        await Follower(stub.client, execution_id).start().started() for _ in range(followers)
    ]
    inner = orchestrator(stub.address)
    builder = StatusBuilder(user_message="hello")
    checked = 0
    try:
        with attempt_bound(RunAttempt("run-" + uuid.uuid4().hex[:8], 1)):
            publisher = StatusPublisher(inner, execution_id, settings(deltas=deltas))
            async with publisher:
                builder.start()

                async def publish() -> None:
                    nonlocal checked
                    publisher.offer(builder.parts)
                    await _drain(publisher)
                    expected = await whole_execution(stub.client, execution_id)
                    for follower in watching:
                        await follower.reaches(expected)
                    checked += 1

                for turn in range(turns):
                    if joining is not None and turn == turns // 2:
                        await joining(execution_id)
                        late = Follower(stub.client, execution_id).start()
                        watching.append(await late.started())
                    await scripted_turn(builder, publish, turn)
                builder.complete()
                assert await publisher.finish(builder.parts)
    finally:
        await inner.close()
    final = await whole_execution(stub.client, execution_id)
    assert final.status.phase == Phase.EXECUTION_COMPLETED
    assert checked >= turns * 9
    assert publisher.stats.deltas_sent > 0 if deltas else publisher.stats.deltas_sent == 0
    for follower in watching:
        await follower.ended()
        assert follower.states[-1] == final
    return watching


async def test_folded_deltas_equal_get_full_after_every_update_for_a_run_sent_as_deltas(
    stub: Stub, agent_id: str
) -> None:
    await run_with_followers(stub, agent_id, deltas=True, followers=1)


async def test_folded_deltas_equal_get_full_after_every_update_for_a_run_sent_whole(
    stub: Stub, agent_id: str
) -> None:
    await run_with_followers(stub, agent_id, deltas=False, followers=1)


async def test_many_subscribers_each_fold_the_same_state_from_the_same_small_changes(
    stub: Stub, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub: DeltaSubscriptions = stub.running.ops.executions.delta_subscriptions
    read_state = hub._state
    compared = 0

    def counted(doc: Any) -> State:
        nonlocal compared
        compared += 1
        return read_state(doc)

    monkeypatch.setattr(hub, "_state", counted)
    watching = await run_with_followers(stub, agent_id, deltas=True, followers=8)

    # Each stored version was read and compared once for the eight subscribers, not once each.
    assert len(watching[0].states) <= compared <= len(watching[0].states) + 1

    first = watching[0]
    assert first.heads == 0  # the spec and metadata did not change: never sent again
    for follower in watching[1:]:
        assert follower.sizes == first.sizes  # the same pages, built once per change
    # After the snapshot, a change carries what changed: a streamed piece re-sends one
    # message, not the transcript.
    final_size = first.states[-1].ByteSize()
    later = first.sizes[1:]
    assert max(later) < final_size
    assert sorted(later)[len(later) // 2] < final_size / 4
    channels = stub.running.ops.executions.delta_subscriptions._channels
    execution_id = first.execution_id
    assert not [key for key in channels if key[0] == execution_id]  # closed with its last one


async def test_a_subscriber_joining_mid_run_starts_from_the_current_state(
    stub: Stub, agent_id: str
) -> None:
    joined: list[api_pb2.AgentExecution] = []

    async def joining(execution_id: str) -> None:
        joined.append(await whole_execution(stub.client, execution_id))

    watching = await run_with_followers(stub, agent_id, deltas=True, followers=1, joining=joining)
    late = watching[-1]
    assert len(late.states) < len(watching[0].states)
    # Nothing was published between reading the execution and subscribing: the late
    # subscriber starts from exactly that state, then follows like the others.
    assert late.states[0] == joined[0]
    assert late.states[-1] == watching[0].states[-1]


def _message(text: str) -> api_pb2.AgentMessage:
    return api_pb2.AgentMessage(type=MessageType.MESSAGE_AI, content=text)


async def test_a_slow_subscriber_gets_a_bounded_queue_then_a_resync(
    stub: Stub, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub: DeltaSubscriptions = stub.running.ops.executions.delta_subscriptions
    monkeypatch.setattr(hub, "queue_messages", 4)
    monkeypatch.setattr(hub, "queue_bytes", 256 * KiB)
    execution_id = (await stub.client.create_execution("slow", agent_id=agent_id)).metadata.id
    # A reader whose transport buffers little (no window growth): the server's writes block
    # once it stops reading, as they would for a subscriber on a slow link.
    link = aio.insecure_channel(stub.address, options=[("grpc.http2.bdp_probe", 0)])
    queries = query_pb2_grpc.AgentExecutionQueryControllerStub(link)
    slow = queries.subscribeDeltas(io_pb2.AgentExecutionId(value=execution_id))
    fold = ExecutionFold()
    first = await slow.read()
    assert isinstance(first, io_pb2.AgentExecutionChange)
    assert fold.apply(first) is not None  # subscribed, then not reading
    fast = Follower(stub.client, execution_id).start()

    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    most_queued = 0
    for i in range(60):
        status.messages.append(_message(f"{i}:" + "z" * 50 * KiB))
        await stub.client.update_status(execution_id, status)
        for channel in hub._channels.values():
            for subscriber in channel.subscribers:
                assert subscriber.bytes <= hub.queue_bytes
                most_queued = max(most_queued, len(subscriber.pending))
    status.phase = Phase.EXECUTION_COMPLETED
    await stub.client.update_status(execution_id, status)
    final = await whole_execution(stub.client, execution_id)

    got: list[io_pb2.AgentExecutionChange] = []
    async with asyncio.timeout(20):
        while (change := await slow.read()) is not aio.EOF:
            assert isinstance(change, io_pb2.AgentExecutionChange)
            got.append(change)
            state = fold.apply(change)
    await link.close()
    assert state == final
    assert fold.resyncs >= 1
    assert any(c.resync and c.snapshot for c in got)
    assert most_queued <= 4
    await fast.ended()
    assert fast.states[-1] == final
    assert fast.fold.resyncs == 0  # a reading subscriber never fell behind


def big_status(messages: int, tool_calls: int, *, each: int) -> api_pb2.AgentExecutionStatus:
    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    for i in range(messages):
        status.messages.append(_message(f"m{i}:" + "x" * each))
    for i in range(tool_calls):
        status.tool_calls.add(id=f"call-{i}", name="read", result=f"r{i}:" + "y" * each)
    return status


@pytest.fixture
async def small_client(stub: Stub) -> AsyncIterator[StigmerClient]:
    async with StigmerClient(stub.address, max_message_bytes=4 * MiB) as client:
        yield client


async def test_a_state_over_four_mib_comes_in_pages_under_four_mib_and_folds_whole(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    execution_id = (await stub.client.create_execution("big", agent_id=agent_id)).metadata.id
    status = big_status(60, 30, each=100 * KiB)  # ~9 MiB
    await stub.client.update_status(execution_id, status)
    follower = Follower(small_client, execution_id).start()
    await follower.reaches(await whole_execution(small_client, execution_id))

    status.messages.append(_message("one more"))
    status.tool_calls[3].result = "changed"
    await stub.client.update_status(execution_id, status)
    await follower.reaches(await whole_execution(small_client, execution_id))
    status.phase = Phase.EXECUTION_COMPLETED
    await stub.client.update_status(execution_id, status)
    await follower.ended()

    final = await whole_execution(small_client, execution_id)
    assert follower.states[-1] == final
    assert final.ByteSize() > 8 * MiB
    assert len(follower.states) == 3
    snapshot_pages = follower.sizes[: len(follower.sizes) - 2]
    assert len(snapshot_pages) >= 3
    assert max(follower.sizes) <= 4 * MiB
    assert max(follower.sizes[-2:]) < 200 * KiB  # the changes: one message, one tool call


async def test_a_run_growing_past_four_mib_folds_to_get_full_after_every_update(
    stub: Stub, agent_id: str, small_client: StigmerClient
) -> None:
    execution_id = (await stub.client.create_execution("long", agent_id=agent_id)).metadata.id
    follower = await Follower(small_client, execution_id).start().started()
    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    for i in range(48):
        status.messages.append(_message(f"{i}:" + "w" * 100 * KiB))
        if i % 3 == 0:
            status.tool_calls.add(id=f"call-{i}", name="read", result="")
        elif status.tool_calls:
            status.tool_calls[-1].result = f"done {i}"
        await stub.client.update_status(execution_id, status)
        await follower.reaches(await whole_execution(small_client, execution_id))
    status.phase = Phase.EXECUTION_COMPLETED
    await stub.client.update_status(execution_id, status)
    await follower.ended()

    final = await whole_execution(small_client, execution_id)
    assert final.ByteSize() > 4 * MiB
    assert follower.states[-1] == final
    assert len(follower.states) == 50
    assert max(follower.sizes) <= 4 * MiB
    assert max(follower.sizes[1:]) < 110 * KiB  # each change: one new message, one call


async def test_a_finished_execution_sends_its_state_and_ends(stub: Stub, agent_id: str) -> None:
    execution_id = (await stub.client.create_execution("done", agent_id=agent_id)).metadata.id
    await stub.client.update_status(
        execution_id,
        api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED, messages=[_message("a")]),
    )
    follower = Follower(stub.client, execution_id).start()
    await follower.ended()
    assert follower.states == [await stub.client.get_execution(execution_id)]


async def test_an_unknown_execution_is_not_found(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as failed:
        async with asyncio.timeout(20):
            async for _ in stub.client.subscribe_deltas("aex-unknown"):
                pass
    assert failed.value.code == grpc.StatusCode.NOT_FOUND


async def test_states_follow_a_run_through_subscribe_deltas(stub: Stub, agent_id: str) -> None:
    execution_id = (await stub.client.create_execution("cli", agent_id=agent_id)).metadata.id
    seen: list[int] = []

    async def follow() -> None:
        async for state in states(stub.client, execution_id):
            seen.append(len(state.status.messages))

    task = asyncio.create_task(follow())
    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    for i in range(5):
        await asyncio.sleep(0.05)
        status.messages.append(_message(str(i)))
        await stub.client.update_status(execution_id, status)
    status.phase = Phase.EXECUTION_COMPLETED
    await stub.client.update_status(execution_id, status)
    async with asyncio.timeout(20):
        await task
    assert seen[-1] == 5
    assert seen == sorted(seen)


async def test_a_failed_change_stream_ends_its_subscribers_unavailable(
    stub: Stub, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub: DeltaSubscriptions = stub.running.ops.executions.delta_subscriptions
    execution_id = (await stub.client.create_execution("fails", agent_id=agent_id)).metadata.id
    follower = await Follower(stub.client, execution_id).start().started()

    def broken(doc: Any) -> State:
        raise RuntimeError("fake: the store's answer cannot be read")

    monkeypatch.setattr(hub, "_state", broken)
    await stub.client.update_status(
        execution_id, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    )
    with pytest.raises(RpcFailed) as failed:
        await follower.ended()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert not [key for key in hub._channels if key[0] == execution_id]


@dataclass
class _Work:
    """Entries parsed (anywhere in the stub's store and channels) and slice documents read
    (from the cache or the database), counted by wrapping the real functions."""

    parsed: int = 0
    slices_read: int = 0

    @classmethod
    def counting(cls, hub: DeltaSubscriptions, monkeypatch: pytest.MonkeyPatch) -> _Work:
        work = cls()
        segments = hub.executions.segments
        real_read = segments.read

        def counting_entries(name: str, data: bytes) -> list[bytes]:
            found = status_wire.entries(name, data)
            work.parsed += len(found)
            return found

        async def counting_read(refs: Sequence[Mapping[str, Any]]) -> bytes | None:
            work.slices_read += len(refs)
            return await real_read(refs)

        monkeypatch.setattr(execution_store, "entries", counting_entries)
        monkeypatch.setattr(subscriptions, "entries", counting_entries, raising=False)
        monkeypatch.setattr(segments, "read", counting_read)
        return work


async def _shows_last(follower: Follower, text: str) -> None:
    """Wait until the follower's newest state ends with a message of `text`."""
    async with asyncio.timeout(20):
        while True:
            messages = follower.states[-1].status.messages if follower.states else []
            if messages and messages[-1].content == text:
                return
            await asyncio.sleep(0.01)


async def test_the_work_per_delta_update_does_not_grow_with_the_transcript(
    stub: Stub, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per delta update the channel reads and parses what the write touched (the tail, a new
    slice), not the transcript: counted by entries parsed and slices read while a run grows
    to dozens of sealed slices."""
    hub: DeltaSubscriptions = stub.running.ops.executions.delta_subscriptions
    counted = _Work.counting(hub, monkeypatch)

    execution_id = (await stub.client.create_execution("grows", agent_id=agent_id)).metadata.id
    follower = await Follower(stub.client, execution_id).start().started()
    inner = orchestrator(stub.address)
    builder = StatusBuilder(user_message="hello")
    work: list[tuple[int, int]] = []  # per update: (entries parsed, slices read)
    try:
        with attempt_bound(RunAttempt("run-" + uuid.uuid4().hex[:8], 1)):
            publisher = StatusPublisher(inner, execution_id, settings(deltas=True))
            async with publisher:
                builder.start()
                for turn in range(48):
                    before = (counted.parsed, counted.slices_read)
                    text = f"{turn}:" + "x" * 3000
                    builder.apply(ModelTurnEnded(message_id=f"m{turn}", text=text))
                    publisher.offer(builder.parts)
                    await _drain(publisher)
                    await _shows_last(follower, text)
                    work.append((counted.parsed - before[0], counted.slices_read - before[1]))
                builder.complete()
                assert await publisher.finish(builder.parts)
    finally:
        await inner.close()
    await follower.ended()
    final = await whole_execution(stub.client, execution_id)
    assert follower.states[-1] == final
    assert publisher.stats.deltas_sent > 0
    stored = await hub.executions.raw.find_one({"_id": execution_id})
    assert stored is not None
    assert len(stored["segments_messages"]) >= 16  # the transcript is dozens of slices
    assert len(final.status.messages) > 48
    # The last updates cost what the first ones did: a few tail entries and at most one new
    # slice each, where comparing the whole would parse every one of the 49 messages.
    late = work[-12:]
    assert max(entries for entries, _ in late) <= 10, work
    assert max(read for _, read in late) <= 1, work


async def test_deltas_that_rewrite_and_merge_sealed_slices_fold_to_get_full(
    stub: Stub, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tool calls end after they were sealed in a slice (the slice is written again under a
    new id) and small slices are merged often: the channel, which reads only the slices a write
    references anew, still folds to `get --full` after every update."""
    monkeypatch.setattr(segment_store, "MERGE_AT", 3)
    monkeypatch.setattr(execution_store, "MERGE_AT", 3)
    hub: DeltaSubscriptions = stub.running.ops.executions.delta_subscriptions
    told, read_whole = hub.told, hub.read_whole
    execution_id = (await stub.client.create_execution("edits", agent_id=agent_id)).metadata.id
    follower = await Follower(stub.client, execution_id).start().started()
    inner = orchestrator(stub.address)
    builder = StatusBuilder(user_message="hello")
    try:
        with attempt_bound(RunAttempt("run-" + uuid.uuid4().hex[:8], 1)):
            publisher = StatusPublisher(inner, execution_id, settings(deltas=True))
            async with publisher:

                async def publish() -> None:
                    publisher.offer(builder.parts)
                    await _drain(publisher)
                    await follower.reaches(await whole_execution(stub.client, execution_id))

                builder.start()
                calls: list[ToolCallRequest] = []
                for turn in range(24):
                    call = ToolCallRequest(
                        id=f"call-{turn}", name="execute", args={"command": "y" * 3000}
                    )
                    calls.append(call)
                    text = f"{turn}:" + "x" * 3000
                    builder.apply(
                        ModelTurnEnded(message_id=f"m{turn}", text=text, tool_calls=(call,))
                    )
                    builder.apply(ToolStarted(tool_call_id=call.id, name=call.name, args=call.args))
                    await publish()
                    if turn >= 5:
                        old = calls[turn - 5]  # sealed by now
                        builder.apply(ToolEnded(tool_call_id=old.id, name=old.name, result="done"))
                        await publish()
                for old in calls[-5:]:
                    builder.apply(ToolEnded(tool_call_id=old.id, name=old.name, result="done"))
                    await publish()
                builder.complete()
                assert await publisher.finish(builder.parts)
    finally:
        await inner.close()
    await follower.ended()
    final = await whole_execution(stub.client, execution_id)
    assert follower.states[-1] == final
    assert publisher.stats.deltas_sent > 0
    stored = await stub.running.ops.executions.delta_subscriptions.executions.raw.find_one(
        {"_id": execution_id}
    )
    assert stored is not None
    assert any(int(ref.get("level", 1)) == 1 for ref in stored["segments_tool_calls"])
    # Each update was caught up with before the next: every version, rewritten and merged
    # slices included, was told by what its write touched, none read whole.
    assert hub.told - told >= 40
    assert hub.read_whole - read_whole <= 2


async def test_a_write_the_channel_cannot_attribute_is_read_whole_and_still_folds(
    stub: Stub, agent_id: str
) -> None:
    """A document without its slice counts (an earlier stub's layout, made here by removing
    them in the database) cannot be told by what its write touched: the channel reads it
    whole, and the folded state is still `get --full`."""
    hub: DeltaSubscriptions = stub.running.ops.executions.delta_subscriptions
    execution_id = (await stub.client.create_execution("older", agent_id=agent_id)).metadata.id
    follower = await Follower(stub.client, execution_id).start().started()
    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    for i in range(8):
        status.messages.append(_message(f"{i}:" + "v" * 3000))
        await stub.client.update_status(execution_id, status)
        await follower.reaches(await whole_execution(stub.client, execution_id))
    told, read_whole = hub.told, hub.read_whole
    counts = [*execution_store.SEALED_FIELDS.values(), *execution_store.LOOSE_FIELDS.values()]
    await hub.executions.raw.update_one(
        {"_id": execution_id},
        {"$unset": dict.fromkeys(counts, ""), "$inc": {"version": 1}},
    )
    status.messages[1].content = "changed in a sealed slice"
    status.messages.append(_message("after the older layout"))
    await stub.client.update_status(execution_id, status)
    await follower.reaches(await whole_execution(stub.client, execution_id))
    assert hub.read_whole > read_whole  # the version without its counts, read whole
    status.messages.append(_message("and one more"))
    status.phase = Phase.EXECUTION_COMPLETED
    await stub.client.update_status(execution_id, status)
    await follower.ended()
    assert follower.states[-1] == await whole_execution(stub.client, execution_id)
    assert hub.told > told  # the layout is back after the update: told again
