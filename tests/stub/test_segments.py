"""Long status lists live in sealed slices plus a short tail, so an execution's document stays
small and an update writes what it changes.

Against the real store: what the documents hold, what each update (whole or delta) writes,
writers that lose the compare-and-swap, reads that meet a slice removed by a newer version, and
documents of earlier stubs.
"""

from __future__ import annotations

import bson
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2, enum_pb2, io_pb2

from stigmer_stub import fencing
from stigmer_stub.status_wire import LISTS, chunk, entries
from stigmer_stub.store.executions import StoredList
from stigmer_stub.store.segments import (
    KEEP_BYTES,
    LAST_ENTRY_BYTES,
    MERGE_AT,
    SLICE_BYTES,
    TAIL_BYTES,
    slices,
    to_seal,
)
from stigmer_stub.windows import window_of
from tests.stub.support import Stub

pytestmark = pytest.mark.integration
MessageType = enum_pb2.MessageType
KiB = 1024


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    return (await stub.client.create_agent("Slices Agent", instructions="answer")).metadata.id


@pytest.fixture
async def execution_id(stub: Stub, agent_id: str) -> str:
    return (await stub.client.create_execution("long", agent_id=agent_id)).metadata.id


def status(messages: int, each: int = 10 * KiB) -> api_pb2.AgentExecutionStatus:
    built = api_pb2.AgentExecutionStatus()
    for i in range(messages):
        built.messages.add(type=MessageType.MESSAGE_AI, content=f"{i}:" + "x" * each)
    return built


async def slice_ids(stub: Stub, execution_id: str) -> set[str]:
    segments = stub.running.database.executions.segments.raw
    return {str(d["_id"]) async for d in segments.find({"execution_id": execution_id})}


async def document(stub: Stub, execution_id: str) -> dict[str, object]:
    doc = await stub.running.database.executions.raw.find_one({"_id": execution_id})
    assert doc is not None
    return doc


def assert_tail_bounded(tail: object) -> None:
    """A tail is at most `TAIL_BYTES`, unless it is one entry (of at most `LAST_ENTRY_BYTES`)."""
    assert isinstance(tail, bytes)
    assert len(tail) <= TAIL_BYTES or len(entries("messages", tail)) == 1
    assert len(tail) <= LAST_ENTRY_BYTES + 8


def test_slices_are_cut_from_the_start_within_the_bound() -> None:
    entries = [b"a" * 400 * KiB] * 5 + [b"b" * 2 * SLICE_BYTES]

    cut = slices(entries)

    assert [len(part) for part in cut] == [2, 2, 1, 1]
    assert [entry for part in cut for entry in part] == entries
    assert slices(entries[:-1]) == cut[:-1]  # an append leaves the earlier slices as they were


async def test_a_long_list_leaves_the_document_for_slices_and_reads_back_whole(
    stub: Stub, execution_id: str
) -> None:
    full = status(400)  # ~4 MiB of messages

    await stub.client.update_status(execution_id, full)

    doc = await document(stub, execution_id)
    assert len(bson.encode(doc)) < 32 * KiB
    assert_tail_bounded(doc["status_messages"])
    refs = doc["segments_messages"]
    assert isinstance(refs, list)
    assert len(refs) >= 4
    assert await slice_ids(stub, execution_id) == {r["id"] for r in refs}
    stored = await stub.running.database.executions.get(execution_id)
    assert list(stored.status.messages) == list(full.messages)


async def test_an_appended_message_keeps_every_slice_and_seals_at_most_one(
    stub: Stub, execution_id: str
) -> None:
    full = status(400)
    await stub.client.update_status(execution_id, full)
    before = await slice_ids(stub, execution_id)
    refs_before = (await document(stub, execution_id))["segments_messages"]

    full.messages.add(type=MessageType.MESSAGE_AI, content="one more")
    await stub.client.update_status(execution_id, full)

    after = await slice_ids(stub, execution_id)
    assert before <= after
    assert len(after - before) <= 1
    doc = await document(stub, execution_id)
    refs_after = doc["segments_messages"]
    assert isinstance(refs_before, list)
    assert isinstance(refs_after, list)
    assert refs_after[: len(refs_before)] == refs_before
    assert_tail_bounded(doc["status_messages"])
    stored = await stub.running.database.executions.get(execution_id)
    assert list(stored.status.messages) == list(full.messages)


