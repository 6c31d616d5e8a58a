"""Translate the stub's typed errors to gRPC status codes, in one place, and log each failure.

Servicers raise `StubError`s and never touch status codes; an unexpected exception becomes
INTERNAL with a generic message (the details go to the log, not to the caller).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio
from pymongo.errors import ConnectionFailure, ExecutionTimeout, WTimeoutError

from stigmer_stub import errors
from stigmer_stub.limits import MESSAGE_LIMIT, clip
from stigmer_stub.logs import get_logger

STATUS_CODES: dict[type[errors.StubError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

log = get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def status_code(err: errors.StubError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


async def _abort(context: aio.ServicerContext[Any, Any], method: str, err: Exception) -> None:
    if isinstance(err, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        # The store is unreachable or timed out: the caller may retry, unlike INTERNAL.
        err = errors.Unavailable(f"the store did not answer: {type(err).__name__}")
    if isinstance(err, errors.StubError):
        code = status_code(err)
        # Bounded: a caller's huge value must not make a huge log line or a status too large
        # for gRPC to send (the caller would get RESOURCE_EXHAUSTED instead of the error).
        text = clip(str(err), MESSAGE_LIMIT)
        log.info("rpc_rejected", method=method, code=code.name, error=text)
        await context.abort(code, text)
    log.error("rpc_crashed", method=method, exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error in the stigmer stub")


class ErrorInterceptor(aio.ServerInterceptor):
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
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None and method.startswith(_STIGMER_METHODS):
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # other streaming requests (server reflection) handle their own errors


_STIGMER_METHODS = "/ai.stigmer."


def _wrap_unary(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            response = await behaviour(request, context)
        except aio.AbortError:
            raise
        except Exception as err:
            await _abort(context, method, err)
            raise
        log.debug("rpc", method=method, ms=round((time.perf_counter() - started) * 1000, 1))
        return response

    return unary


def _wrap_stream(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for response in behaviour(request, context):
                yield response
        except aio.AbortError:
            raise
        except Exception as err:
            await _abort(context, method, err)
            raise

    return stream
