"""The StatusBuilder's approval gates: waiting calls, decisions, and what an attempt returns."""

from __future__ import annotations

from datetime import UTC, datetime

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from worker.domain.agent_events import (
    ApprovalDecided,
    ApprovalRequested,
    ModelTurnEnded,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
)
from worker.domain.status_builder import StatusBuilder

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def builder() -> StatusBuilder:
    b = StatusBuilder(user_message="clean up", clock=lambda: T0)
    b.start()
    b.apply(
        ModelTurnEnded(
            "m1",
            "Cleaning.",
            (
                ToolCallRequest("c1", "execute", {"command": "rm -rf build"}),
                ToolCallRequest("c2", "ls", {"path": "/"}),
            ),
        )
    )
    return b


def call(b: StatusBuilder, call_id: str) -> api_pb2.ToolCall:
    return next(c for c in b.snapshot().tool_calls if c.id == call_id)


def test_a_gated_call_waits_and_the_phase_says_so() -> None:
    b = builder()
    applied = b.apply(ApprovalRequested("c1", "execute", {"command": "x"}, "Run x?"))
    assert applied.significant
    assert b.pending_approvals == ["c1"]
    assert b.await_approval().significant
    status = b.snapshot()
    assert status.phase == enum_pb2.EXECUTION_WAITING_FOR_APPROVAL
    gated = next(c for c in status.tool_calls if c.id == "c1")
    assert gated.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL
    assert gated.requires_approval
    assert gated.approval_message == "Run x?"
    assert gated.approval_requested_at == "2026-01-01T00:00:00.000Z"
    free = next(c for c in status.tool_calls if c.id == "c2")
    assert not free.requires_approval and free.status == enum_pb2.TOOL_CALL_PENDING
    # The message's copy of the call says the same.
    ai = next(m for m in status.messages if m.type == enum_pb2.MESSAGE_AI)
    assert ai.tool_calls[0].status == enum_pb2.TOOL_CALL_WAITING_APPROVAL


def test_the_returned_status_carries_only_the_waiting_calls() -> None:
    b = builder()
    b.apply(ApprovalRequested("c1", "execute", {}, "Run?"))
    b.await_approval()
    returned = b.gate_status()
    assert returned.phase == enum_pb2.EXECUTION_WAITING_FOR_APPROVAL
    assert [c.id for c in returned.tool_calls] == ["c1"]
    assert not returned.messages and returned.started_at


def test_await_approval_changes_nothing_without_waiting_calls() -> None:
    b = builder()
    assert not b.await_approval().changed
    assert b.phase == enum_pb2.EXECUTION_IN_PROGRESS


def test_a_rejected_call_ends_skipped_with_the_comment_as_its_result() -> None:
    b = builder()
    b.apply(ApprovalRequested("c1", "execute", {}, "Run?"))
    b.apply(ApprovalDecided("c1", enum_pb2.APPROVAL_ACTION_REJECT, "no", "ana", "t1"))
    b.apply(ToolEnded("c1", "execute", "", error="no"))
    rejected = call(b, "c1")
    assert rejected.status == enum_pb2.TOOL_CALL_SKIPPED
    assert rejected.result == "no" and not rejected.error
    assert rejected.approval_action == enum_pb2.APPROVAL_ACTION_REJECT
    assert rejected.approved_by == "ana"
    assert rejected.approval_decided_at == "t1"
    # Terminal: a failure of the run afterwards leaves it as it is.
    b.fail("boom")
    assert call(b, "c1").status == enum_pb2.TOOL_CALL_SKIPPED


def test_an_approved_call_goes_back_to_pending_then_runs() -> None:
    b = builder()
    b.apply(ApprovalRequested("c1", "execute", {}, "Run?"))
    b.apply(ApprovalDecided("c1", enum_pb2.APPROVAL_ACTION_APPROVE, approved_by="ana"))
    assert call(b, "c1").status == enum_pb2.TOOL_CALL_PENDING
    assert b.pending_approvals == []
    b.apply(ToolStarted("c1", "execute", {}))
    b.apply(ToolEnded("c1", "execute", "cleaned"))
    done = call(b, "c1")
    assert done.status == enum_pb2.TOOL_CALL_COMPLETED
    assert done.result == "cleaned"
    assert done.requires_approval and done.approval_message == "Run?"


def test_a_request_for_a_decided_call_does_not_put_it_back_to_waiting() -> None:
    b = builder()
    b.seed_approval(
        "c1", message="Run?", requested_at="t0", action=enum_pb2.APPROVAL_ACTION_APPROVE
    )
    assert not b.apply(ApprovalRequested("c1", "execute", {}, "Run?")).changed
    assert b.pending_approvals == []


def test_seeded_approvals_reach_calls_that_appear_later() -> None:
    b = StatusBuilder(user_message="clean up", clock=lambda: T0)
    b.seed_approval("c9", message="Earlier gate", requested_at="t0")
    b.apply(ModelTurnEnded("m1", "", (ToolCallRequest("c9", "execute", {}),)))
    seeded = call(b, "c9")
    assert seeded.requires_approval
    assert seeded.approval_message == "Earlier gate"
    assert seeded.approval_requested_at == "t0"


def test_a_seeded_sub_agent_gate_comes_back_under_its_sub_agent() -> None:
    b = builder()
    b.seed_approval("s1", message="List?", requested_at="t0", sub_agent_id="task-1")
    b.apply(ApprovalRequested("s1", "ls", {"path": "/"}, "List?"))
    assert call(b, "s1").component_metadata.metadata["sub_agent_id"] == "task-1"


def test_a_request_for_an_unknown_call_adds_it() -> None:
    b = builder()
    b.apply(ApprovalRequested("s1", "ls", {"path": "/"}, "List?", sub_agent_id="task-1"))
    assert b.pending_approvals == ["s1"]


def test_a_stored_status_keeps_its_approval_fields_when_seeded() -> None:
    b = builder()
    b.apply(ApprovalRequested("c1", "execute", {}, "Run?"))
    b.await_approval()
    again = StatusBuilder(initial=b.snapshot(), clock=lambda: T0)
    seeded = next(c for c in again.snapshot().tool_calls if c.id == "c1")
    assert seeded.requires_approval and seeded.approval_message == "Run?"
    assert again.pending_approvals == ["c1"]


def test_pause_keeps_unfinished_calls_open() -> None:
    b = builder()
    b.apply(ToolStarted("c2", "ls", {}))
    b.pause()
    assert b.phase == enum_pb2.EXECUTION_PAUSED
    assert call(b, "c2").status == enum_pb2.TOOL_CALL_RUNNING