async def test_an_edit_of_an_early_entry_writes_its_slice_again_from_there_on(
    stub: Stub, execution_id: str
) -> None:
    full = status(400)
    await stub.client.update_status(execution_id, full)
    refs_before = (await document(stub, execution_id))["segments_messages"]
    assert isinstance(refs_before, list)
    assert len(refs_before) >= 4

    full.messages[250].content = "edited"
    await stub.client.update_status(execution_id, full)

    refs_after = (await document(stub, execution_id))["segments_messages"]
    assert isinstance(refs_after, list)
    assert refs_after[:2] == refs_before[:2]  # slices wholly before the edit are kept
    assert await slice_ids(stub, execution_id) == {r["id"] for r in refs_after}
    stored = await stub.running.database.executions.get(execution_id)
    assert list(stored.status.messages) == list(full.messages)


async def test_a_list_that_shrinks_below_the_bound_goes_back_into_the_document(
    stub: Stub, execution_id: str
) -> None:
    await stub.client.update_status(execution_id, status(400))
    short = status(2, each=1 * KiB)
    assert short.ByteSize() < TAIL_BYTES

    await stub.client.update_status(execution_id, short)

    doc = await document(stub, execution_id)
    assert doc["segments_messages"] == []
    assert doc["status_messages"] != b""
    assert await slice_ids(stub, execution_id) == set()
    stored = await stub.running.database.executions.get(execution_id)
    assert list(stored.status.messages) == list(short.messages)


async def test_a_read_of_an_older_version_whose_slice_is_gone_reads_the_current_one(
    stub: Stub, execution_id: str
) -> None:
    full = status(400)
    await stub.client.update_status(execution_id, full)
    old = await document(stub, execution_id)
    full.messages[0].content = "edited"  # every slice is cut again: the old ones are removed
    full.messages.add(type=MessageType.MESSAGE_AI, content="newer")
    await stub.client.update_status(execution_id, full)
    executions = stub.running.database.executions
    executions.segments._cache.clear()  # as another stub process would: nothing in memory

    hydrated = await executions.hydrate(dict(old))

    assert hydrated is not None
    assert hydrated["version"] == int(str(old["version"])) + 1
    assert executions.decode_document(hydrated).status.messages[-1].content == "newer"


async def test_deleting_an_execution_removes_its_slices(stub: Stub, execution_id: str) -> None:
    finished = status(400)
    finished.phase = enum_pb2.EXECUTION_COMPLETED
    await stub.client.update_status(execution_id, finished)
    assert await slice_ids(stub, execution_id)

    await stub.client.delete_execution(execution_id)

    assert await slice_ids(stub, execution_id) == set()


async def test_an_update_reply_stays_within_the_reply_budget(stub: Stub, execution_id: str) -> None:
    reply = await stub.client.update_status(execution_id, status(600))  # ~6 MiB

    assert reply.ByteSize() <= 4 * 1024 * KiB
    assert window_of(reply.status.messages[0]) is not None


def test_only_the_slices_before_a_changed_entry_are_kept() -> None:
    from stigmer_stub.store.executions import _kept_slices
    from stigmer_stub.store.segments import Ref

    entries = [bytes([i % 251]) * (100 * KiB) for i in range(40)]  # four slices of ten
    refs: list[Ref] = []
    for part in slices(entries):
        refs.append({"id": "x", "length": len(chunk("messages", part)), "count": len(part)})
    old = chunk("messages", entries)
    appended = chunk("messages", [*entries, b"new"])
    changed = chunk("messages", [*entries[:25], b"edited", *entries[26:]])  # in the third

    assert len(refs) == 4
    assert _kept_slices(refs, old, appended) == (4, len(old))
    assert _kept_slices(refs, old, changed) == (2, refs[0]["length"] + refs[1]["length"])
    assert _kept_slices(refs, old, chunk("messages", entries[1:])) == (0, 0)


def test_a_tail_is_sealed_down_to_its_newest_entries_keeping_the_last() -> None:
    small = [b"s" * 1000] * 40
    assert to_seal(small) == 40 - KEEP_BYTES // 1006
    assert to_seal([*small, b"l" * (2 * KEEP_BYTES)]) == 40  # only the last stays
    assert to_seal([b"x"]) == 0
    assert to_seal([]) == 0
    assert to_seal([b"x", b"h" * (LAST_ENTRY_BYTES + 1)]) == 2  # too large to stay: all sealed


