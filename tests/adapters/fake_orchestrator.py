"""A fake orchestrator: a real in-process grpc.aio server with the methods the runner calls.

It records every call with its request and metadata, answers from in-memory resources, and can be
told to fail a method with a status code or to stall, so the client's deadlines, auth metadata,
size limits and error translation are exercised over a real HTTP/2 connection.

By default it is an orchestrator of the January contract: the §7 run-control RPCs answer
UNIMPLEMENTED. With `run_control=True` it serves `submitApproval` far enough for the runner's
probe, and a test records a person's decision with `decide` and a pause with `request_pause`,
the way docs/run-control.md says an orchestrator stores them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Never

import grpc
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1 import query_pb2_grpc as agent_query
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import command_pb2_grpc as execution_command
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as execution_enum
from ai.stigmer.agentic.agentexecution.v1 import query_pb2_grpc as execution_query
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.agentinstance.v1 import query_pb2_grpc as instance_query
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_api
from ai.stigmer.agentic.environment.v1 import query_pb2_grpc as environment_query
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.session.v1 import command_pb2_grpc as session_command
from ai.stigmer.agentic.session.v1 import query_pb2_grpc as session_query
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.agentic.skill.v1 import io_pb2 as skill_io
from ai.stigmer.agentic.skill.v1 import query_pb2_grpc as skill_query
from grpc import aio

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class RecordedCall:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class FakeOrchestrator:
    """State and behaviour shared by the fake's servicers."""

    sessions: dict[str, session_api.Session] = field(default_factory=dict)
    instances: dict[str, instance_api.AgentInstance] = field(default_factory=dict)
    agents: dict[str, agent_api.Agent] = field(default_factory=dict)
    environments: dict[str, environment_api.Environment] = field(default_factory=dict)
    skills: dict[str, skill_api.Skill] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    executions: dict[str, execution_api.AgentExecution] = field(default_factory=dict)
    calls: list[RecordedCall] = field(default_factory=list)
    failures: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    stall_seconds: float = 0.0
    run_control: bool = False

    def decide(
        self,
        execution_id: str,
        tool_call_id: str,
        action: execution_enum.ApprovalAction.ValueType,
        comment: str = "",
        *,
        by: str = "tester",
        at: str = "2026-01-01T00:00:00Z",
    ) -> None:
        """Record a decision on a waiting call of the stored execution (as `submitApproval`)."""
        status = self.executions[execution_id].status
        calls = [c for c in status.tool_calls if c.id == tool_call_id]
        calls += [c for m in status.messages for c in m.tool_calls if c.id == tool_call_id]
        if not calls:
            raise KeyError(f"no tool call {tool_call_id} on {execution_id}")
        for call in calls:
            if call.status != execution_enum.TOOL_CALL_WAITING_APPROVAL:
                raise ValueError(f"tool call {tool_call_id} is not waiting for approval")
            call.approval_action = action
            call.approved_by = by
            call.approval_decided_at = at
            call.result = comment

    def request_pause(self, execution_id: str) -> None:
        execution = self.executions[execution_id]
        execution.metadata.annotations["stigmer.ai/requested-transition"] = "pause"

    async def enter(
        self, method: str, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> None:
        """Record the call, then stall or fail as configured."""
        metadata = {item[0]: str(item[1]) for item in context.invocation_metadata() or ()}
        self.calls.append(RecordedCall(method, request, metadata))
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        if method in self.failures:
            code, details = self.failures[method]
            await context.abort(code, details)

    @staticmethod
    async def missing(context: aio.ServicerContext[Any, Any], what: str) -> Never:
        await context.abort(grpc.StatusCode.NOT_FOUND, what + " not found")


async def unimplemented(context: aio.ServicerContext[Any, Any]) -> Never:
    """UNIMPLEMENTED, as a server without the method answers (the generated base class raises
    instead, which grpc logs as an unexpected error with its traceback)."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


class _Executions(execution_command.AgentExecutionCommandControllerServicer):
    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def updateStatus(self, request: Any, context: Any) -> execution_api.AgentExecution:
        await self.fake.enter("updateStatus", request, context)
        execution = self.fake.executions.setdefault(
            request.execution_id, execution_api.AgentExecution()
        )
        execution.status.CopyFrom(request.status)
        return execution

    async def updateStatusDelta(self, request: Any, context: Any) -> Never:
        """Contract §7 (ours): absent here, as on the January orchestrator."""
        await unimplemented(context)

    async def submitApproval(self, request: Any, context: Any) -> execution_api.AgentExecution:
        await self.fake.enter("submitApproval", request, context)
        if not self.fake.run_control:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        if request.action == execution_enum.APPROVAL_ACTION_UNSPECIFIED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "action is unspecified")
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "tests decide through the fake")
        raise AssertionError("unreachable")  # pragma: no cover - abort raises


class _ExecutionQuery(execution_query.AgentExecutionQueryControllerServicer):
    """`get` only: the content methods (contract §7) answer UNIMPLEMENTED, as the January
    orchestrator does."""

    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def statContent(self, request: Any, context: Any) -> Never:
        await unimplemented(context)

    async def get(self, request: Any, context: Any) -> execution_api.AgentExecution:
        await self.fake.enter("ExecutionQuery.get", request, context)
        found = self.fake.executions.get(request.value)
        return found if found is not None else await self.fake.missing(context, "execution")


class _SessionQuery(session_query.SessionQueryControllerServicer):
    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def get(self, request: Any, context: Any) -> session_api.Session:
        await self.fake.enter("SessionQuery.get", request, context)
        found = self.fake.sessions.get(request.value)
        return found if found is not None else await self.fake.missing(context, "session")


class _SessionCommand(session_command.SessionCommandControllerServicer):
    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def update(self, request: session_api.Session, context: Any) -> session_api.Session:
        await self.fake.enter("SessionCommand.update", request, context)
        self.fake.sessions[request.metadata.id] = request
        return request


class _InstanceQuery(instance_query.AgentInstanceQueryControllerServicer):
    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def get(self, request: Any, context: Any) -> instance_api.AgentInstance:
        await self.fake.enter("AgentInstanceQuery.get", request, context)
        found = self.fake.instances.get(request.value)
        return found if found is not None else await self.fake.missing(context, "instance")


class _AgentQuery(agent_query.AgentQueryControllerServicer):
    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def get(self, request: Any, context: Any) -> agent_api.Agent:
        await self.fake.enter("AgentQuery.get", request, context)
        found = self.fake.agents.get(request.value)
        return found if found is not None else await self.fake.missing(context, "agent")


class _EnvironmentQuery(environment_query.EnvironmentQueryControllerServicer):
    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def getByReference(self, request: Any, context: Any) -> environment_api.Environment:
        await self.fake.enter("EnvironmentQuery.getByReference", request, context)
        found = self.fake.environments.get(request.slug)
        return found if found is not None else await self.fake.missing(context, "environment")


class _SkillQuery(skill_query.SkillQueryControllerServicer):
    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake

    async def getByReference(self, request: Any, context: Any) -> skill_api.Skill:
        await self.fake.enter("SkillQuery.getByReference", request, context)
        found = self.fake.skills.get(request.slug)
        return found if found is not None else await self.fake.missing(context, "skill")

    async def getArtifact(self, request: Any, context: Any) -> skill_io.GetArtifactResponse:
        await self.fake.enter("SkillQuery.getArtifact", request, context)
        found = self.fake.artifacts.get(request.artifact_storage_key)
        if found is None:
            return await self.fake.missing(context, "artifact")
        return skill_io.GetArtifactResponse(artifact=found)


async def start_fake_orchestrator(
    fake: FakeOrchestrator, *, credentials: grpc.ServerCredentials | None = None
) -> tuple[aio.Server, int]:
    """Serve `fake` on a free loopback port (TLS with `credentials`); returns server and port."""
    server = aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    execution_command.add_AgentExecutionCommandControllerServicer_to_server(
        _Executions(fake), server
    )
    execution_query.add_AgentExecutionQueryControllerServicer_to_server(
        _ExecutionQuery(fake), server
    )
    session_query.add_SessionQueryControllerServicer_to_server(_SessionQuery(fake), server)
    session_command.add_SessionCommandControllerServicer_to_server(_SessionCommand(fake), server)
    instance_query.add_AgentInstanceQueryControllerServicer_to_server(_InstanceQuery(fake), server)
    agent_query.add_AgentQueryControllerServicer_to_server(_AgentQuery(fake), server)
    environment_query.add_EnvironmentQueryControllerServicer_to_server(
        _EnvironmentQuery(fake), server
    )
    skill_query.add_SkillQueryControllerServicer_to_server(_SkillQuery(fake), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port
