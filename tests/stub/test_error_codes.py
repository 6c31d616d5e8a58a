"""How the stub's error interceptor answers what a handler raised."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from pymongo.errors import AutoReconnect, ExecutionTimeout, WTimeoutError

from stigmer_stub import errors
from stigmer_stub.rpc.interceptor import _abort


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class FakeContext:
    """A servicer context whose `abort` raises, as grpc.aio's does."""

    async def abort(self, code: grpc.StatusCode, details: str) -> Any:
        raise Aborted(code, details)


@pytest.mark.parametrize(
    "err",
    [AutoReconnect("gone"), ExecutionTimeout("slow"), WTimeoutError("slow write")],
    ids=["reconnect", "execution-timeout", "write-timeout"],
)
async def test_store_outages_and_timeouts_are_unavailable(err: Exception) -> None:
    with pytest.raises(Aborted) as aborted:
        await _abort(FakeContext(), "create", err)  # type: ignore[arg-type]
    assert aborted.value.code is grpc.StatusCode.UNAVAILABLE
    assert type(err).__name__ in str(aborted.value)


async def test_typed_errors_keep_their_code() -> None:
    with pytest.raises(Aborted) as aborted:
        await _abort(FakeContext(), "get", errors.InvalidArgument("metadata.name", "is required"))  # type: ignore[arg-type]
    assert aborted.value.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_anything_else_is_internal_without_details() -> None:
    with pytest.raises(Aborted) as aborted:
        await _abort(FakeContext(), "get", RuntimeError("secret detail"))  # type: ignore[arg-type]
    assert aborted.value.code is grpc.StatusCode.INTERNAL
    assert "secret detail" not in str(aborted.value)
