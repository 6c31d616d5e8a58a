"""The small interfaces a run depends on. `worker.adapters` implement them; tests fake them.

Each port is a handful of async methods on real proto messages. Implementations translate their
transport's failures into `worker.errors` types and apply their own deadlines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_api
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.commons.apiresource import io_pb2 as resource_io

from worker.domain.status_wire import StatusPayload


class StatusSink(Protocol):
    """Where progressive status goes: the orchestrator's `updateStatus`."""

    async def update_status(self, execution_id: str, status: StatusPayload) -> None: ...


class StatusDeltaSink(Protocol):
    """A status sink that may also take `updateStatusDelta` (contract §7, ours)."""

    async def update_status_delta(
        self, execution_id: str, delta: bytes
    ) -> execution_io.StatusDeltaAck | None:
        """Send an encoded `AgentExecutionStatusDelta`; None when the orchestrator does not
        serve the method (the caller sends whole statuses instead)."""
        ...


class ContentStore(Protocol):
    """Large content stored by the orchestrator (contract §7, `uploadContent`/`statContent`)."""

    async def stat_content(self, execution_id: str, key: str) -> execution_io.ContentUploadResult:
        """How much of a content (key: its sha256 hex or storage key) is stored."""
        ...

    async def upload_content(
        self, chunks: AsyncIterator[execution_io.ContentUploadChunk]
    ) -> execution_io.ContentUploadResult: ...


class ExecutionSource(Protocol):
    """Reads an execution by id (the later upstream `ExecuteGraphton(execution_id, thread_id)`)."""

    async def get_execution(self, execution_id: str) -> execution_api.AgentExecution: ...


class SessionStore(Protocol):
    async def get_session(self, session_id: str) -> session_api.Session: ...

    async def update_session(self, session: session_api.Session) -> session_api.Session: ...


class AgentCatalog(Protocol):
    async def get_agent_instance(self, instance_id: str) -> instance_api.AgentInstance: ...

    async def get_agent(self, agent_id: str) -> agent_api.Agent: ...

    async def get_environment(
        self, ref: resource_io.ApiResourceReference
    ) -> environment_api.Environment: ...


class SkillStore(Protocol):
    async def get_skill(self, ref: resource_io.ApiResourceReference) -> skill_api.Skill: ...

    async def get_artifact(self, storage_key: str) -> bytes: ...


class LiveEvents(Protocol):
    """Fine-grained events for live followers (token deltas, tool starts); best effort."""

    @property
    def enabled(self) -> bool:
        """False when nothing is published: the run skips building live events at all."""
        ...

    async def publish(self, execution_id: str, event: Mapping[str, Any]) -> None: ...

    async def close_stream(self, execution_id: str) -> None: ...


class RunControl(Protocol):
    """What approval gates and pause need of the orchestrator (contract §7)."""

    async def get_execution(self, execution_id: str) -> execution_api.AgentExecution:
        """The execution as stored now (decisions, the requested transition), not as the
        workflow passed it at create time."""
        ...

    async def supports_run_control(self) -> bool:
        """Whether the orchestrator serves the §7 run-control RPCs (asked once per process)."""
        ...


class Orchestrator(StatusSink, SessionStore, AgentCatalog, Protocol):
    """The orchestrator as a run needs it (one gRPC adapter implements all of it)."""


class CatalogAndSessions(AgentCatalog, SessionStore, SkillStore, Protocol):
    """The orchestrator as preparing a run needs it."""