async def test_an_update_of_the_spec_keeps_the_sliced_lists_and_writes_no_slice(
    stub: Stub, execution_id: str
) -> None:
    full = status(400)
    await stub.client.update_status(execution_id, full)
    before = await slice_ids(stub, execution_id)
    stored = await stub.running.database.executions.get(execution_id)
    stored.metadata.name = "renamed"

    await stub.client.execution_commands.update(stored)

    assert await slice_ids(stub, execution_id) == before
    after = await stub.running.database.executions.get(execution_id)
    assert after.metadata.name == "renamed"
    assert list(after.status.messages) == list(full.messages)


def _delta(execution_id: str, seq: int, **fields: object) -> io_pb2.AgentExecutionStatusDelta:
    return io_pb2.AgentExecutionStatusDelta(
        execution_id=execution_id,
        seq=seq,
        base_seq=seq - 1,
        phase=enum_pb2.EXECUTION_IN_PROGRESS,
        **fields,  # type: ignore[arg-type]
    )


async def _send_delta(
    stub: Stub, run: str, delta: io_pb2.AgentExecutionStatusDelta
) -> io_pb2.StatusDeltaAck:
    metadata = ((fencing.ATTEMPT_HEADER, run), (fencing.SEQ_HEADER, str(delta.seq)))
    ack: io_pb2.StatusDeltaAck = await stub.client.execution_commands.updateStatusDelta(
        delta, metadata=metadata, timeout=30
    )
    return ack


async def _first_update(stub: Stub, execution_id: str, run: str) -> None:
    await stub.client.execution_commands.updateStatus(
        command_pb2.AgentExecutionUpdateStatusInput(
            execution_id=execution_id,
            status=api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_IN_PROGRESS),
        ),
        metadata=((fencing.ATTEMPT_HEADER, run), (fencing.SEQ_HEADER, "1")),
        timeout=30,
    )


async def test_deltas_seal_small_slices_merge_them_and_keep_the_document_small(
    stub: Stub, execution_id: str
) -> None:
    run = "run-seal/1"
    await _first_update(stub, execution_id, run)
    sent: list[api_pb2.AgentMessage] = []
    most_refs = 0
    merged = 0
    seen: set[str] = set()
    for seq in range(2, 452):
        message = api_pb2.AgentMessage(type=MessageType.MESSAGE_AI, content=f"{seq}:" + "y" * 900)
        sent.append(message)
        ack = await _send_delta(
            stub,
            run,
            _delta(execution_id, seq, messages=[message], message_positions=[len(sent) - 1]),
        )
        assert ack.applied
        ids = await slice_ids(stub, execution_id)
        doc = await document(stub, execution_id)
        refs = doc.get("segments_messages") or []
        assert isinstance(refs, list)
        assert ids == {r["id"] for r in refs}  # nothing written is left unreferenced
        if not seen <= ids:
            merged += 1  # small slices were merged into one: the only rewrite
        seen = ids
        assert doc["sealed_messages"] == sum(r["count"] for r in refs)
        assert doc["loose_messages"] == sum(1 for r in refs if r["level"] == 0)
        assert_tail_bounded(doc["status_messages"])
        most_refs = max(most_refs, len(refs))

    assert merged >= 1
    # Small slices of ~6 KiB are merged MERGE_AT at a time: far fewer references than seals.
    merged_size = MERGE_AT * (KEEP_BYTES + 2 * KiB)
    assert most_refs <= MERGE_AT + 1 + 450 * KiB // merged_size
    stored = await stub.running.database.executions.get(execution_id)
    assert list(stored.status.messages) == sent


async def test_a_delta_replacing_a_sealed_entry_writes_only_its_slice(
    stub: Stub, execution_id: str
) -> None:
    run = "run-sealed-edit/1"
    await _first_update(stub, execution_id, run)
    calls = [
        api_pb2.ToolCall(id=f"call-{i}", name="shell", status=enum_pb2.TOOL_CALL_RUNNING)
        for i in range(120)
    ]
    for call in calls:
        call.args["pad"] = "z" * 400
    ack = await _send_delta(
        stub,
        run,
        _delta(execution_id, 2, tool_calls=calls, tool_call_positions=list(range(len(calls)))),
    )
    assert ack.applied
    doc = await document(stub, execution_id)
    refs_before = doc["segments_tool_calls"]
    assert isinstance(refs_before, list)
    assert len(refs_before) >= 1
    first = refs_before[0]
    done = api_pb2.ToolCall()
    done.CopyFrom(calls[0])
    done.status = enum_pb2.TOOL_CALL_COMPLETED
    tail_before = doc["status_tool_calls"]

    ack = await _send_delta(
        stub, run, _delta(execution_id, 3, tool_calls=[done], tool_call_positions=[0])
    )

    assert ack.applied
    doc = await document(stub, execution_id)
    refs_after = doc["segments_tool_calls"]
    assert isinstance(refs_after, list)
    assert refs_after[0]["id"] != first["id"]
    assert refs_after[1:] == refs_before[1:]
    assert doc["status_tool_calls"] == tail_before
    assert await slice_ids(stub, execution_id) == {r["id"] for r in refs_after}
    stored = await stub.running.database.executions.get(execution_id)
    assert list(stored.status.tool_calls) == [done, *calls[1:]]


