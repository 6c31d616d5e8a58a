"""Fakes for activity tests: an in-memory orchestrator and scripted agent runtimes.

They implement the same ports as the real adapters (`worker.adapters.ports`), on real protos.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_api
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.commons.apiresource import io_pb2 as resource_io

from worker.domain import fencing
from worker.domain.agent_events import (
    AgentEvent,
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
    Usage,
)
from worker.domain.status_wire import StatusPayload, as_status
from worker.errors import NotFound, Unavailable
from worker.service import ExecutionPlan


@dataclass
class FakeOrchestratorPorts:
    """In-memory orchestrator: resources by id, and every status update in order."""

    sessions: dict[str, session_api.Session] = field(default_factory=dict)
    instances: dict[str, instance_api.AgentInstance] = field(default_factory=dict)
    agents: dict[str, agent_api.Agent] = field(default_factory=dict)
    updates: list[tuple[str, execution_api.AgentExecutionStatus]] = field(default_factory=list)
    update_metadata: list[dict[str, str]] = field(default_factory=list)
    """The fencing metadata (`worker.domain.fencing`) each status update would carry."""
    session_updates: list[session_api.Session] = field(default_factory=list)
    down: bool = False

    @classmethod
    def with_agent(cls, session_id: str = "ses-1") -> FakeOrchestratorPorts:
        fake = cls()
        fake.agents["agt-1"] = agent_api.Agent(
            metadata={"id": "agt-1", "name": "helper"}, spec={"instructions": "Be useful."}
        )
        fake.instances["ain-1"] = instance_api.AgentInstance(
            metadata={"id": "ain-1"}, spec={"agent_id": "agt-1"}
        )
        fake.sessions[session_id] = session_api.Session(
            metadata={"id": session_id}, spec={"agent_instance_id": "ain-1"}
        )
        return fake

    def _check(self) -> None:
        if self.down:
            raise Unavailable("fake orchestrator is down")

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        self._check()
        copy = execution_api.AgentExecutionStatus()
        copy.CopyFrom(as_status(status))
        self.updates.append((execution_id, copy))
        self.update_metadata.append(dict(fencing.update_metadata()))

    async def get_session(self, session_id: str) -> session_api.Session:
        self._check()
        if session_id not in self.sessions:
            raise NotFound(f"session {session_id} not found")
        copy = session_api.Session()
        copy.CopyFrom(self.sessions[session_id])
        return copy

    async def update_session(self, session: session_api.Session) -> session_api.Session:
        self._check()
        self.sessions[session.metadata.id] = session
        self.session_updates.append(session)
        return session

    async def get_agent_instance(self, instance_id: str) -> instance_api.AgentInstance:
        self._check()
        if instance_id not in self.instances:
            raise NotFound(f"agent instance {instance_id} not found")
        return self.instances[instance_id]

    async def get_agent(self, agent_id: str) -> agent_api.Agent:
        self._check()
        if agent_id not in self.agents:
            raise NotFound(f"agent {agent_id} not found")
        return self.agents[agent_id]

    async def get_environment(
        self, ref: resource_io.ApiResourceReference
    ) -> environment_api.Environment:
        raise NotFound(f"environment {ref.slug} not found")

    async def get_skill(self, ref: resource_io.ApiResourceReference) -> skill_api.Skill:
        raise NotFound(f"skill {ref.slug} not found")

    async def get_artifact(self, storage_key: str) -> bytes:
        raise NotFound(f"artifact {storage_key} not found")


def tool_turn(n: int, *, fail: bool = False) -> list[AgentEvent]:
    """One model turn that streams text and calls one tool, then the tool's start and end."""
    mid, call = f"ai-{n}", f"call-{n}"
    return [
        TokenDelta(message_id=mid, text="Working "),
        TokenDelta(message_id=mid, text="on it."),
        ModelTurnEnded(
            message_id=mid,
            text="Working on it.",
            tool_calls=(ToolCallRequest(id=call, name="ls", args={"path": "/"}),),
            usage=Usage(input_tokens=10, output_tokens=5, total_tokens=15),
            model_name="fake-model",
        ),
        ToolStarted(tool_call_id=call, name="ls", args={"path": "/"}),
        ToolEnded(
            tool_call_id=call,
            name="ls",
            result="" if fail else "a.txt",
            error="boom" if fail else "",
        ),
    ]


def final_turn() -> list[AgentEvent]:
    return [
        TokenDelta(message_id="ai-final", text="Done."),
        ModelTurnEnded(message_id="ai-final", text="Done.", model_name="fake-model"),
    ]


@dataclass
class FakeRuntime:
    """Yields a fixed list of events; optionally raises or hangs after them."""

    events_to_yield: Sequence[AgentEvent] = ()
    raise_after: BaseException | None = None
    hang_after: bool = False
    delay: float = 0.0
    plans: list[ExecutionPlan] = field(default_factory=list)

    async def events(self, plan: ExecutionPlan) -> AsyncIterator[AgentEvent]:
        self.plans.append(plan)
        for event in self.events_to_yield:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield event
        if self.raise_after is not None:
            raise self.raise_after
        if self.hang_after:
            await asyncio.Event().wait()
