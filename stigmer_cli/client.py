"""A small typed async client of the stub (or any Stigmer orchestrator) for the CLI and tests.

One channel per client; every unary call has a deadline; failures are raised as `RpcFailed`
carrying the gRPC status code. The generated stubs stay reachable as attributes for anything
this facade does not cover.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_pb2
from ai.stigmer.agentic.agent.v1 import command_pb2_grpc as agent_cmd
from ai.stigmer.agentic.agent.v1 import io_pb2 as agent_io
from ai.stigmer.agentic.agent.v1 import query_pb2_grpc as agent_query
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_pb2
from ai.stigmer.agentic.agentexecution.v1 import command_pb2 as execution_cmd_pb2
from ai.stigmer.agentic.agentexecution.v1 import command_pb2_grpc as execution_cmd
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentexecution.v1 import query_pb2_grpc as execution_query
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_pb2
from ai.stigmer.agentic.agentinstance.v1 import command_pb2_grpc as instance_cmd
from ai.stigmer.agentic.agentinstance.v1 import io_pb2 as instance_io
from ai.stigmer.agentic.agentinstance.v1 import query_pb2_grpc as instance_query
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
from ai.stigmer.commons.apiresource.apiresourcekind import api_resource_kind_pb2 as kind_pb2
from grpc import aio

MiB = 1024 * 1024


class RpcFailed(Exception):
    """A call failed; `code` is the gRPC status code, `details` the server's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class StigmerClient:
    """`async with StigmerClient("localhost:7234") as c: await c.create_execution(...)`."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 10.0,
        max_message_bytes: int = 16 * MiB,
    ) -> None:
        self.target = target
        self.timeout = timeout_seconds
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self.channel = aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        ch = self.channel
        self.execution_commands = execution_cmd.AgentExecutionCommandControllerStub(ch)
        self.execution_queries = execution_query.AgentExecutionQueryControllerStub(ch)
        self.session_commands = session_cmd.SessionCommandControllerStub(ch)
        self.session_queries = session_query.SessionQueryControllerStub(ch)
        self.instance_commands = instance_cmd.AgentInstanceCommandControllerStub(ch)
        self.instance_queries = instance_query.AgentInstanceQueryControllerStub(ch)
        self.agent_commands = agent_cmd.AgentCommandControllerStub(ch)
        self.agent_queries = agent_query.AgentQueryControllerStub(ch)
        self.skill_commands = skill_cmd.SkillCommandControllerStub(ch)
        self.skill_queries = skill_query.SkillQueryControllerStub(ch)
        self.environment_commands = environment_cmd.EnvironmentCommandControllerStub(ch)
        self.environment_queries = environment_query.EnvironmentQueryControllerStub(ch)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: aio.UnaryUnaryMultiCallable[Any, Any], request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except aio.AioRpcError as err:
            raise RpcFailed(_method_name(method), err.code(), err.details() or "") from err

    async def wait_ready(self, timeout_seconds: float = 10.0) -> None:
        """Wait until the channel connects (the server is up)."""
        async with asyncio.timeout(timeout_seconds):
            await self.channel.channel_ready()

    # Agents ----------------------------------------------------------------------------------

    async def create_agent(
        self,
        name: str,
        *,
        instructions: str = "",
        description: str = "",
        skill_slugs: Sequence[str] = (),
        tool_approvals: Sequence[tuple[str, str]] = (),
    ) -> agent_pb2.Agent:
        """`tool_approvals`: (tool or glob, message) pairs, contract §7's approval gates."""
        agent = agent_pb2.Agent()
        agent.metadata.name = name
        agent.spec.instructions = instructions
        agent.spec.description = description
        for tool, message in tool_approvals:
            agent.spec.tool_approvals.add(tool=tool, message=message)
        for slug in skill_slugs:
            agent.spec.skill_refs.add(kind=kind_pb2.ApiResourceKind.skill, slug=slug)
        return await self.apply_agent(agent, create=True)

    async def apply_agent(self, agent: agent_pb2.Agent, *, create: bool = False) -> agent_pb2.Agent:
        method = self.agent_commands.create if create else self.agent_commands.apply
        result: agent_pb2.Agent = await self._call(method, agent)
        return result

    async def get_agent(self, agent_id: str) -> agent_pb2.Agent:
        result: agent_pb2.Agent = await self._call(
            self.agent_queries.get, agent_io.AgentId(value=agent_id)
        )
        return result

    async def get_agent_instance(self, instance_id: str) -> instance_pb2.AgentInstance:
        result: instance_pb2.AgentInstance = await self._call(
            self.instance_queries.get, instance_io.AgentInstanceId(value=instance_id)
        )
        return result

    # Sessions --------------------------------------------------------------------------------

    async def create_session(
        self, agent_instance_id: str, *, name: str = "", subject: str = ""
    ) -> session_pb2.Session:
        session = session_pb2.Session()
        session.metadata.name = name
        session.spec.agent_instance_id = agent_instance_id
        session.spec.subject = subject
        result: session_pb2.Session = await self._call(self.session_commands.create, session)
        return result

    async def get_session(self, session_id: str) -> session_pb2.Session:
        result: session_pb2.Session = await self._call(
            self.session_queries.get, session_io.SessionId(value=session_id)
        )
        return result

    # Executions ------------------------------------------------------------------------------

    async def create_execution(
        self,
        message: str,
        *,
        agent_id: str = "",
        session_id: str = "",
        name: str = "",
        model_name: str = "",
    ) -> execution_pb2.AgentExecution:
        """Start an execution in `session_id`, or in a new session of `agent_id`'s default
        instance."""
        execution = execution_pb2.AgentExecution()
        execution.metadata.name = name
        execution.spec.message = message
        execution.spec.agent_id = agent_id
        execution.spec.session_id = session_id
        if model_name:
            execution.spec.execution_config.model_name = model_name
        result: execution_pb2.AgentExecution = await self._call(
            self.execution_commands.create, execution
        )
        return result

    async def get_execution(self, execution_id: str) -> execution_pb2.AgentExecution:
        result: execution_pb2.AgentExecution = await self._call(
            self.execution_queries.get, execution_io.AgentExecutionId(value=execution_id)
        )
        return result

    async def update_status(
        self, execution_id: str, status: execution_pb2.AgentExecutionStatus
    ) -> execution_pb2.AgentExecution:
        request = execution_cmd_pb2.AgentExecutionUpdateStatusInput(
            execution_id=execution_id, status=status
        )
        result: execution_pb2.AgentExecution = await self._call(
            self.execution_commands.updateStatus, request
        )
        return result

    async def subscribe(
        self, execution_id: str
    ) -> AsyncGenerator[execution_pb2.AgentExecution, None]:
        """The execution's current state, then each change, until it ends. No deadline: an
        execution may run for as long as its workflow allows."""
        call = self.execution_queries.subscribe(
            execution_io.AgentExecutionId(value=execution_id), metadata=self._metadata
        )
        try:
            async for execution in call:
                yield execution
        except aio.AioRpcError as err:
            raise RpcFailed("subscribe", err.code(), err.details() or "") from err
        finally:
            call.cancel()

    async def subscribe_deltas(
        self, execution_id: str
    ) -> AsyncGenerator[execution_io.AgentExecutionChange, None]:
        """`subscribeDeltas` (contract §7, ours): the execution in pages, then what changed,
        numbered (fold them with `stigmer_cli.changes`). No deadline, like `subscribe`."""
        call = self.execution_queries.subscribeDeltas(
            execution_io.AgentExecutionId(value=execution_id), metadata=self._metadata
        )
        try:
            async for change in call:
                yield change
        except aio.AioRpcError as err:
            raise RpcFailed("subscribeDeltas", err.code(), err.details() or "") from err
        finally:
            call.cancel()

    async def cancel(self, execution_id: str, reason: str = "") -> execution_pb2.AgentExecution:
        """Cancel a running execution and wait until it has ended (CANCELLED unless it
        finished first), through the `cancel` RPC (contract §7), which never deletes: a finished
        execution is FAILED_PRECONDITION. The wait is the server's; the deadline allows for it."""
        try:
            result: execution_pb2.AgentExecution = await self.execution_commands.cancel(
                execution_io.CancelAgentExecutionInput(id=execution_id, reason=reason),
                timeout=self.timeout + 120,
                metadata=self._metadata,
            )
        except aio.AioRpcError as err:
            raise RpcFailed("cancel", err.code(), err.details() or "") from err
        return result

    async def _control(self, method: str, request: Any, *, wait: bool = False) -> Any:
        """A run-control RPC (contract §7); those that wait for the run get a longer deadline."""
        try:
            return await getattr(self.execution_commands, method)(
                request,
                timeout=self.timeout + (120 if wait else 0),
                metadata=self._metadata,
            )
        except aio.AioRpcError as err:
            raise RpcFailed(method, err.code(), err.details() or "") from err

    async def submit_approval(
        self,
        execution_id: str,
        tool_call_id: str,
        action: enum_pb2.ApprovalAction.ValueType,
        comment: str = "",
    ) -> execution_pb2.AgentExecution:
        """Decide a tool call waiting for approval (APPROVE, SKIP, REJECT, APPROVE_ALL)."""
        result: execution_pb2.AgentExecution = await self._control(
            "submitApproval",
            execution_io.SubmitApprovalInput(
                agent_execution_id=execution_id,
                tool_call_id=tool_call_id,
                action=action,
                comment=comment,
            ),
        )
        return result

    async def pause(self, execution_id: str, reason: str = "") -> execution_pb2.AgentExecution:
        """Pause a running execution; returns it once PAUSED (or ended otherwise)."""
        result: execution_pb2.AgentExecution = await self._control(
            "pause",
            execution_io.PauseAgentExecutionInput(id=execution_id, reason=reason),
            wait=True,
        )
        return result

    async def resume(self, execution_id: str) -> execution_pb2.AgentExecution:
        result: execution_pb2.AgentExecution = await self._control(
            "resume", execution_io.ResumeAgentExecutionInput(id=execution_id), wait=True
        )
        return result

    async def terminate(self, execution_id: str, reason: str = "") -> execution_pb2.AgentExecution:
        result: execution_pb2.AgentExecution = await self._control(
            "terminate",
            execution_io.TerminateAgentExecutionInput(id=execution_id, reason=reason),
        )
        return result

    async def recover(self, execution_id: str) -> execution_pb2.AgentExecution:
        result: execution_pb2.AgentExecution = await self._control(
            "recover", execution_io.RecoverAgentExecutionInput(id=execution_id)
        )
        return result

    async def delete_execution(self, execution_id: str) -> execution_pb2.AgentExecution:
        """The `delete` RPC: removes a finished execution (its record: spec, status, transcript);
        on a running one the orchestrator cancels it instead and keeps it."""
        try:
            result: execution_pb2.AgentExecution = await self.execution_commands.delete(
                resource_io.ApiResourceId(value=execution_id),
                timeout=self.timeout + 120,
                metadata=self._metadata,
            )
        except aio.AioRpcError as err:
            raise RpcFailed("delete", err.code(), err.details() or "") from err
        return result

    # Contents (contract §7) ------------------------------------------------------------------

    async def upload_content(
        self,
        chunks: AsyncIterator[execution_io.ContentUploadChunk]
        | Iterable[execution_io.ContentUploadChunk],
    ) -> execution_io.ContentUploadResult:
        """Send an upload's chunks as given (see `content_chunks`)."""
        requests = chunks if isinstance(chunks, AsyncIterator) else iter(chunks)
        try:
            result: execution_io.ContentUploadResult = await self.execution_commands.uploadContent(
                requests, timeout=self.timeout + 120, metadata=self._metadata
            )
        except aio.AioRpcError as err:
            raise RpcFailed("uploadContent", err.code(), err.details() or "") from err
        return result

    async def stat_content(self, execution_id: str, key: str) -> execution_io.ContentUploadResult:
        result: execution_io.ContentUploadResult = await self._call(
            self.execution_queries.statContent,
            execution_io.ContentKey(execution_id=execution_id, key=key),
        )
        return result

    async def content_chunks(self, execution_id: str, key: str) -> AsyncGenerator[bytes, None]:
        """A stored content's bytes, chunk by chunk (`getContent`)."""
        call = self.execution_queries.getContent(
            execution_io.ContentKey(execution_id=execution_id, key=key),
            timeout=self.timeout + 600,
            metadata=self._metadata,
        )
        try:
            async for chunk in call:
                yield chunk.data
        except aio.AioRpcError as err:
            raise RpcFailed("getContent", err.code(), err.details() or "") from err
        finally:
            call.cancel()

    async def get_content(self, execution_id: str, key: str) -> bytes:
        """A stored content, whole."""
        return b"".join([data async for data in self.content_chunks(execution_id, key)])

    async def get_window(
        self,
        execution_id: str,
        *,
        message_offset: int = 0,
        message_limit: int = 0,
        tool_call_offset: int = 0,
        tool_call_limit: int = 0,
    ) -> execution_io.AgentExecutionWindow:
        result: execution_io.AgentExecutionWindow = await self._call(
            self.execution_queries.getWindow,
            execution_io.GetExecutionWindowInput(
                id=execution_id,
                message_offset=message_offset,
                message_limit=message_limit,
                tool_call_offset=tool_call_offset,
                tool_call_limit=tool_call_limit,
            ),
        )
        return result

    # Skills ----------------------------------------------------------------------------------

    async def push_skill(self, name: str, artifact: bytes, *, tag: str = "") -> skill_pb2.Skill:
        request = skill_io.PushSkillRequest(name=name, artifact=artifact, tag=tag)
        result: skill_pb2.Skill = await self._call(self.skill_commands.push, request)
        return result

    async def get_skill(self, slug: str, version: str = "") -> skill_pb2.Skill:
        ref = resource_io.ApiResourceReference(
            kind=kind_pb2.ApiResourceKind.skill, slug=slug, version=version
        )
        result: skill_pb2.Skill = await self._call(self.skill_queries.getByReference, ref)
        return result

    async def get_skill_artifact(self, storage_key: str) -> bytes:
        response: skill_io.GetArtifactResponse = await self._call(
            self.skill_queries.getArtifact,
            skill_io.GetArtifactRequest(artifact_storage_key=storage_key),
        )
        return response.artifact


def content_chunks(
    execution_id: str,
    data: bytes,
    *,
    mime_type: str = "",
    is_image: bool = False,
    chunk_bytes: int = 256 * 1024,
    offset: int = 0,
) -> list[execution_io.ContentUploadChunk]:
    """The chunks that upload `data` from `offset` (every chunk names the content)."""
    digest = hashlib.sha256(data).hexdigest()
    starts = range(offset, len(data), chunk_bytes) if offset < len(data) else [offset]
    return [
        execution_io.ContentUploadChunk(
            execution_id=execution_id,
            content_hash=digest,
            size_bytes=len(data),
            mime_type=mime_type,
            is_image=is_image,
            offset=start,
            data=data[start : start + chunk_bytes],
        )
        for start in starts
    ]


def _method_name(method: Any) -> str:
    name = getattr(method, "_method", b"")
    return name.decode() if isinstance(name, bytes) else str(name or "rpc")
