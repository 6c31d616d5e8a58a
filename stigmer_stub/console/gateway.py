"""The console's way into the stub: its own gRPC API, called with the browser's key.

Every read and every action goes through the same RPCs the CLI uses, so the guard checks the
caller's key and role, secret values come back masked for a `user`, and the run-control RPCs
(`submitApproval`, `pause`, ...) do whatever the stub serves: when one is not served yet its
`UNIMPLEMENTED` is what the console shows.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import grpc
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_pb2
from ai.stigmer.agentic.agentexecution.v1 import command_pb2_grpc as execution_cmd
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentexecution.v1 import query_pb2_grpc as execution_query
from ai.stigmer.agentic.session.v1 import io_pb2 as session_io
from ai.stigmer.agentic.session.v1 import query_pb2_grpc as session_query
from grpc import aio

MiB = 1024 * 1024
UNARY_TIMEOUT = 30.0
CONTROL_TIMEOUT = 150.0  # cancel and terminate wait (bounded) for the workflow to end


class GatewayError(Exception):
    """An RPC failed; `code` and `details` are the stub's answer, shown as they are."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


def loopback_target(host: str, port: int) -> str:
    """Where the console reaches the stub's gRPC server from the same process."""
    if host in {"0.0.0.0", "::", "[::]"}:  # listening everywhere: loopback reaches it
        host = "127.0.0.1"
    return f"{host}:{port}"


class Gateway:
    """One channel to the stub, shared by every console request; each call carries the key
    of the request it serves (or none on a stub without keys)."""

    def __init__(self, target: str, max_message_bytes: int = 16 * MiB) -> None:
        self.channel = aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self.commands = execution_cmd.AgentExecutionCommandControllerStub(self.channel)
        self.queries = execution_query.AgentExecutionQueryControllerStub(self.channel)
        self.sessions = session_query.SessionQueryControllerStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    @staticmethod
    def _metadata(key: str | None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),) if key else ()

    async def unary(
        self,
        name: str,
        method: Any,
        request: Any,
        key: str | None,
        *,
        deadline: float = UNARY_TIMEOUT,
    ) -> Any:
        try:
            return await method(request, timeout=deadline, metadata=self._metadata(key))
        except aio.AioRpcError as err:
            raise GatewayError(name, err.code(), err.details() or "") from err

    async def subscribe(
        self, execution_id: str, key: str | None
    ) -> AsyncGenerator[execution_pb2.AgentExecution, None]:
        call = self.queries.subscribe(
            execution_io.AgentExecutionId(value=execution_id), metadata=self._metadata(key)
        )
        try:
            async for execution in call:
                yield execution
        except aio.AioRpcError as err:
            raise GatewayError("subscribe", err.code(), err.details() or "") from err
        finally:
            call.cancel()

    async def content(self, execution_id: str, storage_key: str, key: str | None) -> Any:
        """The `getContent` call (a stream of chunks) for a stored content."""
        return self.queries.getContent(
            execution_io.ContentKey(execution_id=execution_id, key=storage_key),
            timeout=600,
            metadata=self._metadata(key),
        )

    async def list_sessions(self, size: int, token: str, key: str | None) -> session_io.SessionList:
        result: session_io.SessionList = await self.unary(
            "list",
            self.sessions.list,
            session_io.ListSessionsRequest(page_size=size, page_token=token),
            key,
        )
        return result
