"""Approval gates on the live stream: a waiting call and a decision are `approval` events."""

from __future__ import annotations

from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from worker.domain.agent_events import ApprovalDecided, ApprovalRequested
from worker.domain.status_builder import StatusBuilder
from worker.run.service import live_events


def test_a_waiting_call_is_an_approval_event_with_the_message() -> None:
    event = ApprovalRequested("c1", "execute", {"command": "ls"}, "Run ls?")
    assert live_events(event, 1, StatusBuilder()) == [
        {
            "type": "approval",
            "tool_call_id": "c1",
            "name": "execute",
            "status": "WAITING_APPROVAL",
            "message": "Run ls?",
            "action": None,
        }
    ]


def test_a_decision_says_whether_the_call_runs() -> None:
    approved = ApprovalDecided("c1", enum_pb2.APPROVAL_ACTION_APPROVE_ALL)
    rejected = ApprovalDecided("c2", enum_pb2.APPROVAL_ACTION_REJECT, "no")
    (runs,) = live_events(approved, 1, StatusBuilder())
    (skipped,) = live_events(rejected, 1, StatusBuilder())
    assert (runs["status"], runs["action"]) == ("PENDING", "APPROVAL_ACTION_APPROVE_ALL")
    assert (skipped["status"], skipped["action"]) == ("SKIPPED", "APPROVAL_ACTION_REJECT")
