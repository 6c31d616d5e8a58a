"""Attempt fencing of `updateStatus` (stigmer_stub/fencing.py): over real gRPC, and the rules."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2, enum_pb2

from stigmer_stub import fencing
from stigmer_stub.errors import FailedPrecondition, InvalidArgument
from tests.stub.support import Stub

Phase = enum_pb2.ExecutionPhase


def msgs(*contents: str) -> list[api_pb2.AgentMessage]:
    return [api_pb2.AgentMessage(type=enum_pb2.MessageType.MESSAGE_AI, content=c) for c in contents]


async def push(
    stub: Stub,
    execution_id: str,
    status: api_pb2.AgentExecutionStatus,
    attempt: str | None = None,
    seq: int | None = None,
) -> api_pb2.AgentExecution:
    metadata: list[tuple[str, str]] = []
    if attempt is not None:
        metadata.append((fencing.ATTEMPT_HEADER, attempt))
    if seq is not None:
        metadata.append((fencing.SEQ_HEADER, str(seq)))
    request = command_pb2.AgentExecutionUpdateStatusInput(execution_id=execution_id, status=status)
    result: api_pb2.AgentExecution = await stub.client.execution_commands.updateStatus(
        request, metadata=tuple(metadata), timeout=10
    )
    return result


async def refused(stub: Stub, *args: Any, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await push(stub, *args, **kwargs)
    return failed.value


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    agent = await stub.client.create_agent("Fenced Agent", instructions="answer")
    return agent.metadata.id


@pytest.fixture
async def execution_id(stub: Stub, agent_id: str) -> str:
    created = await stub.client.create_execution("hello", agent_id=agent_id)
    return created.metadata.id


@pytest.mark.integration
async def test_a_completed_transcript_cannot_be_replaced_by_a_bare_update(
    stub: Stub, execution_id: str
) -> None:
    done = api_pb2.AgentExecutionStatus(
        phase=Phase.EXECUTION_COMPLETED, messages=msgs(*"abcdefghijk")
    )
    await push(stub, execution_id, done, "run-1/1", 3)
    err = await refused(stub, execution_id, api_pb2.AgentExecutionStatus(messages=msgs("x")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    stored = await stub.client.get_execution(execution_id)
    assert len(stored.status.messages) == 11
    assert stored.status.phase == Phase.EXECUTION_COMPLETED


@pytest.mark.integration
async def test_after_the_end_only_the_ending_attempt_may_push_again(
    stub: Stub, execution_id: str
) -> None:
    await push(stub, execution_id, api_pb2.AgentExecutionStatus(messages=msgs("a")), "run-1/1", 1)
    final = api_pb2.AgentExecutionStatus(
        phase=Phase.EXECUTION_FAILED, error="x", messages=msgs("a", "b")
    )
    await push(stub, execution_id, final, "run-1/2", 1)
    again = await push(stub, execution_id, final, "run-1/2", 2)  # the final push, retried
    assert [m.content for m in again.status.messages] == ["a", "b"]
    for other in ("run-1/1", "run-1/3", "run-2/1"):
        err = await refused(
            stub, execution_id, api_pb2.AgentExecutionStatus(messages=msgs("z")), other, 9
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, other
    stored = await stub.client.get_execution(execution_id)
    assert [m.content for m in stored.status.messages] == ["a", "b"]


@pytest.mark.integration
async def test_a_replaced_attempt_and_an_older_update_are_refused(
    stub: Stub, execution_id: str
) -> None:
    progress = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
    await push(stub, execution_id, progress, "run-1/1", 4)
    await push(stub, execution_id, api_pb2.AgentExecutionStatus(messages=msgs("new")), "run-1/2", 1)
    stale = await refused(
        stub, execution_id, api_pb2.AgentExecutionStatus(messages=msgs("old")), "run-1/1", 5
    )
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    await push(stub, execution_id, api_pb2.AgentExecutionStatus(messages=msgs("n2")), "run-1/2", 3)
    late = await refused(
        stub, execution_id, api_pb2.AgentExecutionStatus(messages=msgs("n1")), "run-1/2", 2
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    stored = await stub.client.get_execution(execution_id)
    assert [m.content for m in stored.status.messages] == ["n2"]


@pytest.mark.integration
async def test_malformed_attempt_metadata_is_invalid_argument(
    stub: Stub, execution_id: str
) -> None:
    for attempt, seq in (("no-number", 1), ("run/0", 1), ("run/1", -1), ("x" * 5000 + "/1", 1)):
        err = await refused(stub, execution_id, api_pb2.AgentExecutionStatus(), attempt, seq)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(err.details() or "") < 400


# The rules, without a server -------------------------------------------------------------------


def test_a_new_run_supersedes_the_runs_before_it() -> None:
    first = fencing.admit(
        None, fencing.Attempt("r1", 3, 1), terminal_before=False, terminal_after=False
    )
    second = fencing.admit(
        first, fencing.Attempt("r2", 1, 1), terminal_before=False, terminal_after=False
    )
    assert second is not None
    assert second["runs"] == ["r1", "r2"]
    with pytest.raises(FailedPrecondition):
        fencing.admit(
            second, fencing.Attempt("r1", 4, 1), terminal_before=False, terminal_after=False
        )


def test_without_metadata_a_running_execution_takes_the_update_and_an_ended_one_refuses() -> None:
    assert fencing.admit(None, None, terminal_before=False, terminal_after=False) is None
    ended = fencing.admit(None, None, terminal_before=False, terminal_after=True)
    assert ended == {"ended_by": ""}
    with pytest.raises(FailedPrecondition):
        fencing.admit(ended, None, terminal_before=True, terminal_after=True)
    with pytest.raises(FailedPrecondition):  # nobody's attempt ended it: nobody may push
        fencing.admit(ended, fencing.Attempt("r", 1, 1), terminal_before=True, terminal_after=True)


def test_the_orchestrators_verdict_closes_the_run_to_every_attempt() -> None:
    running = fencing.admit(
        None, fencing.Attempt("r", 1, 1), terminal_before=False, terminal_after=False
    )
    closed = fencing.after_verdict(running, terminal_before=False, terminal_after=True)
    assert closed is not None and closed["ended_by"] == ""
    with pytest.raises(FailedPrecondition):
        fencing.admit(closed, fencing.Attempt("r", 1, 2), terminal_before=True, terminal_after=True)
    # A verdict on a run a runner already ended leaves the ending attempt in place.
    ended = fencing.admit(
        running, fencing.Attempt("r", 1, 2), terminal_before=False, terminal_after=True
    )
    assert fencing.after_verdict(ended, terminal_before=True, terminal_after=True) is None


def test_metadata_parsing() -> None:
    assert fencing.from_metadata([("other", "x")]) is None
    parsed = fencing.from_metadata([(fencing.ATTEMPT_HEADER, "a/b/7"), (fencing.SEQ_HEADER, "9")])
    assert parsed == fencing.Attempt("a/b", 7, 9)
    with pytest.raises(InvalidArgument):
        fencing.from_metadata([(fencing.ATTEMPT_HEADER, "r/1"), (fencing.SEQ_HEADER, "٣")])
