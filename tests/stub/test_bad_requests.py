"""Requests no client library would send: absurd page tokens and enum numbers, huge ids, and bytes
that are no valid message. Each is INVALID_ARGUMENT (or NOT_FOUND) with a short message."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import io_pb2
from ai.stigmer.agentic.agentexecution.v1.enum_pb2 import ExecutionPhase
from ai.stigmer.agentic.session.v1 import io_pb2 as session_io

from stigmer_stub.limits import clip
from tests.stub.support import Stub

pytestmark = pytest.mark.integration

EXECUTIONS = "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionQueryController"
EXECUTION_COMMANDS = "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController"
HUGE = "aex-" + "x" * 1_000_000


async def failure(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


@pytest.mark.parametrize("token", ["99999999999999999999", "1000001", "0"])
async def test_an_absurd_page_number_is_invalid_argument(stub: Stub, token: str) -> None:
    queries = stub.client.execution_queries
    for call in (
        queries.list(io_pb2.ListAgentExecutionsRequest(page_token=token)),
        queries.listBySession(
            io_pb2.ListAgentExecutionsBySessionRequest(session_id="ses-x", page_token=token)
        ),
        stub.client.session_queries.list(session_io.ListSessionsRequest(page_token=token)),
    ):
        err = await failure(call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, token
        assert (err.details() or "").startswith("page_token")


async def test_list_refuses_a_phase_its_enum_does_not_name_like_update_status(stub: Stub) -> None:
    err = await failure(
        stub.client.execution_queries.list(
            io_pb2.ListAgentExecutionsRequest(phase=ExecutionPhase.ValueType(99))
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "phase: 99 is not a value of its enum"


async def test_a_huge_id_is_not_echoed_whole(stub: Stub) -> None:
    err = await failure(
        stub.client.execution_queries.get(io_pb2.AgentExecutionId(value=HUGE), timeout=20)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    details = err.details() or ""
    assert len(details) < 300
    assert "more chars" in details


def test_clip_marks_what_it_leaves_out() -> None:
    assert clip("short") == "short"
    clipped = clip("y" * 250, 100)
    assert clipped.startswith("y" * 100)
    assert clipped.endswith("[150 more chars]")


@pytest.mark.parametrize(
    "method",
    [f"{EXECUTIONS}/get", f"{EXECUTION_COMMANDS}/updateStatus", f"{EXECUTION_COMMANDS}/create"],
)
@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x04\xff\xfe\xfd\xfc",  # field 1, a string holding invalid UTF-8
        b"\x0a\x10abc",  # field 1 claims 16 bytes, 3 follow: the message is cut short
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # no protobuf at all
    ],
    ids=["invalid-utf8", "truncated", "garbage"],
)
async def test_bytes_that_are_no_valid_message_are_invalid_argument(
    stub: Stub, method: str, payload: bytes
) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = stub.client.channel.unary_unary(method)
    err = await failure(call(payload, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.details())
