"""The orchestrator's content store over gRPC (contract §7): `statContent` and `uploadContent`.

It shares the orchestrator's channel and credentials (`GrpcOrchestrator.content_store()`); errors
leave as `worker.errors` types like every other call (UNIMPLEMENTED is `NotServed`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ai.stigmer.agentic.agentexecution.v1 import command_pb2_grpc as command_grpc
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentexecution.v1 import query_pb2_grpc as query_grpc
from grpc import aio

from worker.adapters.auth import TokenProvider
from worker.adapters.orchestrator import translate_error

UPLOAD_DEADLINE_SECONDS = 600.0
"""Deadline of one whole upload stream (a large content over a slow link); a broken stream is
resumed from the orchestrator's committed offset."""


class GrpcContentStore:
    def __init__(self, channel: aio.Channel, tokens: TokenProvider, timeout: float) -> None:
        self._tokens = tokens
        self._timeout = timeout
        self._query = query_grpc.AgentExecutionQueryControllerStub(channel)
        self._command = command_grpc.AgentExecutionCommandControllerStub(channel)

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = await self._tokens.token()
        return (("authorization", "Bearer " + token),) if token else ()

    async def stat_content(self, execution_id: str, key: str) -> execution_io.ContentUploadResult:
        try:
            return await self._query.statContent(
                execution_io.ContentKey(execution_id=execution_id, key=key),
                timeout=self._timeout,
                metadata=await self._metadata(),
            )
        except aio.AioRpcError as err:
            raise translate_error("AgentExecutionQueryController/statContent", err) from err

    async def upload_content(
        self, chunks: AsyncIterator[execution_io.ContentUploadChunk]
    ) -> execution_io.ContentUploadResult:
        try:
            return await self._command.uploadContent(
                chunks, timeout=UPLOAD_DEADLINE_SECONDS, metadata=await self._metadata()
            )
        except aio.AioRpcError as err:
            raise translate_error("AgentExecutionCommandController/uploadContent", err) from err
