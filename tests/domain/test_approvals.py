"""Approval policies, approver messages and recorded decisions, as plain values."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from worker.domain.approvals import (
    REJECTED_RESULT,
    SKIPPED_RESULT,
    Decision,
    GateRules,
    Policy,
    approval_message,
    policies_of,
    recorded_approvals,
)

M = TypeVar("M", bound=Message)


def _msg(cls: type[M], **fields: Any) -> M:
    """A proto message from plain values (ProtoJSON rules), typed as the message."""
    return json_format.ParseDict(fields, cls())


def _same(text: str) -> str:
    return text


@pytest.mark.parametrize(
    ("pattern", "name", "server", "gated"),
    [
        ("execute", "execute", "", True),
        ("execute", "execute_all", "", False),
        ("write_*", "write_file", "", True),
        ("write_*", "read_file", "", False),
        ("*", "ls", "", True),
        ("github/create_*", "create_issue", "github", True),
        ("github/create_*", "create_issue", "gitlab", False),
        ("github/create_*", "create_issue", "", False),
        ("*/delete", "delete", "files", True),
        ("", "execute", "", False),
    ],
)
def test_a_policy_matches_names_globs_and_mcp_server_tools(
    pattern: str, name: str, server: str, gated: bool
) -> None:
    assert Policy(pattern).matches(name, server) is gated


def test_rules_gate_mcp_tools_by_server_and_stop_after_approve_all() -> None:
    rules = GateRules(
        (Policy("github/*", "GitHub"), Policy("execute", "Shell")),
        mcp_servers={"create_issue": "github"},
    )
    policy = rules.policy_for("create_issue")
    assert policy is not None and policy.message == "GitHub"
    assert rules.policy_for("ls") is None
    rules.approved_all.add("execute")
    assert rules.policy_for("execute") is None
    assert not GateRules(())


def test_policies_come_from_the_agent_spec_without_blank_tools() -> None:
    agent = _msg(
        agent_api.Agent,
        spec={"tool_approvals": [{"tool": " execute ", "message": "m"}, {"tool": "  "}]},
    )
    assert policies_of(agent) == (Policy("execute", "m"),)
    assert policies_of(agent_api.Agent()) == ()


def test_the_message_is_filled_from_the_arguments_and_redacted() -> None:
    policy = Policy("execute", "Run `{command}` in {cwd}? ({tool}) {missing} {0}")
    message = approval_message(
        policy,
        "execute",
        {"command": "deploy --token s3cret", "cwd": "/repo"},
        lambda text: text.replace("s3cret", "***"),
    )
    assert message == "Run `deploy --token ***` in /repo? (execute) {missing} {0}"


def test_a_message_that_does_not_parse_is_shown_as_written() -> None:
    assert approval_message(Policy("x", "Run {command"), "x", {"command": "a"}, _same) == (
        "Run {command"
    )
    assert approval_message(Policy("x"), "x", {}, _same) == "The agent wants to run x."


def test_long_arguments_are_shortened_in_the_message() -> None:
    message = approval_message(Policy("w", "{content}"), "w", {"content": "a" * 1000}, _same)
    assert len(message) == 200 and message.endswith("…")


def test_recorded_approvals_read_gates_decisions_and_approve_all() -> None:
    execution = _msg(
        execution_api.AgentExecution,
        status={
            "tool_calls": [
                {
                    "id": "c1",
                    "name": "execute",
                    "requires_approval": True,
                    "approval_message": "Run it?",
                    "approval_requested_at": "2026-01-01T00:00:00Z",
                    "status": enum_pb2.TOOL_CALL_WAITING_APPROVAL,
                    "approval_action": enum_pb2.APPROVAL_ACTION_REJECT,
                    "approved_by": "ana",
                    "approval_decided_at": "2026-01-01T00:01:00Z",
                    "result": "not now",
                },
                {
                    "id": "c2",
                    "name": "write_file",
                    "requires_approval": True,
                    "approval_action": enum_pb2.APPROVAL_ACTION_APPROVE_ALL,
                    "result": "looks fine",
                },
                {"id": "c3", "name": "ls", "requires_approval": True},
                {"id": "c4", "name": "read_file"},
            ]
        },
    )
    recorded = recorded_approvals(execution)
    assert set(recorded.gates) == {"c1", "c2", "c3"}
    assert recorded.gates["c1"].message == "Run it?"
    assert recorded.decisions["c1"] == Decision(
        "c1",
        enum_pb2.APPROVAL_ACTION_REJECT,
        "not now",
        "ana",
        "2026-01-01T00:01:00Z",
    )
    assert recorded.decisions["c2"].comment == "", "an approved call's result is the tool's"
    assert recorded.approved_all == frozenset({"write_file"})
    assert [g.tool_call_id for g in recorded.pending()] == ["c3"]


def test_what_the_model_is_told_for_a_call_that_does_not_run() -> None:
    assert Decision("c", enum_pb2.APPROVAL_ACTION_REJECT, " no ").tool_result() == "no"
    assert Decision("c", enum_pb2.APPROVAL_ACTION_REJECT).tool_result() == REJECTED_RESULT
    assert Decision("c", enum_pb2.APPROVAL_ACTION_SKIP, "why").tool_result() == SKIPPED_RESULT
    assert Decision("c", enum_pb2.APPROVAL_ACTION_APPROVE).runs
    assert not Decision("c", enum_pb2.APPROVAL_ACTION_UNSPECIFIED).runs
