"""The real `AgentRuntime`: a Graphton deep agent per execution, streamed as agent events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from worker.agent.approval_gate import ApprovalGate
from worker.agent.factory import SubAgentSpec, build_agent, stream_agent
from worker.agent.models import build_chat_model
from worker.domain.agent_events import AgentEvent
from worker.logs import SECRETS
from worker.run.prepare import Prepared
from worker.run.service import ExecutionPlan
from worker.settings import Settings


def _sub_agents(prepared: Prepared) -> list[SubAgentSpec]:
    return [
        SubAgentSpec(
            name=spec["name"],
            description=spec.get("description", ""),
            instructions=spec.get("system_prompt", ""),
            tools=spec.get("tools"),
        )
        for spec in prepared.subagents
    ]


class GraphtonRuntime:
    """Builds the agent from the prepared spec and runs it on the session's thread.

    The checkpointer is shared by every execution of the process (and, when it is Postgres or
    MongoDB, by every worker), keyed by thread id: that is a session's memory, and what a retried
    execution resumes from.
    """

    def __init__(self, settings: Settings, checkpointer: BaseCheckpointSaver[Any]) -> None:
        self._settings = settings
        self._checkpointer = checkpointer

    async def events(self, plan: ExecutionPlan) -> AsyncIterator[AgentEvent]:
        settings = self._settings
        prepared = plan.prepared
        if prepared is None:
            raise ValueError("the Graphton runtime needs a prepared sandbox")
        approvals = plan.approvals
        gate = None
        if approvals is not None:
            approvals.rules.mcp_servers = prepared.mcp_tools
            gate = ApprovalGate(approvals.rules, SECRETS.redact)
        model = build_chat_model(
            settings.llm, plan.model_override or None, provider=settings.provider
        )
        graph = build_agent(
            instructions=prepared.system_prompt,
            model=model,
            checkpointer=self._checkpointer,
            recursion_limit=settings.llm.recursion_limit,
            sandbox_config=prepared.agent_sandbox.graphton_sandbox_config(),
            sub_agents=_sub_agents(prepared),
            tools=prepared.tools,
            gate=gate,
        )
        # aclosing: a cancelled run must stop the graph now, not when the generator is collected.
        async with aclosing(
            stream_agent(
                graph,
                message=plan.message,
                thread_id=plan.thread_id,
                recursion_limit=settings.llm.recursion_limit,
                message_id=plan.execution_id,
                decisions=approvals.decisions if approvals is not None else None,
                gated=gate is not None,
            )
        ) as events:
            async for event in events:
                yield event
