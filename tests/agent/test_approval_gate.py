"""The approval gate inside the real deep agent (scripted model, in-memory checkpointer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from langgraph.checkpoint.memory import InMemorySaver

from worker.agent.approval_gate import ApprovalGate
from worker.agent.factory import AgentGraph, build_agent, stream_agent
from worker.agent.scripted import APPROVAL_COMMAND, ScriptedChatModel
from worker.domain.agent_events import (
    AgentEvent,
    ApprovalDecided,
    ApprovalRequested,
    ToolEnded,
    ToolStarted,
)
from worker.domain.approvals import Decision, GateRules, Policy

LIMIT = 200


def gated_agent(script: str, workspace: Path, *policies: Policy) -> AgentGraph:
    gate = ApprovalGate(GateRules(policies), lambda text: text) if policies else None
    return build_agent(
        instructions=f"You are a test agent.\nscript: {script}",
        model=ScriptedChatModel(),
        checkpointer=InMemorySaver(),
        recursion_limit=LIMIT,
        workspace_dir=workspace,
        gate=gate,
    )


async def run(graph: AgentGraph, **kwargs: Any) -> list[AgentEvent]:
    return [
        e
        async for e in stream_agent(
            graph,
            message="Clean up.",
            thread_id="t1",
            recursion_limit=LIMIT,
            message_id="aex-1",
            gated=True,
            **kwargs,
        )
    ]


def of(kind: type[Any], events: list[AgentEvent]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_the_run_stops_before_the_gated_tool_and_stays_stopped_without_a_decision(
    tmp_path: Path,
) -> None:
    graph = gated_agent("approval", tmp_path, Policy("execute", "Run {command}?"))
    events = await run(graph)
    (request,) = of(ApprovalRequested, events)
    assert request.name == "execute"
    assert request.message == f"Run {APPROVAL_COMMAND}?"
    assert not of(ToolStarted, events), "the tool never started"

    again = await run(graph)
    assert [e.tool_call_id for e in of(ApprovalRequested, again)] == [request.tool_call_id]
    assert not of(ToolStarted, again) and not of(ApprovalDecided, again)


async def test_a_decision_resumes_the_run_from_the_gate(tmp_path: Path) -> None:
    graph = gated_agent("approval", tmp_path, Policy("execute"))
    (request,) = of(ApprovalRequested, await run(graph))
    decision = Decision(request.tool_call_id, enum_pb2.APPROVAL_ACTION_APPROVE)
    events = await run(graph, decisions={request.tool_call_id: decision})
    decided = of(ApprovalDecided, events)
    assert [(d.tool_call_id, d.action) for d in decided] == [
        (request.tool_call_id, enum_pb2.APPROVAL_ACTION_APPROVE)
    ]
    ended = [e for e in of(ToolEnded, events) if e.tool_call_id == request.tool_call_id]
    assert ended and ended[-1].result.strip() == "cleaned"
    assert not of(ApprovalRequested, events[events.index(decided[0]) :])


async def test_several_calls_gated_in_one_step_resume_only_when_all_are_decided(
    tmp_path: Path,
) -> None:
    # `delegate` asks for two `task` calls in one turn.
    graph = gated_agent("delegate", tmp_path, Policy("task"))
    first, second = of(ApprovalRequested, await run(graph))
    one = {first.tool_call_id: Decision(first.tool_call_id, enum_pb2.APPROVAL_ACTION_APPROVE)}
    partial = await run(graph, decisions=one)
    assert len(of(ApprovalRequested, partial)) == 2
    assert not of(ToolStarted, partial)

    both = {
        **one,
        second.tool_call_id: Decision(
            second.tool_call_id, enum_pb2.APPROVAL_ACTION_SKIP, "no need"
        ),
    }
    events = await run(graph, decisions=both)
    started = {e.tool_call_id for e in of(ToolStarted, events)}
    assert first.tool_call_id in started and second.tool_call_id not in started
    skipped = [e for e in of(ToolEnded, events) if e.tool_call_id == second.tool_call_id]
    assert skipped, "the skipped call gets an answer in place of a result"


async def test_without_policies_nothing_is_gated(tmp_path: Path) -> None:
    events = await run(gated_agent("approval", tmp_path))
    assert not of(ApprovalRequested, events)
    assert [e.result.strip() for e in of(ToolEnded, events)] == ["cleaned"]
