"""Run control through the real stub (gRPC, MongoDB-wire, Temporal) with the fake runner.

Approvals (submitApproval and the workflow's gate), pause and resume, terminate, recover, the
merge settling an ended execution, an attempt lost with its worker under a 1-attempt policy and
a stalled run. The stub runs with the Go orchestrator's single ExecuteGraphton attempt.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from rich.console import Console
from temporalio.client import Client

from devstack import Endpoints
from stigmer_cli.changes import states
from stigmer_cli.cli import run_cli
from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_cli.follow import PlainRenderer, watch
from stigmer_cli.runcontrol import ApprovalPrompt
from stigmer_stub import runcontrol
from stigmer_stub.app import running_stub
from stigmer_stub.converter import DATA_CONVERTER
from stigmer_stub.runcontrol import TRANSITION_ANNOTATION
from stigmer_stub.settings import WorkflowSettings
from stigmer_stub.workflow import QUERY_PENDING_APPROVALS, PendingApproval, workflow_id
from tests.stub.fake_runner import FakeRunner, fake_runner
from tests.stub.support import Stub, stub_settings

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase
ToolStatus = enum_pb2.ToolCallStatus
SubStatus = enum_pb2.SubAgentStatus
Action = enum_pb2.ApprovalAction
STALL_SECONDS = 6


@pytest.fixture(scope="module")
async def stub(stack: Endpoints) -> AsyncIterator[Stub]:
    suffix = uuid.uuid4().hex[:10]
    base = stub_settings(stack, database=f"stub_{suffix}", suffix=suffix)
    settings = base.model_copy(
        update={
            "workflow": WorkflowSettings.model_validate(
                {
                    "ensure_thread_timeout_seconds": 5,
                    "execute_timeout_seconds": 60,
                    "execute_heartbeat_seconds": 2,
                    "execute_schedule_to_start_seconds": 30,
                    "execute_attempts": 1,  # the Go orchestrator's policy
                    "lost_worker_reinvokes": 2,
                    "lost_worker_backoff_seconds": 0.5,
                    "stall_seconds": STALL_SECONDS,
                }
            )
        }
    )
    async with running_stub(settings) as running, StigmerClient(running.address) as client:
        yield Stub(running, settings, client)


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
    agent = await stub.client.create_agent("run control agent", instructions="help")
    return agent.metadata.id


async def until(
    stub: Stub,
    execution_id: str,
    reached: Callable[[api_pb2.AgentExecution], bool],
    seconds: float = 30,
) -> api_pb2.AgentExecution:
    async with asyncio.timeout(seconds):
        while True:
            current = await stub.client.get_execution(execution_id)
            if reached(current):
                return current
            await asyncio.sleep(0.1)


def phase_is(phase: Phase.ValueType) -> Callable[[api_pb2.AgentExecution], bool]:
    return lambda e: e.status.phase == phase


async def at_gate(stub: Stub, agent_id: str, script: str = "gate") -> str:
    created = await stub.client.create_execution(script, agent_id=agent_id)
    await until(stub, created.metadata.id, phase_is(Phase.EXECUTION_WAITING_FOR_APPROVAL))
    return created.metadata.id


def call(execution: api_pb2.AgentExecution, call_id: str) -> api_pb2.ToolCall:
    return next(c for c in execution.status.tool_calls if c.id == call_id)


def cli(stub: Stub, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = run_cli(["--endpoint", stub.address, *argv], console=Console(file=out, width=200))
    return code, out.getvalue()


# -- approvals --------------------------------------------------------------------------------


async def test_a_gated_run_waits_with_no_activity_and_lists_the_pending_call(
    stub: Stub, runner: FakeRunner, temporal: Client, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id)
    await asyncio.sleep(1)  # nothing more happens while no one decides
    waiting = await stub.client.get_execution(execution_id)
    assert waiting.status.phase == Phase.EXECUTION_WAITING_FOR_APPROVAL
    assert call(waiting, "call-1").status == ToolStatus.TOOL_CALL_WAITING_APPROVAL
    assert runner.attempts[execution_id] == 1
    handle = temporal.get_workflow_handle(workflow_id(execution_id))
    pending = await handle.query(QUERY_PENDING_APPROVALS, result_type=list[PendingApproval])
    assert [(p.tool_call_id, p.tool) for p in pending] == [("call-1", "execute")]
    assert pending[0].message == "Run `rm -rf build && echo cleaned`?"
    description = await handle.describe()
    assert description.raw_description.pending_activities == []
    await stub.client.terminate(execution_id, "test over")


async def test_approve_records_the_decision_and_the_run_resumes_to_completion(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id)
    decided = await stub.client.submit_approval(
        execution_id, "call-1", Action.APPROVAL_ACTION_APPROVE
    )
    recorded = call(decided, "call-1")
    assert recorded.approval_action == Action.APPROVAL_ACTION_APPROVE
    assert recorded.approved_by == "anonymous"
    assert recorded.approval_decided_at.endswith("Z")
    # What the runner pushed at the gate is kept.
    assert recorded.requires_approval and recorded.approval_requested_at
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    assert runner.attempts[execution_id] == 2
    assert runner.decisions_seen[execution_id][0].approval_action == Action.APPROVAL_ACTION_APPROVE
    assert call(final, "call-1").status == ToolStatus.TOOL_CALL_COMPLETED
    assert final.status.messages[-1].content == "cleaned"


async def test_reject_with_a_comment_gives_the_runner_the_comment(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id)
    await stub.client.submit_approval(
        execution_id, "call-1", Action.APPROVAL_ACTION_REJECT, "not on the shared box"
    )
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    seen = runner.decisions_seen[execution_id][0]
    assert (seen.approval_action, seen.result) == (
        Action.APPROVAL_ACTION_REJECT,
        "not on the shared box",
    )
    rejected = call(final, "call-1")
    assert rejected.status == ToolStatus.TOOL_CALL_SKIPPED
    assert final.status.messages[-1].content == "not on the shared box"


async def test_two_gated_calls_resume_only_when_both_are_decided(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id, "gate2")
    await stub.client.submit_approval(execution_id, "call-1", Action.APPROVAL_ACTION_SKIP)
    await asyncio.sleep(1)
    assert runner.attempts[execution_id] == 1  # one decision is not enough
    await stub.client.submit_approval(execution_id, "call-2", Action.APPROVAL_ACTION_APPROVE)
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    assert call(final, "call-1").status == ToolStatus.TOOL_CALL_SKIPPED
    assert call(final, "call-2").status == ToolStatus.TOOL_CALL_COMPLETED


async def test_approve_all_decides_every_waiting_call_of_that_tool(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id, "gate2")
    decided = await stub.client.submit_approval(
        execution_id, "call-1", Action.APPROVAL_ACTION_APPROVE_ALL
    )
    assert [call(decided, i).approval_action for i in ("call-1", "call-2")] == [
        Action.APPROVAL_ACTION_APPROVE_ALL
    ] * 2
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    assert runner.attempts[execution_id] == 2
    assert final.status.messages[-1].content == "cleaned; cleaned"


async def test_wrong_decisions_are_refused_with_a_reason(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id, "gate2")
    client = stub.client
    with pytest.raises(RpcFailed) as unspecified:
        await client.submit_approval(execution_id, "call-1", Action.APPROVAL_ACTION_UNSPECIFIED)
    assert unspecified.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UNSPECIFIED" in unspecified.value.details
    with pytest.raises(RpcFailed) as unknown:
        await client.submit_approval(execution_id, "call-9", Action.APPROVAL_ACTION_APPROVE)
    assert unknown.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no tool call 'call-9'" in unknown.value.details
    await client.submit_approval(execution_id, "call-1", Action.APPROVAL_ACTION_SKIP)
    with pytest.raises(RpcFailed) as twice:
        await client.submit_approval(execution_id, "call-1", Action.APPROVAL_ACTION_APPROVE)
    assert twice.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "already decided: APPROVAL_ACTION_SKIP by anonymous" in twice.value.details
    await client.submit_approval(execution_id, "call-2", Action.APPROVAL_ACTION_SKIP)
    await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    with pytest.raises(RpcFailed) as ended:
        await client.submit_approval(execution_id, "call-2", Action.APPROVAL_ACTION_APPROVE)
    assert ended.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not waiting for approval (phase EXECUTION_COMPLETED)" in ended.value.details


async def test_cancel_at_a_gate_interrupts_the_waiting_call(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id)
    cancelled = await stub.client.cancel(execution_id, "changed my mind")
    assert cancelled.status.phase == Phase.EXECUTION_CANCELLED
    final = await until(
        stub,
        execution_id,
        lambda e: call(e, "call-1").status == ToolStatus.TOOL_CALL_INTERRUPTED,
    )
    assert final.status.phase == Phase.EXECUTION_CANCELLED


# -- pause, resume, terminate -----------------------------------------------------------------


async def running(stub: Stub, agent_id: str, script: str) -> str:
    created = await stub.client.create_execution(script, agent_id=agent_id)
    await until(stub, created.metadata.id, phase_is(Phase.EXECUTION_IN_PROGRESS))
    return created.metadata.id


async def test_pause_stops_the_attempt_and_resume_completes_the_run(
    stub: Stub, runner: FakeRunner, temporal: Client, agent_id: str
) -> None:
    execution_id = await running(stub, agent_id, "pausable")
    paused = await stub.client.pause(execution_id, "lunch")
    assert paused.status.phase == Phase.EXECUTION_PAUSED
    assert paused.metadata.annotations[TRANSITION_ANNOTATION] == "pause"
    assert paused.metadata.annotations["stigmer.ai/pause-reason"] == "lunch"
    assert execution_id in runner.cancelled
    # The call in flight finished before the pause; nothing is interrupted or lost.
    assert call(paused, "call-1").status == ToolStatus.TOOL_CALL_COMPLETED
    description = await temporal.get_workflow_handle(workflow_id(execution_id)).describe()
    assert description.raw_description.pending_activities == []
    await asyncio.sleep(1)
    assert runner.attempts[execution_id] == 1  # nothing runs while paused
    assert (await stub.client.get_execution(execution_id)).status.phase == Phase.EXECUTION_PAUSED

    resumed = await stub.client.resume(execution_id)
    assert TRANSITION_ANNOTATION not in resumed.metadata.annotations
    assert "stigmer.ai/pause-reason" not in resumed.metadata.annotations
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    assert runner.attempts[execution_id] == 2
    assert call(final, "call-1").status == ToolStatus.TOOL_CALL_COMPLETED


async def test_pause_and_resume_refuse_a_run_in_the_wrong_phase(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await running(stub, agent_id, "hang")
    with pytest.raises(RpcFailed) as not_paused:
        await stub.client.resume(execution_id)
    assert not_paused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not paused (phase EXECUTION_IN_PROGRESS)" in not_paused.value.details
    await stub.client.terminate(execution_id, "done testing")
    with pytest.raises(RpcFailed) as ended:
        await stub.client.pause(execution_id)
    assert ended.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot be paused in phase EXECUTION_TERMINATED" in ended.value.details


async def test_terminate_ends_the_run_at_once_with_the_reason_and_settles_it(
    stub: Stub, runner: FakeRunner, temporal: Client, agent_id: str
) -> None:
    execution_id = await running(stub, agent_id, "pausable")
    terminated = await stub.client.terminate(execution_id, "runaway agent")
    assert terminated.status.phase == Phase.EXECUTION_TERMINATED
    assert terminated.status.error == "terminated: runaway agent"
    assert terminated.status.completed_at
    assert call(terminated, "call-1").status == ToolStatus.TOOL_CALL_INTERRUPTED
    assert terminated.status.sub_agent_executions[0].status == SubStatus.SUB_AGENT_CANCELLED
    # The runner's attempt is cancelled (its heartbeat finds the workflow gone) and its
    # CANCELLED does not replace the verdict.
    async with asyncio.timeout(20):
        while execution_id not in runner.cancelled:
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    final = await stub.client.get_execution(execution_id)
    assert final.status.phase == Phase.EXECUTION_TERMINATED
    with pytest.raises(RpcFailed) as again:
        await stub.client.terminate(execution_id)
    assert again.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_watcher_of_a_terminated_run_ends_with_its_settled_state(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    """The verdict is stored terminal first and settled by the next write; both kinds of
    subscription end only on the settled state, so a follower never ends showing a call still
    running that `get` shows interrupted."""
    execution_id = await running(stub, agent_id, "pausable")

    async def last_of(stream: AsyncIterator[api_pb2.AgentExecution]) -> api_pb2.AgentExecution:
        last = api_pb2.AgentExecution()
        async for state in stream:
            last = api_pb2.AgentExecution()
            last.CopyFrom(state)
        return last

    whole = asyncio.create_task(last_of(stub.client.subscribe(execution_id)))
    folded = asyncio.create_task(last_of(states(stub.client, execution_id)))
    await asyncio.sleep(0.5)  # both streams are open on the running execution
    await stub.client.terminate(execution_id, "stop watching")
    async with asyncio.timeout(20):
        ends = await asyncio.gather(whole, folded)
    stored = await stub.client.get_execution(execution_id)
    assert call(stored, "call-1").status == ToolStatus.TOOL_CALL_INTERRUPTED
    for end in ends:
        assert end.status.phase == Phase.EXECUTION_TERMINATED
        assert call(end, "call-1").status == ToolStatus.TOOL_CALL_INTERRUPTED
        assert end.status.sub_agent_executions[0].status == SubStatus.SUB_AGENT_CANCELLED


async def test_a_paused_run_can_be_cancelled_and_a_gated_one_terminated(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    paused_id = await running(stub, agent_id, "pausable")
    await stub.client.pause(paused_id)
    cancelled = await stub.client.cancel(paused_id, "not coming back to it")
    assert cancelled.status.phase == Phase.EXECUTION_CANCELLED
    assert cancelled.status.error == "cancelled: not coming back to it"
    assert cancelled.status.sub_agent_executions[0].status == SubStatus.SUB_AGENT_CANCELLED

    gated_id = await at_gate(stub, agent_id)
    terminated = await stub.client.terminate(gated_id, "wrong repo")
    assert terminated.status.phase == Phase.EXECUTION_TERMINATED
    assert call(terminated, "call-1").status == ToolStatus.TOOL_CALL_INTERRUPTED
    with pytest.raises(RpcFailed) as late:
        await stub.client.submit_approval(gated_id, "call-1", Action.APPROVAL_ACTION_APPROVE)
    assert "not waiting for approval (phase EXECUTION_TERMINATED)" in late.value.details


# -- lost workers, stalls, recover ------------------------------------------------------------


async def test_an_attempt_lost_with_its_worker_is_invoked_again_under_one_attempt(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    created = await stub.client.create_execution("lost-once", agent_id=agent_id)
    final = await until(stub, created.metadata.id, phase_is(Phase.EXECUTION_COMPLETED), 60)
    assert runner.attempts[created.metadata.id] == 2
    assert final.status.error == ""


async def test_a_stalled_run_fails_and_recover_continues_it(
    stub: Stub, runner: FakeRunner, temporal: Client, agent_id: str
) -> None:
    created = await stub.client.create_execution("silent-once", agent_id=agent_id)
    execution_id = created.metadata.id
    failed = await until(stub, execution_id, phase_is(Phase.EXECUTION_FAILED), 60)
    assert failed.status.error == f"stalled: no events for {STALL_SECONDS} s"
    # The verdict lands first, then the stalled attempt is cancelled; its CANCELLED changes
    # nothing.
    async with asyncio.timeout(20):
        while execution_id not in runner.cancelled:
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert (await stub.client.get_execution(execution_id)).status.phase == Phase.EXECUTION_FAILED
    first_run = (await temporal.get_workflow_handle(workflow_id(execution_id)).describe()).run_id

    recovered = await stub.client.recover(execution_id)
    assert recovered.status.phase in (Phase.EXECUTION_PENDING, Phase.EXECUTION_IN_PROGRESS)
    assert recovered.status.error == ""
    assert recovered.metadata.annotations["stigmer.ai/recoveries"] == "1"
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED), 60)
    assert runner.attempts[execution_id] == 2
    assert final.status.error == ""
    second_run = (await temporal.get_workflow_handle(workflow_id(execution_id)).describe()).run_id
    assert second_run != first_run
    # The first run is kept in Temporal's history.
    first = temporal.get_workflow_handle(workflow_id(execution_id), run_id=first_run)
    assert (await first.describe()).run_id == first_run


async def test_a_long_wait_at_a_gate_is_not_a_stall_for_the_attempt_after_it(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id, "gate-slow")
    await asyncio.sleep(STALL_SECONDS + 1)  # no status update for longer than the stall limit
    await stub.client.submit_approval(execution_id, "call-1", Action.APPROVAL_ACTION_APPROVE)
    final = await until(
        stub, execution_id, lambda e: e.status.phase in TERMINAL_FOR_TESTS, seconds=60
    )
    assert (final.status.phase, final.status.error) == (Phase.EXECUTION_COMPLETED, "")


TERMINAL_FOR_TESTS = (
    Phase.EXECUTION_COMPLETED,
    Phase.EXECUTION_FAILED,
    Phase.EXECUTION_CANCELLED,
    Phase.EXECUTION_TERMINATED,
)


async def test_recover_refuses_anything_but_a_failed_execution(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    created = await stub.client.create_execution("complete", agent_id=agent_id)
    await until(stub, created.metadata.id, phase_is(Phase.EXECUTION_COMPLETED))
    with pytest.raises(RpcFailed) as refused:
        await stub.client.recover(created.metadata.id)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "only a FAILED execution can be recovered" in refused.value.details


# -- the CLI ----------------------------------------------------------------------------------


async def test_the_cli_approves_the_only_waiting_call(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    execution_id = await at_gate(stub, agent_id)
    code, shown = await asyncio.to_thread(cli, stub, "get", execution_id)
    assert code == 0
    assert "phase      WAITING_FOR_APPROVAL" in shown
    assert "waiting    call-1: execute" in shown
    assert "-- Run `rm -rf build && echo cleaned`?" in shown
    code, printed = await asyncio.to_thread(cli, stub, "approve", execution_id)
    assert code == 0
    assert "APPROVE by anonymous" in printed
    assert 'call-1: execute {"command": "rm -rf build && echo cleaned"}' in printed
    assert "none: the run goes on" in printed
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    assert final.status.messages[-1].content == "cleaned"


async def test_the_cli_rejects_with_a_comment_and_asks_which_call_when_several_wait(
    stub: Stub, runner: FakeRunner, agent_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    execution_id = await at_gate(stub, agent_id, "gate2")
    code, _ = await asyncio.to_thread(cli, stub, "reject", execution_id)
    assert code == 1
    assert "2 tool calls are waiting, name one: call-1 (execute" in capsys.readouterr().err
    code, printed = await asyncio.to_thread(
        cli, stub, "reject", execution_id, "call-1", "--comment", "use make clean"
    )
    assert code == 0
    assert "REJECT by anonymous" in printed
    assert "1 more call(s) to decide" in printed
    code, _ = await asyncio.to_thread(cli, stub, "skip", execution_id, "call-2")
    assert code == 0
    final = await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
    assert final.status.messages[-1].content == "use make clean; skipped"


async def test_the_cli_approve_all(stub: Stub, runner: FakeRunner, agent_id: str) -> None:
    execution_id = await at_gate(stub, agent_id, "gate2")
    code, printed = await asyncio.to_thread(cli, stub, "approve", execution_id, "--all")
    assert code == 0
    assert printed.count("APPROVE_ALL by anonymous") == 2
    await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))


async def test_the_cli_pauses_resumes_terminates_and_recovers(
    stub: Stub, runner: FakeRunner, agent_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    execution_id = await running(stub, agent_id, "pausable")
    code, printed = await asyncio.to_thread(cli, stub, "pause", execution_id)
    assert (code, "phase      PAUSED" in printed) == (0, True)
    code, printed = await asyncio.to_thread(cli, stub, "resume", execution_id)
    assert code == 0
    await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))

    code, _ = await asyncio.to_thread(cli, stub, "recover", execution_id)
    assert code == 1
    assert "only a FAILED execution can be recovered" in capsys.readouterr().err

    other = await running(stub, agent_id, "hang")
    code, printed = await asyncio.to_thread(cli, stub, "terminate", other, "--reason", "wrong repo")
    assert code == 0
    assert "phase      TERMINATED" in printed
    assert "terminated: wrong repo" in printed


async def test_follow_asks_in_place_and_records_the_answer(
    stub: Stub, runner: FakeRunner, agent_id: str
) -> None:
    created = await stub.client.create_execution("gate", agent_id=agent_id)
    answers = iter(["?", "r", "not today"])
    prompts: list[str] = []

    def read_line(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    out = io.StringIO()
    console = Console(file=out, width=200)
    prompt = ApprovalPrompt(stub.client, created.metadata.id, console, read_line)
    view = await asyncio.wait_for(
        watch(
            stub.client,
            created.metadata.id,
            renderer=PlainRenderer(out),
            console=console,
            on_approval=prompt,
        ),
        60,
    )
    assert view.phase == Phase.EXECUTION_COMPLETED
    shown = out.getvalue()
    assert "approval needed for tool call call-1" in shown
    assert "Run `rm -rf build && echo cleaned`?" in shown
    assert "[waiting] execute rm -rf build && echo cleaned -- needs approval" in shown
    assert "answer a, A, s, r, or Enter" in shown
    assert "recorded: REJECT" in shown
    assert "[skipped] execute rm -rf build && echo cleaned -> not today" in shown
    assert prompts[-1] == "  reason > "


async def test_approved_by_is_the_callers_identity_when_the_stub_knows_it(
    stub: Stub, runner: FakeRunner, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution_id = await at_gate(stub, agent_id)
    monkeypatch.setattr(runcontrol, "caller_identity", lambda: "alice")
    decided = await stub.client.submit_approval(
        execution_id, "call-1", Action.APPROVAL_ACTION_APPROVE
    )
    assert call(decided, "call-1").approved_by == "alice"
    await until(stub, execution_id, phase_is(Phase.EXECUTION_COMPLETED))
