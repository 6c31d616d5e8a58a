"""The invoke workflow end to end: stub → Temporal → fake runner → updateStatus → subscribers."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from rich.console import Console
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from devstack import Endpoints
from stigmer_cli.cli import run_cli
from stigmer_cli.client import RpcFailed
from stigmer_stub.converter import DATA_CONVERTER
from stigmer_stub.workflow import MEMO_ACTIVITY_TASK_QUEUE, WORKFLOW_TYPE, workflow_id
from tests.stub.fake_runner import FakeRunner, fake_runner
from tests.stub.support import Stub

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase


@pytest.fixture(scope="module")
async def runner(stub: Stub, stack: Endpoints) -> AsyncIterator[FakeRunner]:
    async with fake_runner(
        stack.temporal_address, stack.temporal_namespace, stub.runner_queue, stub.address
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def temporal(stack: Endpoints) -> Client:
    return await Client.connect(
        stack.temporal_address, namespace=stack.temporal_namespace, data_converter=DATA_CONVERTER
    )


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    agent = await stub.client.create_agent("workflow agent", instructions="help")
    return agent.metadata.id


async def run_to_end(stub: Stub, execution_id: str) -> list[api_pb2.AgentExecution]:
    async with asyncio.timeout(60):
        return [e async for e in stub.client.subscribe(execution_id)]


async def test_a_completed_run_goes_pending_in_progress_completed(
    stub: Stub, runner: FakeRunner, temporal: Client, agent_id: str
) -> None:
    created = await stub.client.create_execution("complete", agent_id=agent_id)
    states = await run_to_end(stub, created.metadata.id)

    phases = [s.status.phase for s in states]
    assert phases[-1] == Phase.EXECUTION_COMPLETED
    assert Phase.EXECUTION_IN_PROGRESS in phases
    final = states[-1]
    assert [m.content for m in final.status.messages] == [
        "complete",
        "working on it",
        f"done in thread-{created.spec.session_id}",
    ]
    assert (created.spec.session_id, agent_id) in runner.ensure_thread_calls
    handle = temporal.get_workflow_handle(workflow_id(created.metadata.id))
    await handle.result()
    description = await handle.describe()
    assert description.workflow_type == WORKFLOW_TYPE
    assert description.status == WorkflowExecutionStatus.COMPLETED
    memo = await description.memo_value(MEMO_ACTIVITY_TASK_QUEUE)
    assert memo == stub.runner_queue


async def test_a_failed_run_ends_failed_with_the_error_and_keeps_the_transcript(
    stub: Stub, runner: FakeRunner, temporal: Client, agent_id: str
) -> None:
    created = await stub.client.create_execution("fail", agent_id=agent_id)
    states = await run_to_end(stub, created.metadata.id)

    final = states[-1].status
    assert final.phase == Phase.EXECUTION_FAILED
    assert final.error == "ExecuteGraphton: model refused the request"
    assert [m.content for m in final.messages] == ["fail", "working on it"]
    assert final.completed_at
    with pytest.raises(WorkflowFailureError):
        await temporal.get_workflow_handle(workflow_id(created.metadata.id)).result()


async def test_a_retryable_failure_is_retried_and_the_run_completes_without_the_error(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    created = await stub.client.create_execution("flaky", agent_id=agent_id)
    await run_to_end(stub, created.metadata.id)
    # The stream ends at the first terminal phase; the workflow's verdict may land after it.
    async with asyncio.timeout(30):
        while True:
            final = await stub.client.get_execution(created.metadata.id)
            if final.status.phase == Phase.EXECUTION_COMPLETED:
                break
            await asyncio.sleep(0.1)
    assert final.status.error == ""


async def test_a_returned_non_terminal_status_is_recorded_as_completed(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    created = await stub.client.create_execution("in-progress", agent_id=agent_id)
    states = await run_to_end(stub, created.metadata.id)
    assert states[-1].status.phase == Phase.EXECUTION_COMPLETED
    assert len(states[-1].status.messages) == 3


async def _in_progress(stub: Stub, agent_id: str) -> str:
    created = await stub.client.create_execution("hang", agent_id=agent_id)
    async with asyncio.timeout(30):
        async for state in stub.client.subscribe(created.metadata.id):
            if state.status.phase == Phase.EXECUTION_IN_PROGRESS:
                break
    return created.metadata.id


async def test_cancel_cancels_the_activity_records_the_reason_and_keeps_the_execution(
    stub: Stub, runner: FakeRunner, temporal: Client, agent_id: str
) -> None:
    execution_id = await _in_progress(stub, agent_id)

    cancelled = await stub.client.cancel(execution_id, reason="wrong repository")

    assert cancelled.status.phase == Phase.EXECUTION_CANCELLED
    assert cancelled.status.error == "cancelled: wrong repository"
    assert [m.content for m in cancelled.status.messages] == ["hang", "working on it"]
    assert execution_id in runner.cancelled
    description = await temporal.get_workflow_handle(workflow_id(execution_id)).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    kept = await stub.client.get_execution(execution_id)
    assert (kept.status.phase, kept.status.error) == (
        Phase.EXECUTION_CANCELLED,
        "cancelled: wrong repository",
    )


async def test_cancel_never_deletes_a_finished_execution(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    created = await stub.client.create_execution("complete", agent_id=agent_id)
    await run_to_end(stub, created.metadata.id)

    with pytest.raises(RpcFailed) as refused:
        await stub.client.cancel(created.metadata.id)

    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "has already ended (EXECUTION_COMPLETED)" in refused.value.details
    kept = await stub.client.get_execution(created.metadata.id)
    assert kept.status.phase == Phase.EXECUTION_COMPLETED


async def test_cancel_of_an_unknown_execution_is_not_found(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as missing:
        await stub.client.cancel("aex-no-such-execution")
    with pytest.raises(RpcFailed) as blank:
        await stub.client.cancel("")

    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert blank.value.code == grpc.StatusCode.INVALID_ARGUMENT


def _cli(stub: Stub, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = run_cli(["--endpoint", stub.address, *argv], console=Console(file=out, width=200))
    return code, out.getvalue()


async def test_the_cli_cancel_leaves_a_finished_execution_alone(
    stub: Stub, runner: FakeRunner, agent_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    created = await stub.client.create_execution("complete", agent_id=agent_id)
    await run_to_end(stub, created.metadata.id)

    code, _ = await asyncio.to_thread(_cli, stub, "cancel", created.metadata.id)

    assert code == 1
    assert "has already ended (EXECUTION_COMPLETED)" in capsys.readouterr().err
    kept = await stub.client.get_execution(created.metadata.id)
    assert kept.status.phase == Phase.EXECUTION_COMPLETED


async def test_the_cli_cancels_a_running_execution_with_a_reason(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await _in_progress(stub, agent_id)

    code, printed = await asyncio.to_thread(
        _cli, stub, "cancel", execution_id, "--reason", "not needed"
    )

    assert code == 0
    assert "phase      CANCELLED" in printed
    assert "error      cancelled: not needed" in printed
    assert (await stub.client.get_execution(execution_id)).status.phase == (
        Phase.EXECUTION_CANCELLED
    )


async def test_the_cli_delete_refuses_a_running_execution_and_says_what_it_removes(
    stub: Stub, runner: FakeRunner, agent_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await _in_progress(stub, agent_id)

    refused, _ = await asyncio.to_thread(_cli, stub, "delete", running)

    assert refused == 1
    assert "is still running (IN_PROGRESS); cancel it first" in capsys.readouterr().err
    assert (await stub.client.get_execution(running)).status.phase == Phase.EXECUTION_IN_PROGRESS

    await stub.client.cancel(running)
    deleted, printed = await asyncio.to_thread(_cli, stub, "delete", running)

    assert deleted == 0
    assert f"execution {running} (CANCELLED)" in printed
    assert "2 messages, 0 tool calls, 0 todos, 0 sub-agent runs" in printed
    assert "its session (the sandbox and memory) and its agent" in printed
    with pytest.raises(RpcFailed) as gone:
        await stub.client.get_execution(running)
    assert gone.value.code == grpc.StatusCode.NOT_FOUND


async def test_the_delete_rpc_still_cancels_a_running_execution_then_removes_it(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    """The January contract's delete, unchanged."""
    execution_id = await _in_progress(stub, agent_id)

    cancelled = await stub.client.delete_execution(execution_id)

    assert cancelled.status.phase == Phase.EXECUTION_CANCELLED
    assert (await stub.client.get_execution(execution_id)).status.phase == (
        Phase.EXECUTION_CANCELLED
    )
    await stub.client.delete_execution(execution_id)
    with pytest.raises(RpcFailed, match="NOT_FOUND"):
        await stub.client.get_execution(execution_id)
