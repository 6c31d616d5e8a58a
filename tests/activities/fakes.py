"""Fakes for activity tests: an in-memory orchestrator and scripted agent runtimes.

They implement the same ports as the real adapters (`worker.ports`), on real protos.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.agentinstance.v1 import spec_pb2 as instance_spec
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_api
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.session.v1 import spec_pb2 as session_spec
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata

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
from worker.errors import InvalidInput, NotFound, NotServed, Unavailable
from worker.run.service import ExecutionPlan


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
    executions: dict[str, execution_api.AgentExecution] = field(default_factory=dict)
    content: FakeContentStore | None = None
    """None: an orchestrator of the January contract (the content RPCs are not served)."""

    @classmethod
    def with_agent(cls, session_id: str = "ses-1") -> FakeOrchestratorPorts:
        fake = cls()
        fake.agents["agt-1"] = agent_api.Agent(
            metadata=ApiResourceMetadata(id="agt-1", name="helper"),
            spec=agent_spec.AgentSpec(instructions="Be useful."),
        )
        fake.instances["ain-1"] = instance_api.AgentInstance(
            metadata=ApiResourceMetadata(id="ain-1"),
            spec=instance_spec.AgentInstanceSpec(agent_id="agt-1"),
        )
        fake.sessions[session_id] = session_api.Session(
            metadata=ApiResourceMetadata(id=session_id),
            spec=session_spec.SessionSpec(agent_instance_id="ain-1"),
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

    async def get_execution(self, execution_id: str) -> execution_api.AgentExecution:
        self._check()
        if execution_id not in self.executions:
            raise NotFound(f"execution {execution_id} not found")
        return self.executions[execution_id]

    async def stat_content(self, execution_id: str, key: str) -> execution_io.ContentUploadResult:
        self._check()
        if self.content is None:
            raise NotServed("AgentExecutionQueryController/statContent: UNIMPLEMENTED")
        return await self.content.stat_content(execution_id, key)

    async def upload_content(
        self, chunks: AsyncIterator[execution_io.ContentUploadChunk]
    ) -> execution_io.ContentUploadResult:
        self._check()
        if self.content is None:
            raise NotServed("AgentExecutionCommandController/uploadContent: UNIMPLEMENTED")
        return await self.content.upload_content(chunks)

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


@dataclass
class FakeContentStore:
    """In-memory content storage with the §7 semantics: by (execution, sha256), checked whole,
    resumable from the committed offset. `break_after` drops the stream once that many bytes
    of a content are held (a broken connection)."""

    held: dict[tuple[str, str], bytearray] = field(default_factory=dict)
    whole: dict[tuple[str, str], execution_io.ContentUploadChunk] = field(default_factory=dict)
    data_bytes_received: int = 0
    uploads: int = 0
    stats: int = 0
    break_after: int | None = None

    def ref(self, key: tuple[str, str]) -> execution_api.ToolCallOutputRef:
        first = self.whole[key]
        return execution_api.ToolCallOutputRef(
            storage_key=f"{key[0]}/{key[1]}",
            size_bytes=first.size_bytes,
            content_hash=key[1],
            mime_type=first.mime_type,
        )

    def content_of(self, execution_id: str, content_hash: str) -> bytes:
        return bytes(self.held[(execution_id, content_hash)])

    async def stat_content(self, execution_id: str, key: str) -> execution_io.ContentUploadResult:
        self.stats += 1
        if not key:
            raise InvalidInput("statContent: INVALID_ARGUMENT: empty key")
        hash_key = (execution_id, key.rpartition("/")[2])
        if hash_key in self.whole:
            return execution_io.ContentUploadResult(
                ref=self.ref(hash_key), committed_bytes=self.whole[hash_key].size_bytes
            )
        if hash_key in self.held:
            return execution_io.ContentUploadResult(committed_bytes=len(self.held[hash_key]))
        raise NotFound(f"content {key} not found")

    async def upload_content(
        self, chunks: AsyncIterator[execution_io.ContentUploadChunk]
    ) -> execution_io.ContentUploadResult:
        self.uploads += 1
        key: tuple[str, str] | None = None
        first: execution_io.ContentUploadChunk | None = None
        async for chunk in chunks:
            key = (chunk.execution_id, chunk.content_hash)
            first = first or chunk
            if key in self.whole:
                return execution_io.ContentUploadResult(ref=self.ref(key), already_stored=True)
            buffer = self.held.setdefault(key, bytearray())
            if chunk.offset != len(buffer):
                raise InvalidInput(f"chunk at {chunk.offset}, expected {len(buffer)}")
            buffer.extend(chunk.data)
            self.data_bytes_received += len(chunk.data)
            if self.break_after is not None and len(buffer) >= self.break_after:
                self.break_after = None
                raise Unavailable("uploadContent: UNAVAILABLE: connection reset")
        if key is None or first is None:
            raise InvalidInput("empty upload")
        data = bytes(self.held[key])
        if len(data) != first.size_bytes or hashlib.sha256(data).hexdigest() != key[1]:
            del self.held[key]
            raise InvalidInput("uploadContent: content does not match its hash")
        self.whole[key] = first
        return execution_io.ContentUploadResult(ref=self.ref(key), committed_bytes=len(data))


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
