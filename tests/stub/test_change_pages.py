"""`subscribeDeltas` pages (`stigmer_stub.subscriptions`) folded by the CLI's `ExecutionFold`.

No servers: states are built from executions the way the channel builds them from the store,
so a snapshot, or a snapshot and a change, must fold back into exactly the execution.
"""

from __future__ import annotations

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2

from stigmer_cli.changes import ExecutionFold, Gap
from stigmer_stub.status_wire import split_status
from stigmer_stub.subscriptions import (
    State,
    change_pages,
    changed_positions,
    numbered,
    snapshot_pages,
    state_of,
)

Phase = enum_pb2.ExecutionPhase
BUDGET = 4 * 1024 * 1024


def state(execution: api_pb2.AgentExecution, version: int) -> State:
    split = split_status(execution.status)
    head = api_pb2.AgentExecution()
    head.CopyFrom(execution)
    head.status.CopyFrom(split.rest)
    return state_of(version, head.SerializeToString(deterministic=True), split.lists)


def execution(
    messages: list[str], calls: dict[str, str], **status: object
) -> api_pb2.AgentExecution:
    out = api_pb2.AgentExecution()
    out.metadata.id = "aex-1"
    out.spec.message = "hello"
    out.status.phase = Phase.EXECUTION_IN_PROGRESS
    for text in messages:
        out.status.messages.add(type=enum_pb2.MESSAGE_AI, content=text)
    for call_id, result in calls.items():
        out.status.tool_calls.add(id=call_id, name="read", result=result)
    for name, value in status.items():
        setattr(out.status, name, value)
    return out


class Folder:
    def __init__(self) -> None:
        self.fold = ExecutionFold()
        self.seq = 0
        self.pages: list[io_pb2.AgentExecutionChange] = []

    def feed(self, pages: list[bytes]) -> api_pb2.AgentExecution | None:
        result = None
        for index, page in enumerate(pages):
            self.seq += 1
            change = io_pb2.AgentExecutionChange.FromString(numbered(self.seq, page))
            self.pages.append(change)
            result = self.fold.apply(change)
            assert (result is None) == (index < len(pages) - 1)
        return result


def test_a_snapshot_folds_into_the_execution() -> None:
    whole = execution(["a", "b"], {"c1": "r1"})
    whole.status.todos["t1"].content = "plan"
    whole.status.sub_agent_executions.add(id="s1", name="helper")
    folder = Folder()
    assert folder.feed(snapshot_pages(state(whole, 3), BUDGET)) == whole
    assert folder.pages[0].snapshot and folder.pages[0].version == 3


def test_a_change_carries_only_the_entries_that_differ_and_folds_into_the_new_state() -> None:
    before = execution(["a" * 1000, "b" * 1000, "c"], {"c1": "r1", "c2": ""})
    after = execution(["a" * 1000, "b" * 1000, "c and more", "d"], {"c1": "r1", "c2": "r2"})
    after.status.todos["t1"].content = "new todo"
    folder = Folder()
    folder.feed(snapshot_pages(state(before, 1), BUDGET))

    pages = change_pages(state(before, 1), state(after, 2), BUDGET)

    assert len(pages) == 1
    change = io_pb2.AgentExecutionChange.FromString(pages[0])
    assert list(change.message_positions) == [2, 3]
    assert list(change.tool_call_positions) == [1]
    assert change.todos_changed and change.HasField("status") is False
    assert not change.HasField("execution")
    assert len(pages[0]) < 200  # not the two long messages again
    assert folder.feed(pages) == after


def test_lists_that_shrink_and_fields_that_clear_fold_as_the_new_state() -> None:
    before = execution(["a", "b", "c"], {"c1": "r1"}, error="boom")
    before.status.todos["t1"].content = "x"
    after = execution(["a"], {}, phase=Phase.EXECUTION_COMPLETED)
    after.metadata.annotations["k"] = "v"
    folder = Folder()
    folder.feed(snapshot_pages(state(before, 1), BUDGET))

    change = io_pb2.AgentExecutionChange.FromString(
        change_pages(state(before, 1), state(after, 2), BUDGET)[0]
    )
    assert change.HasField("status") and change.HasField("execution")
    assert folder.feed(change_pages(state(before, 1), state(after, 2), BUDGET)) == after


def test_a_state_larger_than_the_budget_comes_in_pages_each_within_it() -> None:
    whole = execution([f"m{i}:" + "x" * 3000 for i in range(40)], {"c": "y" * 3000})
    budget = 16 * 1024
    pages = snapshot_pages(state(whole, 1), budget)
    assert len(pages) > 5
    assert max(len(numbered(999, p)) for p in pages) <= budget
    assert Folder().feed(pages) == whole


def test_an_entry_larger_than_a_page_is_sent_cut_with_a_note() -> None:
    whole = execution(["small", "z" * 40_000], {})
    pages = snapshot_pages(state(whole, 1), 16 * 1024)
    folded = Folder().feed(pages)
    assert folded is not None
    assert max(len(p) for p in pages) <= 16 * 1024
    assert folded.status.messages[0].content == "small"
    assert "cut by the stigmer stub: 40000 bytes" in folded.status.messages[1].content


def test_a_gap_or_a_stream_without_a_snapshot_is_refused() -> None:
    whole = execution(["a"], {})
    pages = snapshot_pages(state(whole, 1), BUDGET)
    fold = ExecutionFold()
    with pytest.raises(Gap, match="snapshot"):
        fold.apply(io_pb2.AgentExecutionChange.FromString(numbered(1, change_only())))
    fold = ExecutionFold()
    fold.apply(io_pb2.AgentExecutionChange.FromString(numbered(1, pages[0])))
    with pytest.raises(Gap, match="3 arrived after 1"):
        fold.apply(io_pb2.AgentExecutionChange.FromString(numbered(3, pages[0])))


def change_only() -> bytes:
    before, after = execution(["a"], {}), execution(["a", "b"], {})
    return change_pages(state(before, 1), state(after, 2), BUDGET)[0]


def test_changed_positions_compare_entry_by_entry() -> None:
    assert changed_positions([b"a", b"b", b"c"], [b"a", b"B", b"c", b"d"]) == [1, 3]
    assert changed_positions([b"a", b"b"], [b"a"]) == []