async def test_a_delta_that_loses_the_race_removes_the_slice_it_sealed(
    stub: Stub, execution_id: str
) -> None:
    """Another process writes between this writer's read and its compare-and-swap: the slice
    this writer sealed is removed, and its retry applies on the newer document."""
    run = "run-race/1"
    await _first_update(stub, execution_id, run)
    executions = stub.running.database.executions
    raw = executions.raw
    messages = [
        api_pb2.AgentMessage(type=MessageType.MESSAGE_AI, content=f"{i}:" + "w" * 900)
        for i in range(20)
    ]
    real_write = StoredList.write
    raced = False

    async def write_then_race(
        self: StoredList, segments: object, eid: str, written: list[str]
    ) -> object:
        nonlocal raced
        done = await real_write(self, segments, eid, written)  # type: ignore[arg-type]
        if not raced and self.name == "messages":
            raced = True
            # Another process's write: the version moves on under this writer.
            await raw.update_one({"_id": eid}, {"$inc": {"version": 1}})
        return done

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StoredList, "write", write_then_race)
        ack = await _send_delta(
            stub,
            run,
            _delta(execution_id, 2, messages=messages, message_positions=list(range(20))),
        )

    assert raced
    assert ack.applied
    doc = await document(stub, execution_id)
    refs = doc["segments_messages"]
    assert isinstance(refs, list)
    assert refs
    assert await slice_ids(stub, execution_id) == {r["id"] for r in refs}  # no orphan
    stored = await executions.get(execution_id)
    assert list(stored.status.messages) == messages


async def test_a_document_of_an_earlier_stub_reads_and_takes_deltas(
    stub: Stub, execution_id: str
) -> None:
    """1 MiB slices whose references count no entries, the list field empty: read as they
    are, and a delta on them is merged whole once (the document then has the new form)."""
    run = "run-legacy/1"
    full = status(300)
    full.phase = enum_pb2.EXECUTION_IN_PROGRESS
    await stub.client.execution_commands.updateStatus(
        command_pb2.AgentExecutionUpdateStatusInput(execution_id=execution_id, status=full),
        metadata=((fencing.ATTEMPT_HEADER, run), (fencing.SEQ_HEADER, "1")),
        timeout=30,
    )
    executions = stub.running.database.executions
    # Rewrite the document as an earlier stub left it: every entry in uncounted slices.
    every = [m.SerializeToString() for m in full.messages]
    for ref in (await document(stub, execution_id))["segments_messages"]:  # type: ignore[attr-defined]
        await executions.segments.raw.delete_one({"_id": ref["id"]})
    old_refs = []
    for index, part in enumerate(slices(every)):
        data = chunk("messages", part)
        segment_id = f"{execution_id}:messages:legacy{index}"
        await executions.segments.raw.insert_one(
            {"_id": segment_id, "execution_id": execution_id, "data": data}
        )
        old_refs.append({"id": segment_id, "sha256": "-", "length": len(data)})
    await executions.raw.update_one(
        {"_id": execution_id},
        {
            "$set": {"segments_messages": old_refs, "status_messages": b""},
            "$unset": {f"sealed_{name}": "" for name in LISTS},
            "$inc": {"version": 1},
        },
    )
    executions.segments._cache.clear()

    assert list((await executions.get(execution_id)).status.messages) == list(full.messages)
    more = api_pb2.AgentMessage(type=MessageType.MESSAGE_AI, content="after the upgrade")
    ack = await _send_delta(
        stub, run, _delta(execution_id, 2, messages=[more], message_positions=[300])
    )

    assert ack.applied
    doc = await document(stub, execution_id)
    refs = doc["segments_messages"]
    assert isinstance(refs, list)
    assert all("count" in ref for ref in refs)
    assert [r["id"] for r in refs[: len(old_refs) - 1]] == [r["id"] for r in old_refs[:-1]]
    assert list((await executions.get(execution_id)).status.messages) == [*full.messages, more]
