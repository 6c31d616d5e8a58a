"""What every RPC passes before its handler runs: the caller's key, and a request that parses.

- Identity (`stigmer_stub.auth`): with keys configured, a call without a known bearer token is
  UNAUTHENTICATED and a `user` calling a runner-only method is PERMISSION_DENIED; the caller is
  bound for the handler (`auth.current_caller()`). Health and reflection stay open.
- Requests that do not parse (invalid UTF-8 in a string field, a message cut short, bytes that
  are no protobuf at all) are INVALID_ARGUMENT, not the UNKNOWN gRPC answers when a request
  deserializer raises: the deserializer is wrapped so a failure reaches the handler as an
  `Undecodable` value, which is refused here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from stigmer_stub import auth
from stigmer_stub.errors import InvalidArgument
from stigmer_stub.limits import clip
from stigmer_stub.logs import get_logger

log = get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = aio.ServicerContext[Any, Any]

EXECUTION_COMMANDS = "ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController"


class Undecodable:
    """A request whose bytes did not parse; the handler wrapper answers INVALID_ARGUMENT."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def reason(self) -> str:
        return f"the request is not a valid message: {clip(type(self.error).__name__)}"


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as err:  # DecodeError, UnicodeDecodeError, anything a parser raises
            return Undecodable(err)

    return parse


class GuardInterceptor(aio.ServerInterceptor):
    def __init__(self, keys: auth.ApiKeys) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        service, _, name = method.lstrip("/").rpartition("/")
        if service in auth.OPEN_SERVICES:
            return handler
        runner_only = service == EXECUTION_COMMANDS and name in auth.RUNNER_ONLY_METHODS
        admit = _Admission(self._keys, method, runner_only)
        deserialize = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                admit.unary(handler.unary_unary), deserialize, serialize
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                admit.unary_stream(handler.unary_stream), deserialize, serialize
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                admit.stream_unary(handler.stream_unary), deserialize, serialize
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                admit.stream_stream(handler.stream_stream), deserialize, serialize
            )
        return handler  # pragma: no cover - every handler has one of the four


class _Admission:
    """The checks for one method, and wrappers applying them around each kind of handler."""

    def __init__(self, keys: auth.ApiKeys, method: str, runner_only: bool) -> None:
        self.keys = keys
        self.method = method
        self.runner_only = runner_only

    async def check(self, context: Context) -> auth.Caller:
        """The caller, or an abort with UNAUTHENTICATED / PERMISSION_DENIED."""
        if not self.keys.enabled:
            return auth.ANONYMOUS
        caller = self.keys.identify(context.invocation_metadata())
        if caller is None:
            log.info("rpc_unauthenticated", method=self.method)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this stub requires an API key: send `authorization: Bearer <key>`",
            )
            raise AssertionError("unreachable")  # pragma: no cover - abort raises
        if self.runner_only and caller.role is not auth.Role.RUNNER:
            log.info("rpc_forbidden", method=self.method, caller=caller.name, role=caller.role)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{self.method.rpartition('/')[2]} is for the runner role; "
                f"{caller.name!r} is a {caller.role.value}",
            )
        return caller

    @staticmethod
    async def refuse(context: Context, request: Undecodable) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)

    def unary(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def unary(request: Any, context: Context) -> Any:
            caller = await self.check(context)
            if isinstance(request, Undecodable):
                await self.refuse(context, request)
            token = auth.bind_caller(caller)
            try:
                return await behaviour(request, context)
            finally:
                auth.unbind_caller(token)

        return unary

    def unary_stream(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            caller = await self.check(context)
            if isinstance(request, Undecodable):
                await self.refuse(context, request)
            token = auth.bind_caller(caller)
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                auth.unbind_caller(token)

        return unary_stream

    def stream_unary(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
            caller = await self.check(context)
            token = auth.bind_caller(caller)
            try:
                return await behaviour(_checked(requests), context)
            except InvalidArgument as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            finally:
                auth.unbind_caller(token)

        return stream_unary

    def stream_stream(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def stream_stream(
            requests: AsyncIterator[Any], context: Context
        ) -> AsyncIterator[Any]:
            caller = await self.check(context)
            token = auth.bind_caller(caller)
            try:
                async for response in behaviour(_checked(requests), context):
                    yield response
            except InvalidArgument as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            finally:
                auth.unbind_caller(token)

        return stream_stream


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that raises `InvalidArgument` at the first message that did not parse."""
    index = 0
    async for request in requests:
        if isinstance(request, Undecodable):
            raise InvalidArgument(f"message {index}", request.reason)
        yield request
        index += 1
