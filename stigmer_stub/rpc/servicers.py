"""The gRPC surface of contract §2: thin servicers that unpack, call the operations, pack.

Errors are raised as `StubError`s and mapped to status codes by `rpc.interceptor`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn, cast

import grpc
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_pb2
from ai.stigmer.agentic.agent.v1 import command_pb2_grpc as agent_cmd
from ai.stigmer.agentic.agent.v1 import io_pb2 as agent_io
from ai.stigmer.agentic.agent.v1 import query_pb2_grpc as agent_query
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_pb2
from ai.stigmer.agentic.agentexecution.v1 import command_pb2 as execution_cmd_pb2
from ai.stigmer.agentic.agentexecution.v1 import command_pb2_grpc as execution_cmd
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentexecution.v1 import query_pb2 as execution_query_pb2
from ai.stigmer.agentic.agentexecution.v1 import query_pb2_grpc as execution_query
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_pb2
from ai.stigmer.agentic.agentinstance.v1 import command_pb2_grpc as instance_cmd
from ai.stigmer.agentic.agentinstance.v1 import io_pb2 as instance_io
from ai.stigmer.agentic.agentinstance.v1 import query_pb2_grpc as instance_query
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_pb2
from ai.stigmer.agentic.environment.v1 import command_pb2_grpc as environment_cmd
from ai.stigmer.agentic.environment.v1 import query_pb2_grpc as environment_query
from ai.stigmer.agentic.session.v1 import api_pb2 as session_pb2
from ai.stigmer.agentic.session.v1 import command_pb2_grpc as session_cmd
from ai.stigmer.agentic.session.v1 import io_pb2 as session_io
from ai.stigmer.agentic.session.v1 import query_pb2_grpc as session_query
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_pb2
from ai.stigmer.agentic.skill.v1 import command_pb2_grpc as skill_cmd
from ai.stigmer.agentic.skill.v1 import io_pb2 as skill_io
from ai.stigmer.agentic.skill.v1 import query_pb2_grpc as skill_query
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc import aio

from stigmer_stub import fencing
from stigmer_stub.content import ContentOps
from stigmer_stub.executions import ExecutionOps
from stigmer_stub.paging import NEXT_PAGE_TOKEN_TRAILER
from stigmer_stub.resources import (
    AgentInstanceOps,
    AgentOps,
    EnvironmentOps,
    SessionOps,
    tags_query,
)
from stigmer_stub.runcontrol import RunControl
from stigmer_stub.secret_values import present_environment, present_execution
from stigmer_stub.skills import SkillOps
from stigmer_stub.status_wire import parse_update, split_view, varint
from stigmer_stub.store.collection import Page
from stigmer_stub.store.executions import EncodedPage
from stigmer_stub.windows import bounded

Context = aio.ServicerContext[Any, Any]


def _trail(context: Context, page: Page[Any] | EncodedPage) -> None:
    if page.next_token:
        context.set_trailing_metadata(((NEXT_PAGE_TOKEN_TRAILER, page.next_token),))


_LIST_ENTRY_TAG = b"\x12"  # AgentExecutionList.entries: field 2, length-delimited


def _execution_list(context: Context, page: EncodedPage) -> bytes:
    """An `AgentExecutionList` of executions already encoded; the next-page token both in the
    reply (contract §7) and in the trailer (for clients of the January contract)."""
    _trail(context, page)
    head = execution_io.AgentExecutionList(
        total_pages=page.total_pages, next_page_token=page.next_token
    ).SerializeToString()
    parts = [head]
    for entry in page.items:
        parts += [_LIST_ENTRY_TAG, varint(len(entry)), entry]
    return b"".join(parts)


class AgentExecutionCommands(execution_cmd.AgentExecutionCommandControllerServicer):
    def __init__(
        self, ops: ExecutionOps, content: ContentOps, run_control: RunControl | None = None
    ) -> None:
        self.ops = ops
        self.content = content
        self.run_control = run_control

    async def _control(self, context: Context, method: str) -> RunControl:
        if self.run_control is None:
            await _not_yet(context, method)
        return self.run_control

    async def create(
        self, request: execution_pb2.AgentExecution, context: Context
    ) -> execution_pb2.AgentExecution:
        return self._bounded(present_execution(await self.ops.create(request)))

    async def update(
        self, request: execution_pb2.AgentExecution, context: Context
    ) -> execution_pb2.AgentExecution:
        return self._bounded(present_execution(await self.ops.update(request)))

    def _bounded(self, execution: execution_pb2.AgentExecution) -> execution_pb2.AgentExecution:
        return bounded(execution, self.ops.max_reply_bytes)

    async def updateStatus(
        self, request: execution_cmd_pb2.AgentExecutionUpdateStatusInput, context: Context
    ) -> execution_pb2.AgentExecution:
        return present_execution(
            await self.ops.update_status(
                request.execution_id, request.status, attempt=_attempt(context)
            )
        )

    async def update_status_encoded(self, request: Message, context: Context) -> bytes:
        """What the server runs for `updateStatus` (see `add_execution_commands`): the request
        read as a `status_wire.UpdateStatusInput`, the reply the merged execution encoded."""
        update = cast(Any, request)
        return await self.ops.update_status_encoded(
            update.execution_id, split_view(update.status), attempt=_attempt(context)
        )

    async def delete(
        self, request: resource_io.ApiResourceId, context: Context
    ) -> execution_pb2.AgentExecution:
        return self._bounded(present_execution(await self.ops.delete(request.value)))

    # Contract §7 methods (stigmer_stub.runcontrol). Without run control they answer
    # UNIMPLEMENTED, which is what a runner probing for them takes as "the January contract".

    async def submitApproval(
        self, request: execution_io.SubmitApprovalInput, context: Context
    ) -> execution_pb2.AgentExecution:
        control = await self._control(context, "submitApproval")
        return await control.submit_approval(
            request.agent_execution_id, request.tool_call_id, request.action, request.comment
        )

    async def cancel(
        self, request: execution_io.CancelAgentExecutionInput, context: Context
    ) -> execution_pb2.AgentExecution:
        return await self.ops.cancel(request.id, request.reason)

    async def terminate(
        self, request: execution_io.TerminateAgentExecutionInput, context: Context
    ) -> execution_pb2.AgentExecution:
        control = await self._control(context, "terminate")
        return await control.terminate(request.id, request.reason)

    async def pause(
        self, request: execution_io.PauseAgentExecutionInput, context: Context
    ) -> execution_pb2.AgentExecution:
        control = await self._control(context, "pause")
        return await control.pause(request.id, request.reason)

    async def resume(
        self, request: execution_io.ResumeAgentExecutionInput, context: Context
    ) -> execution_pb2.AgentExecution:
        control = await self._control(context, "resume")
        return await control.resume(request.id)

    async def recover(
        self, request: execution_io.RecoverAgentExecutionInput, context: Context
    ) -> execution_pb2.AgentExecution:
        control = await self._control(context, "recover")
        return await control.recover(request.id)

    async def updateStatusDelta(
        self, request: execution_io.AgentExecutionStatusDelta, context: Context
    ) -> execution_io.StatusDeltaAck:
        return await self.update_status_delta_raw(request.SerializeToString(), context)

    async def update_status_delta_raw(
        self, request: bytes, context: Context
    ) -> execution_io.StatusDeltaAck:
        """What the server runs for `updateStatusDelta`: the delta read as it arrived (its
        entries are stored as they were encoded)."""
        if not self.ops.status_deltas:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "updateStatusDelta is turned off on this orchestrator (STIGMER_STUB_STATUS_DELTAS)",
            )
        return await self.ops.update_status_delta(request, attempt=_attempt(context))

    async def uploadContent(
        self, request_iterator: AsyncIterator[execution_io.ContentUploadChunk], context: Context
    ) -> execution_io.ContentUploadResult:
        return await self.content.upload(request_iterator)


def _attempt(context: Context) -> fencing.Attempt | None:
    """The runner attempt an `updateStatus` names in its metadata (see `fencing`)."""
    return fencing.from_metadata(context.invocation_metadata())


async def _not_yet(context: Context, method: str) -> NoReturn:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served by this orchestrator yet"
    )
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


def add_execution_commands(servicer: AgentExecutionCommands, server: aio.Server) -> None:
    """`add_AgentExecutionCommandControllerServicer_to_server`, except that `updateStatus` never
    parses or encodes a status whole: its request is deserialized as a
    `status_wire.UpdateStatusInput` (the lists' entries stay encoded) and its reply is the
    encoded execution the store assembled, sent as is. Same wire format, same service."""
    update_status = grpc.unary_unary_rpc_method_handler(
        servicer.update_status_encoded,
        request_deserializer=parse_update,
        response_serializer=_as_is,
    )
    update_status_delta: grpc.RpcMethodHandler[bytes, execution_io.StatusDeltaAck]
    update_status_delta = grpc.unary_unary_rpc_method_handler(
        servicer.update_status_delta_raw,
        response_serializer=execution_io.StatusDeltaAck.SerializeToString,
    )
    _add_service(
        server,
        _EXECUTION_COMMANDS,
        servicer,
        {"updateStatus": update_status, "updateStatusDelta": update_status_delta},
    )


def add_execution_queries(servicer: AgentExecutionQueries, server: aio.Server) -> None:
    """`add_AgentExecutionQueryControllerServicer_to_server`, except that the replies holding
    executions are sent encoded as the store assembled them (and sized to the reply budget)."""

    def encoded(behaviour: Any, request_type: type[Message]) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=request_type.FromString, response_serializer=_as_is
        )

    subscribe = grpc.unary_stream_rpc_method_handler(
        servicer.subscribe_encoded,
        request_deserializer=execution_io.AgentExecutionId.FromString,
        response_serializer=_as_is,
    )
    subscribe_deltas = grpc.unary_stream_rpc_method_handler(
        servicer.subscribe_deltas_encoded,
        request_deserializer=execution_io.AgentExecutionId.FromString,
        response_serializer=_as_is,
    )
    overrides = {
        "subscribe": subscribe,
        "subscribeDeltas": subscribe_deltas,
        "get": encoded(servicer.get_encoded, execution_io.AgentExecutionId),
        "list": encoded(servicer.list_encoded, execution_io.ListAgentExecutionsRequest),
        "listBySession": encoded(
            servicer.list_by_session_encoded, execution_io.ListAgentExecutionsBySessionRequest
        ),
        "getWindow": encoded(servicer.window_encoded, execution_io.GetExecutionWindowInput),
    }
    _add_service(server, _EXECUTION_QUERIES, servicer, overrides)


def _add_service(
    server: aio.Server,
    service: ServiceDescriptor,
    servicer: object,
    overrides: dict[str, grpc.RpcMethodHandler[Any, Any]],
) -> None:
    """Register `servicer` for every method of `service` as the generated code does (requests
    and replies as the service's message types), but with `overrides` for some methods."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        if method.name in overrides:
            handlers[method.name] = overrides[method.name]
            continue
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
            response_serializer=message_factory.GetMessageClass(
                method.output_type
            ).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


_EXECUTION_COMMANDS = execution_cmd_pb2.DESCRIPTOR.services_by_name[
    "AgentExecutionCommandController"
]
_EXECUTION_QUERIES = execution_query_pb2.DESCRIPTOR.services_by_name[
    "AgentExecutionQueryController"
]


def _as_is(encoded: bytes) -> bytes:
    return encoded


class AgentExecutionQueries(execution_query.AgentExecutionQueryControllerServicer):
    def __init__(self, ops: ExecutionOps, content: ContentOps) -> None:
        self.ops = ops
        self.content = content

    async def get(
        self, request: execution_io.AgentExecutionId, context: Context
    ) -> execution_pb2.AgentExecution:
        return execution_pb2.AgentExecution.FromString(await self.get_encoded(request, context))

    async def get_encoded(self, request: execution_io.AgentExecutionId, context: Context) -> bytes:
        """What the server runs for `get` (see `add_execution_queries`)."""
        return await self.ops.get_encoded(request.value)

    async def list(
        self, request: execution_io.ListAgentExecutionsRequest, context: Context
    ) -> execution_io.AgentExecutionList:
        encoded = await self.list_encoded(request, context)
        return execution_io.AgentExecutionList.FromString(encoded)

    async def list_encoded(
        self, request: execution_io.ListAgentExecutionsRequest, context: Context
    ) -> bytes:
        page = await self.ops.list(
            request.page_size, request.page_token, request.phase, list(request.tags)
        )
        return _execution_list(context, page)

    async def listBySession(
        self, request: execution_io.ListAgentExecutionsBySessionRequest, context: Context
    ) -> execution_io.AgentExecutionList:
        encoded = await self.list_by_session_encoded(request, context)
        return execution_io.AgentExecutionList.FromString(encoded)

    async def list_by_session_encoded(
        self, request: execution_io.ListAgentExecutionsBySessionRequest, context: Context
    ) -> bytes:
        page = await self.ops.list_by_session(
            request.session_id, request.page_size, request.page_token
        )
        return _execution_list(context, page)

    async def subscribe(
        self, request: execution_io.AgentExecutionId, context: Context
    ) -> AsyncIterator[execution_pb2.AgentExecution]:
        async for execution in self.ops.subscribe(request.value):
            yield present_execution(execution)

    async def subscribe_encoded(
        self, request: execution_io.AgentExecutionId, context: Context
    ) -> AsyncIterator[bytes]:
        """What the server runs for `subscribe` (see `add_execution_queries`)."""
        async for encoded in self.ops.subscribe_encoded(request.value):
            yield encoded

    async def subscribeDeltas(
        self, request: execution_io.AgentExecutionId, context: Context
    ) -> AsyncIterator[execution_io.AgentExecutionChange]:
        async for encoded in self.subscribe_deltas_encoded(request, context):
            yield execution_io.AgentExecutionChange.FromString(encoded)

    async def subscribe_deltas_encoded(
        self, request: execution_io.AgentExecutionId, context: Context
    ) -> AsyncIterator[bytes]:
        """What the server runs for `subscribeDeltas`: the pages as encoded once per change."""
        async for encoded in self.ops.subscribe_deltas(request.value):
            yield encoded

    async def statContent(
        self, request: execution_io.ContentKey, context: Context
    ) -> execution_io.ContentUploadResult:
        return await self.content.stat(request)

    async def getContent(
        self, request: execution_io.ContentKey, context: Context
    ) -> AsyncIterator[execution_io.ContentChunk]:
        async for chunk in self.content.read(request):
            yield chunk

    async def getWindow(
        self, request: execution_io.GetExecutionWindowInput, context: Context
    ) -> execution_io.AgentExecutionWindow:
        encoded = await self.window_encoded(request, context)
        return execution_io.AgentExecutionWindow.FromString(encoded)

    async def window_encoded(
        self, request: execution_io.GetExecutionWindowInput, context: Context
    ) -> bytes:
        return await self.ops.window(request)


class SessionCommands(session_cmd.SessionCommandControllerServicer):
    def __init__(self, ops: SessionOps) -> None:
        self.ops = ops

    async def apply(self, request: session_pb2.Session, context: Context) -> session_pb2.Session:
        return await self.ops.apply(request)

    async def create(self, request: session_pb2.Session, context: Context) -> session_pb2.Session:
        return await self.ops.create(request)

    async def update(self, request: session_pb2.Session, context: Context) -> session_pb2.Session:
        return await self.ops.update(request)

    async def delete(self, request: session_io.SessionId, context: Context) -> session_pb2.Session:
        return await self.ops.delete(request.value)


class SessionQueries(session_query.SessionQueryControllerServicer):
    def __init__(self, ops: SessionOps) -> None:
        self.ops = ops

    async def get(self, request: session_io.SessionId, context: Context) -> session_pb2.Session:
        return await self.ops.get(request.value)

    async def list(
        self, request: session_io.ListSessionsRequest, context: Context
    ) -> session_io.SessionList:
        page = await self.ops.page(tags_query(request.tags), request.page_size, request.page_token)
        _trail(context, page)
        return session_io.SessionList(total_pages=page.total_pages, entries=page.items)

    async def listByAgent(
        self, request: session_io.ListSessionsByAgentRequest, context: Context
    ) -> session_io.SessionList:
        page = await self.ops.by_agent(request.agent_id, request.page_size, request.page_token)
        _trail(context, page)
        return session_io.SessionList(total_pages=page.total_pages, entries=page.items)


class AgentInstanceCommands(instance_cmd.AgentInstanceCommandControllerServicer):
    def __init__(self, ops: AgentInstanceOps) -> None:
        self.ops = ops

    async def apply(
        self, request: instance_pb2.AgentInstance, context: Context
    ) -> instance_pb2.AgentInstance:
        return await self.ops.apply(request)

    async def create(
        self, request: instance_pb2.AgentInstance, context: Context
    ) -> instance_pb2.AgentInstance:
        return await self.ops.create(request)

    async def update(
        self, request: instance_pb2.AgentInstance, context: Context
    ) -> instance_pb2.AgentInstance:
        return await self.ops.update(request)

    async def delete(
        self, request: instance_io.AgentInstanceId, context: Context
    ) -> instance_pb2.AgentInstance:
        return await self.ops.delete(request.value)


class AgentInstanceQueries(instance_query.AgentInstanceQueryControllerServicer):
    def __init__(self, ops: AgentInstanceOps) -> None:
        self.ops = ops

    async def get(
        self, request: instance_io.AgentInstanceId, context: Context
    ) -> instance_pb2.AgentInstance:
        return await self.ops.get(request.value)

    async def getByAgent(
        self, request: instance_io.GetAgentInstancesByAgentRequest, context: Context
    ) -> instance_io.AgentInstanceList:
        page = await self.ops.by_agent(
            request.agent_id, request.page_info.num, request.page_info.size
        )
        return instance_io.AgentInstanceList(total_count=page.total_count, items=page.items)

    async def getByReference(
        self, request: resource_io.ApiResourceReference, context: Context
    ) -> instance_pb2.AgentInstance:
        return await self.ops.get_by_reference(request)


class AgentCommands(agent_cmd.AgentCommandControllerServicer):
    def __init__(self, ops: AgentOps) -> None:
        self.ops = ops

    async def apply(self, request: agent_pb2.Agent, context: Context) -> agent_pb2.Agent:
        return await self.ops.apply(request)

    async def create(self, request: agent_pb2.Agent, context: Context) -> agent_pb2.Agent:
        return await self.ops.create(request)

    async def update(self, request: agent_pb2.Agent, context: Context) -> agent_pb2.Agent:
        return await self.ops.update(request)

    async def delete(self, request: agent_io.AgentId, context: Context) -> agent_pb2.Agent:
        return await self.ops.delete(request.value)


class AgentQueries(agent_query.AgentQueryControllerServicer):
    def __init__(self, ops: AgentOps) -> None:
        self.ops = ops

    async def get(self, request: agent_io.AgentId, context: Context) -> agent_pb2.Agent:
        return await self.ops.get(request.value)

    async def getByReference(
        self, request: resource_io.ApiResourceReference, context: Context
    ) -> agent_pb2.Agent:
        return await self.ops.get_by_reference(request)


class SkillCommands(skill_cmd.SkillCommandControllerServicer):
    def __init__(self, ops: SkillOps) -> None:
        self.ops = ops

    async def push(self, request: skill_io.PushSkillRequest, context: Context) -> skill_pb2.Skill:
        return await self.ops.push(request)

    async def delete(self, request: skill_io.SkillId, context: Context) -> skill_pb2.Skill:
        return await self.ops.delete(request.value)


class SkillQueries(skill_query.SkillQueryControllerServicer):
    def __init__(self, ops: SkillOps) -> None:
        self.ops = ops

    async def get(self, request: skill_io.SkillId, context: Context) -> skill_pb2.Skill:
        return await self.ops.get(request.value)

    async def getByReference(
        self, request: resource_io.ApiResourceReference, context: Context
    ) -> skill_pb2.Skill:
        return await self.ops.get_by_reference(request)

    async def getArtifact(
        self, request: skill_io.GetArtifactRequest, context: Context
    ) -> skill_io.GetArtifactResponse:
        data = await self.ops.get_artifact(request.artifact_storage_key)
        return skill_io.GetArtifactResponse(artifact=data)


class EnvironmentCommands(environment_cmd.EnvironmentCommandControllerServicer):
    def __init__(self, ops: EnvironmentOps) -> None:
        self.ops = ops

    async def apply(
        self, request: environment_pb2.Environment, context: Context
    ) -> environment_pb2.Environment:
        return present_environment(await self.ops.apply(request))

    async def create(
        self, request: environment_pb2.Environment, context: Context
    ) -> environment_pb2.Environment:
        return present_environment(await self.ops.create(request))

    async def update(
        self, request: environment_pb2.Environment, context: Context
    ) -> environment_pb2.Environment:
        return present_environment(await self.ops.update(request))

    async def delete(
        self, request: resource_io.ApiResourceDeleteInput, context: Context
    ) -> environment_pb2.Environment:
        return present_environment(await self.ops.delete(request.resource_id, field="resource_id"))


class EnvironmentQueries(environment_query.EnvironmentQueryControllerServicer):
    def __init__(self, ops: EnvironmentOps) -> None:
        self.ops = ops

    async def get(
        self, request: resource_io.ApiResourceId, context: Context
    ) -> environment_pb2.Environment:
        return present_environment(await self.ops.get(request.value))

    async def getByReference(
        self, request: resource_io.ApiResourceReference, context: Context
    ) -> environment_pb2.Environment:
        return present_environment(await self.ops.get_by_reference(request))
