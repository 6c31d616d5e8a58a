"""Status deltas without a network: the runner's tracker and the stub's application of a delta.

A delta computed by `DeltaTracker` and applied by `stigmer_stub.deltas` on the stored lists must
give back the runner's status exactly, whatever changed in between.
"""

from __future__ import annotations

from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2

from stigmer_stub import deltas as stub_deltas
from stigmer_stub import fencing as stub_fencing
from stigmer_stub.status_wire import LISTS, SplitStatus, chunk
from worker.domain.agent_events import (
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
    Usage,
)
from worker.domain.status_builder import StatusBuilder
from worker.domain.status_delta import DeltaTracker, StatusParts, resync_pages, status_digest
from worker.domain.update_policy import UpdatePolicy


def stored_chunks(status: api_pb2.AgentExecutionStatus) -> dict[str, bytes]:
    """The lists of a status as the stub stores them (one chunk per list)."""
    from stigmer_stub.status_wire import split_status

    split = split_status(status)
    return {name: chunk(name, split.lists[name]) for name in LISTS}


def apply(status: api_pb2.AgentExecutionStatus, raw: bytes) -> api_pb2.AgentExecutionStatus:
    """The stub's application of a delta on a stored status, without the store around it."""
    delta = io_pb2.AgentExecutionStatusDelta.FromString(raw)
    lists = stub_deltas.applied_lists(delta, raw, stored_chunks(status))
    rest = stub_deltas.rest_of(delta)
    stub_deltas.check_digest(delta, rest, SplitStatus(rest, lists))
    result = api_pb2.AgentExecutionStatus()
    result.CopyFrom(rest)
    for name in LISTS:
        result.MergeFromString(chunk(name, lists[name]))
    return result


def todos(*items: tuple[str, str]) -> dict[str, Any]:
    return {"todos": [{"content": c, "status": s} for c, s in items]}


def test_a_streamed_answer_travels_as_appended_text() -> None:
    builder = StatusBuilder(user_message="hi")
    builder.start()
    builder.apply(TokenDelta(message_id="m1", text="The answer "))
    tracker = DeltaTracker()
    first = builder.parts()
    tracker.acknowledged(first, 1)
    stored = first.encoded().message()
    builder.apply(TokenDelta(message_id="m1", text="is 42."))

    delta = tracker.delta("aex-1", builder.parts(), 2)

    parsed = io_pb2.AgentExecutionStatusDelta.FromString(delta.data)
    assert parsed.appended_text == "is 42."
    assert parsed.appended_position == 1
    assert len(parsed.messages) == 0
    assert apply(stored, delta.data) == builder.parts().encoded().message()


def test_deltas_applied_in_turn_rebuild_the_status_field_by_field() -> None:
    builder = StatusBuilder(user_message="plan and do")
    builder.start()
    tracker = DeltaTracker()
    parts = builder.parts()
    tracker.acknowledged(parts, 1)
    stored = parts.encoded().message()
    steps: list[Any] = []
    for turn in range(5):
        key = f"m{turn}"
        steps += [TokenDelta(message_id=key, text=f"step {turn} "), TokenDelta(key, "more")]
        calls = (
            ToolCallRequest(
                id=f"t{turn}",
                name="write_todos",
                args=todos(*((f"do {i}", "pending") for i in range(turn + 1))),
            ),
            ToolCallRequest(id=f"x{turn}", name="execute", args={"command": "ls"}),
        )
        steps.append(
            ModelTurnEnded(
                key, f"step {turn} more", calls, usage=Usage(input_tokens=3, output_tokens=2)
            )
        )
        steps += [ToolStarted(c.id, c.name, c.args) for c in calls]
        steps += [ToolEnded(c.id, c.name, result=f"done {turn}") for c in calls]
    seq = 1
    for step in steps:
        builder.apply(step)
        seq += 1
        delta = tracker.delta("aex-1", builder.parts(), seq)
        stored = apply(stored, delta.data)
        tracker.acknowledged(builder.parts(), seq)
    builder.complete()
    final = tracker.delta("aex-1", builder.parts(), seq + 1, final=True)
    stored = apply(stored, final.data)

    assert stored == builder.snapshot()
    assert len(stored.todos) == 5
    assert status_digest(stored) == status_digest(builder.snapshot())


