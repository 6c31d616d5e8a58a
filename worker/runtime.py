"""The real `AgentRuntime`: a Graphton deep agent per execution, streamed as agent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from worker.agent.factory import build_agent, stream_agent
from worker.agent.models import build_chat_model
from worker.domain.agent_events import AgentEvent
from worker.service import ExecutionPlan
from worker.settings import Settings


class GraphtonRuntime:
    """Builds the agent from the resolved spec and runs it on the session's thread.

    The checkpointer is shared by every execution of the process (and, when it is Postgres or
    MongoDB, by every worker), keyed by thread id: that is a session's memory, and what a retried
    execution resumes from.
    """

    def __init__(self, settings: Settings, checkpointer: BaseCheckpointSaver[Any]) -> None:
        self._settings = settings
        self._checkpointer = checkpointer

    async def events(self, plan: ExecutionPlan) -> AsyncIterator[AgentEvent]:
        settings = self._settings
        model = build_chat_model(
            settings.llm, plan.model_override or None, provider=settings.provider
        )
        await asyncio.to_thread(plan.workspace.mkdir, parents=True, exist_ok=True)
        graph = build_agent(
            instructions=plan.agent.spec.instructions,
            model=model,
            checkpointer=self._checkpointer,
            recursion_limit=settings.llm.recursion_limit,
            workspace_dir=plan.workspace,
            sandbox_env=dict(plan.env),
        )
        # aclosing: a cancelled run must stop the graph now, not when the generator is collected.
        async with aclosing(
            stream_agent(
                graph,
                message=plan.message,
                thread_id=plan.thread_id,
                recursion_limit=settings.llm.recursion_limit,
                message_id=plan.execution_id,
            )
        ) as events:
            async for event in events:
                yield event
