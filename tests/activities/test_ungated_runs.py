"""A run whose agent has no approval policies (or whose execution waives them) costs nothing for
run control: no gate, no question to the orchestrator. The overhead benchmark's agent is such a
run, so a gate or a probe creeping into every run would show there as runner CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api

from worker.domain.status_builder import StatusBuilder
from worker.run.approvals import prepare_approvals


@dataclass
class CountingRunControl:
    """A fake `RunControl` that records what it was asked."""

    asked: list[str] = field(default_factory=list)

    async def get_execution(self, execution_id: str) -> execution_api.AgentExecution:
        self.asked.append("get_execution")
        return execution_api.AgentExecution()

    async def supports_run_control(self) -> bool:
        self.asked.append("supports_run_control")
        return True


def _agent(*tools: str) -> agent_api.Agent:
    agent = agent_api.Agent()
    for tool in tools:
        agent.spec.tool_approvals.add(tool=tool, message="ok?")
    return agent


async def test_an_agent_without_policies_is_not_gated_and_asks_nothing() -> None:
    control = CountingRunControl()
    execution = execution_api.AgentExecution()
    approvals = await prepare_approvals(control, execution, _agent(), StatusBuilder())
    assert approvals is None
    assert control.asked == []


async def test_waived_policies_are_not_gated_and_ask_nothing() -> None:
    control = CountingRunControl()
    execution = execution_api.AgentExecution()
    execution.spec.auto_approve_all = True
    approvals = await prepare_approvals(control, execution, _agent("execute"), StatusBuilder())
    assert approvals is None
    assert control.asked == []


async def test_policies_are_gated_after_asking_the_orchestrator() -> None:
    control = CountingRunControl()
    execution = execution_api.AgentExecution()
    execution.metadata.id = "aex-1"
    approvals = await prepare_approvals(control, execution, _agent("execute"), StatusBuilder())
    assert approvals is not None and approvals.supported
    assert control.asked == ["supports_run_control", "get_execution"]