def test_resync_pages_stay_under_the_page_size_and_rebuild_the_status_in_order() -> None:
    builder = StatusBuilder(user_message="a long run")
    builder.start()
    for turn in range(40):
        key = f"m{turn}"
        call = ToolCallRequest(id=f"x{turn}", name="execute", args={"command": "ls"})
        builder.apply(ModelTurnEnded(key, f"turn {turn} " + "t" * 300, (call,)))
        builder.apply(ToolStarted(call.id, call.name, call.args))
        builder.apply(ToolEnded(call.id, call.name, result="r" * 500))
    plan = ToolCallRequest(
        id="w", name="write_todos", args=todos(("first", "pending"), ("second", "pending"))
    )
    builder.apply(ModelTurnEnded("plan", "planning", (plan,)))
    builder.apply(ToolStarted(plan.id, plan.name, plan.args))
    builder.apply(ToolEnded(plan.id, plan.name, result="ok"))
    builder.complete()
    parts = builder.parts()
    page_bytes = 72 * 1024  # 8 KiB of entries per page, past the 64 KiB kept for framing
    assert parts.size > 3 * 8 * 1024

    pages = resync_pages("aex-1", parts, 7, final=True, page_bytes=page_bytes)

    assert len(pages) > 3
    assert [p.seq for p in pages] == list(range(7, 7 + len(pages)))
    assert all(len(p.data) <= page_bytes for p in pages)
    assert [p.final for p in pages] == [False] * (len(pages) - 1) + [True]
    lists: dict[str, list[bytes]] = {name: [] for name in LISTS}
    for page in pages:
        delta = io_pb2.AgentExecutionStatusDelta.FromString(page.data)
        assert delta.resync_page
        assert delta.resync_from == (7 if page is pages[-1] else 0)
        new_todos = stub_deltas.apply_lists(delta, page.data, lists)
        if new_todos is not None:
            lists["todos"] = new_todos
    last = io_pb2.AgentExecutionStatusDelta.FromString(pages[-1].data)
    rest = stub_deltas.rest_of(last)
    stub_deltas.check_digest(last, rest, SplitStatus(rest, lists))  # raises if it differs
    rebuilt = api_pb2.AgentExecutionStatus()
    rebuilt.CopyFrom(rest)
    for name in LISTS:
        rebuilt.MergeFromString(chunk(name, lists[name]))
    assert rebuilt == builder.snapshot()
    assert len(rebuilt.todos) == 2


def test_a_final_digest_that_differs_asks_for_a_resync() -> None:
    builder = StatusBuilder(user_message="hi")
    builder.start()
    tracker = DeltaTracker()
    tracker.acknowledged(builder.parts(), 1)
    stored = builder.parts().encoded().message()
    stored.messages[0].content = "changed behind the runner's back"
    builder.complete()

    delta = tracker.delta("aex-1", builder.parts(), 2, final=True)

    with pytest.raises(stub_deltas.DeltaRefused) as refused:
        apply(stored, delta.data)
    assert refused.value.ack.resync


def test_a_replaced_entry_with_another_id_asks_for_a_resync() -> None:
    builder = StatusBuilder(user_message="hi")
    builder.start()
    builder.apply(ToolStarted("a", "execute", {"command": "ls"}))
    tracker = DeltaTracker()
    tracker.acknowledged(builder.parts(), 1)
    stored = builder.parts().encoded().message()
    stored.tool_calls[0].id = "b"
    builder.apply(ToolEnded("a", "execute", result="ok"))

    with pytest.raises(stub_deltas.DeltaRefused):
        apply(stored, tracker.delta("aex-1", builder.parts(), 2).data)


FENCE = {"runs": ["run-1"], "attempt": 2, "seq": 7}


@pytest.mark.parametrize(
    ("attempt", "seq", "base", "outcome"),
    [
        ("run-1/2", 8, 7, "apply"),
        ("run-1/2", 7, 6, "duplicate"),
        ("run-1/2", 5, 4, "duplicate"),
        ("run-1/2", 9, 8, "resync"),  # a gap: update 8 never arrived
        ("run-1/2", 9, 6, "resync"),  # applies on an older update than the stored one
        ("run-1/3", 1, 0, "resync"),  # a newer attempt starts with the whole status
        ("run-2/1", 2, 1, "resync"),
        (None, 8, 7, "resync"),
    ],
)
def test_the_order_check(attempt: str | None, seq: int, base: int, outcome: str) -> None:
    delta = io_pb2.AgentExecutionStatusDelta(execution_id="aex-1", seq=seq, base_seq=base)
    metadata = [] if attempt is None else [(stub_fencing.ATTEMPT_HEADER, attempt)]
    metadata.append((stub_fencing.SEQ_HEADER, str(seq)))
    parsed = stub_fencing.from_metadata(metadata)
    if outcome == "apply":
        stub_deltas.check_order(FENCE, parsed, delta)
        return
    with pytest.raises(stub_deltas.DeltaRefused) as refused:
        stub_deltas.check_order(FENCE, parsed, delta)
    assert refused.value.ack.duplicate == (outcome == "duplicate")
    assert refused.value.ack.resync == (outcome == "resync")


def test_parts_join_into_the_encoded_status() -> None:
    builder = StatusBuilder(user_message="hi")
    builder.start()
    builder.apply(ToolStarted("w", "write_todos", todos(("a", "pending"), ("b", "completed"))))
    builder.apply(ToolEnded("w", "write_todos", result="ok"))
    builder.fail("boom")
    parts: StatusParts = builder.parts()
    assert parts.encoded().data == builder.encoded().data
    assert parts.size == len(builder.encoded().data)
    assert parts.phase == enum_pb2.EXECUTION_FAILED


def test_slow_calls_stretch_the_interval_and_fast_ones_shrink_it_back() -> None:
    now = [100.0]
    policy = UpdatePolicy(
        events_per_update=1, interval_ms=200, min_gap_ms=50, settle_ms=0, clock=lambda: now[0]
    )
    policy.record()
    policy.flushed()
    policy.record()
    assert policy.deadline() == pytest.approx(100.05)
    for _ in range(10):
        policy.took(1.0)  # the orchestrator takes a second per call
    assert policy.deadline() == pytest.approx(102.0)
    for _ in range(40):
        policy.took(0.001)
    assert policy.deadline() == pytest.approx(100.05, abs=0.01)
