"""Assemble the gRPC server: the contract's services, health checking and server reflection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ai.stigmer.agentic.agent.v1 import command_pb2 as agent_cmd_pb2
from ai.stigmer.agentic.agent.v1 import command_pb2_grpc as agent_cmd
from ai.stigmer.agentic.agent.v1 import query_pb2 as agent_query_pb2
from ai.stigmer.agentic.agent.v1 import query_pb2_grpc as agent_query
from ai.stigmer.agentic.agentexecution.v1 import command_pb2 as execution_cmd_pb2
from ai.stigmer.agentic.agentexecution.v1 import query_pb2 as execution_query_pb2
from ai.stigmer.agentic.agentinstance.v1 import command_pb2 as instance_cmd_pb2
from ai.stigmer.agentic.agentinstance.v1 import command_pb2_grpc as instance_cmd
from ai.stigmer.agentic.agentinstance.v1 import query_pb2 as instance_query_pb2
from ai.stigmer.agentic.agentinstance.v1 import query_pb2_grpc as instance_query
from ai.stigmer.agentic.environment.v1 import command_pb2 as environment_cmd_pb2
from ai.stigmer.agentic.environment.v1 import command_pb2_grpc as environment_cmd
from ai.stigmer.agentic.environment.v1 import query_pb2 as environment_query_pb2
from ai.stigmer.agentic.environment.v1 import query_pb2_grpc as environment_query
from ai.stigmer.agentic.session.v1 import command_pb2 as session_cmd_pb2
from ai.stigmer.agentic.session.v1 import command_pb2_grpc as session_cmd
from ai.stigmer.agentic.session.v1 import query_pb2 as session_query_pb2
from ai.stigmer.agentic.session.v1 import query_pb2_grpc as session_query
from ai.stigmer.agentic.skill.v1 import command_pb2 as skill_cmd_pb2
from ai.stigmer.agentic.skill.v1 import command_pb2_grpc as skill_cmd
from ai.stigmer.agentic.skill.v1 import query_pb2 as skill_query_pb2
from ai.stigmer.agentic.skill.v1 import query_pb2_grpc as skill_query
from google.protobuf.descriptor import FileDescriptor
from grpc import aio

# No type stubs ship for these two (types-grpcio-health-checking/-reflection are not locked).
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from stigmer_stub.auth import ApiKeys
from stigmer_stub.content import ContentOps
from stigmer_stub.executions import ExecutionOps
from stigmer_stub.resources import AgentInstanceOps, AgentOps, EnvironmentOps, SessionOps
from stigmer_stub.rpc import servicers
from stigmer_stub.rpc.guard import GuardInterceptor
from stigmer_stub.rpc.interceptor import ErrorInterceptor
from stigmer_stub.runcontrol import RunControl
from stigmer_stub.settings import GrpcSettings
from stigmer_stub.skills import SkillOps

_SERVICE_FILES: tuple[FileDescriptor, ...] = (
    execution_cmd_pb2.DESCRIPTOR,
    execution_query_pb2.DESCRIPTOR,
    session_cmd_pb2.DESCRIPTOR,
    session_query_pb2.DESCRIPTOR,
    instance_cmd_pb2.DESCRIPTOR,
    instance_query_pb2.DESCRIPTOR,
    agent_cmd_pb2.DESCRIPTOR,
    agent_query_pb2.DESCRIPTOR,
    skill_cmd_pb2.DESCRIPTOR,
    skill_query_pb2.DESCRIPTOR,
    environment_cmd_pb2.DESCRIPTOR,
    environment_query_pb2.DESCRIPTOR,
)

SERVICE_NAMES: tuple[str, ...] = tuple(
    service.full_name for file in _SERVICE_FILES for service in file.services_by_name.values()
)


@dataclass(frozen=True, slots=True)
class Operations:
    executions: ExecutionOps
    sessions: SessionOps
    agent_instances: AgentInstanceOps
    agents: AgentOps
    skills: SkillOps
    environments: EnvironmentOps
    content: ContentOps
    run_control: RunControl | None = None
    """Contract §7 run control; without it those RPCs answer UNIMPLEMENTED."""


@dataclass(frozen=True, slots=True)
class GrpcServer:
    server: aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer
    port: int

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        # NOT_SERVING first, so load balancers stop routing while in-flight calls finish.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def build_server(
    settings: GrpcSettings, ops: Operations, keys: ApiKeys | None = None
) -> GrpcServer:
    """The server; with `keys` (and any configured), every RPC but health and reflection needs
    one (`rpc.guard`)."""
    limit = settings.max_message_bytes
    server = aio.server(
        interceptors=[GuardInterceptor(keys or ApiKeys({})), ErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    servicers.add_execution_commands(
        servicers.AgentExecutionCommands(ops.executions, ops.content, ops.run_control), server
    )
    servicers.add_execution_queries(
        servicers.AgentExecutionQueries(ops.executions, ops.content), server
    )
    session_cmd.add_SessionCommandControllerServicer_to_server(
        servicers.SessionCommands(ops.sessions), server
    )
    session_query.add_SessionQueryControllerServicer_to_server(
        servicers.SessionQueries(ops.sessions), server
    )
    instance_cmd.add_AgentInstanceCommandControllerServicer_to_server(
        servicers.AgentInstanceCommands(ops.agent_instances), server
    )
    instance_query.add_AgentInstanceQueryControllerServicer_to_server(
        servicers.AgentInstanceQueries(ops.agent_instances), server
    )
    agent_cmd.add_AgentCommandControllerServicer_to_server(
        servicers.AgentCommands(ops.agents), server
    )
    agent_query.add_AgentQueryControllerServicer_to_server(
        servicers.AgentQueries(ops.agents), server
    )
    skill_cmd.add_SkillCommandControllerServicer_to_server(
        servicers.SkillCommands(ops.skills), server
    )
    skill_query.add_SkillQueryControllerServicer_to_server(
        servicers.SkillQueries(ops.skills), server
    )
    environment_cmd.add_EnvironmentCommandControllerServicer_to_server(
        servicers.EnvironmentCommands(ops.environments), server
    )
    environment_query.add_EnvironmentQueryControllerServicer_to_server(
        servicers.EnvironmentQueries(ops.environments), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    return GrpcServer(server, health_servicer, port)
