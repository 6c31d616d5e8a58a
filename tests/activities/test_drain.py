"""Drain under `ActivityEnvironment`: a worker that shuts down hands its runs over, never cancels
them as if the user had, and never reports FAILED while Temporal will retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.activities.fakes import FakeOrchestratorPorts, final_turn, tool_turn
from tests.activities.test_runner_activities import NullLive, an_execution, make_settings, phases
from worker.activities.runner import RunnerActivities, cancelled_by_worker_shutdown
from worker.domain.agent_events import AgentEvent
from worker.run.attempt import AttemptControls
from worker.run.service import ExecutionPlan, GraphtonExecutions
from worker.run.status_publisher import StatusPublisher
from worker.sandbox import LocalSandboxes


@dataclass
class SteppedRuntime:
    """Yields the events the test releases, one `step()` at a time; records if it was stopped."""

    events_to_yield: list[AgentEvent]
    released: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    yielded: int = 0
    stopped: bool = False

    def step(self, count: int = 1) -> None:
        for _ in range(count):
            self.released.release()

    async def events(self, plan: ExecutionPlan) -> AsyncIterator[AgentEvent]:
        try:
            for event in self.events_to_yield:
                await self.released.acquire()
                self.yielded += 1
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            self.stopped = True
            raise


def activities(
    tmp_path: Path, fake: FakeOrchestratorPorts, runtime: Any, *, attempts_left: bool
) -> RunnerActivities:
    settings = make_settings(tmp_path)
    executions = GraphtonExecutions(
        settings,
        fake,
        runtime,
        lambda execution_id: StatusPublisher(fake, execution_id, settings.status),
        NullLive(),
        attempt=AttemptControls(
            heartbeat=lambda: activity.heartbeat,
            attempts_left=lambda: attempts_left,
            worker_stopping=activity.wait_for_worker_shutdown,
            cancelled_by_shutdown=cancelled_by_worker_shutdown,
        ),
    )
    return RunnerActivities(fake, executions, LocalSandboxes(settings.sandbox_root))


async def wait_for(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_shutdown_during_a_model_turn_hands_the_run_over_at_once(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = SteppedRuntime([*tool_turn(1), *tool_turn(2), *final_turn()])
    acts = activities(tmp_path, fake, runtime, attempts_left=True)
    env = ActivityEnvironment()
    run = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    runtime.step(5 + 1)  # the first turn and its tool, then a token of the second turn
    await wait_for(lambda: runtime.yielded == 6)

    env.worker_shutdown()
    with pytest.raises(ApplicationError) as err:
        await run

    assert err.value.type == "WorkerShuttingDown"
    assert not err.value.non_retryable
    assert runtime.stopped, "the agent was stopped, not left running"
    assert phases(fake)[-1] == enum_pb2.EXECUTION_IN_PROGRESS
    assert enum_pb2.EXECUTION_FAILED not in phases(fake)
    assert enum_pb2.EXECUTION_CANCELLED not in phases(fake)
    final = fake.updates[-1][1]
    assert [t.status for t in final.tool_calls] == [enum_pb2.TOOL_CALL_COMPLETED]


async def test_shutdown_while_a_tool_is_outstanding_waits_for_its_result(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = SteppedRuntime([*tool_turn(1), *final_turn()])
    acts = activities(tmp_path, fake, runtime, attempts_left=True)
    env = ActivityEnvironment()
    run = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    runtime.step(3)  # tokens and the model turn that asks for the tool
    await wait_for(lambda: runtime.yielded == 3)

    env.worker_shutdown()
    await asyncio.sleep(0.1)
    assert not run.done(), "the requested tool call is not cut off"
    runtime.step(1)  # the tool starts
    await asyncio.sleep(0.1)
    assert not run.done()
    runtime.step(1)  # ... and ends: a safe point
    with pytest.raises(ApplicationError) as err:
        await run

    assert err.value.type == "WorkerShuttingDown"
    assert runtime.yielded == 5, "nothing after the safe point ran"
    final = fake.updates[-1][1]
    assert final.phase == enum_pb2.EXECUTION_IN_PROGRESS
    assert [t.status for t in final.tool_calls] == [enum_pb2.TOOL_CALL_COMPLETED]


async def test_on_the_last_attempt_the_run_keeps_going_and_completes(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = SteppedRuntime([*tool_turn(1), *final_turn()])
    acts = activities(tmp_path, fake, runtime, attempts_left=False)
    env = ActivityEnvironment()
    run = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    runtime.step(2)
    await wait_for(lambda: runtime.yielded == 2)
    env.worker_shutdown()
    runtime.step(5)

    status = await run

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert not runtime.stopped


async def test_the_graceful_window_running_out_is_a_handover_not_a_cancel(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = SteppedRuntime([*tool_turn(1), *final_turn()])
    acts = activities(tmp_path, fake, runtime, attempts_left=True)
    env = ActivityEnvironment()
    run = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    runtime.step(4)  # the tool has started and hangs
    await wait_for(lambda: runtime.yielded == 4)
    env.worker_shutdown()
    await asyncio.sleep(0.05)

    env.cancel(activity.ActivityCancellationDetails(worker_shutdown=True))
    with pytest.raises(ApplicationError) as err:
        await run

    assert err.value.type == "WorkerShuttingDown"
    assert not err.value.non_retryable
    assert enum_pb2.EXECUTION_CANCELLED not in phases(fake)
    assert phases(fake)[-1] == enum_pb2.EXECUTION_IN_PROGRESS


async def test_window_running_out_on_the_last_attempt_fails_with_a_clear_error(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = SteppedRuntime([*tool_turn(1), *final_turn()])
    acts = activities(tmp_path, fake, runtime, attempts_left=False)
    env = ActivityEnvironment()
    run = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    runtime.step(4)
    await wait_for(lambda: runtime.yielded == 4)
    env.worker_shutdown()

    env.cancel(activity.ActivityCancellationDetails(worker_shutdown=True))
    with pytest.raises(ApplicationError) as err:
        await run

    assert err.value.type == "WorkerShuttingDown"
    final = fake.updates[-1][1]
    assert final.phase == enum_pb2.EXECUTION_FAILED
    assert "worker shut down before the execution finished" in final.error
    assert len(final.messages) == 2, "the transcript is kept"


async def test_a_cancel_requested_by_the_workflow_still_pushes_cancelled(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = SteppedRuntime([*tool_turn(1), *final_turn()])
    acts = activities(tmp_path, fake, runtime, attempts_left=True)
    env = ActivityEnvironment()
    run = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    runtime.step(2)
    await wait_for(lambda: runtime.yielded == 2)

    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert phases(fake)[-1] == enum_pb2.EXECUTION_CANCELLED
    assert runtime.stopped
