"""The activities under `ActivityEnvironment`: heartbeats, phases, error types, cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1.spec_pb2 import AgentExecutionSpec
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.activities.fakes import FakeOrchestratorPorts, FakeRuntime, final_turn, tool_turn
from worker.activities.result import without_additions
from worker.activities.runner import RunnerActivities, activity_heartbeat_timeout, current_attempt
from worker.domain import fencing
from worker.run.attempt import AttemptControls
from worker.run.service import GraphtonExecutions
from worker.run.status_publisher import StatusPublisher
from worker.sandbox import LocalSandboxes
from worker.settings import Settings, load_settings


class NullLive:
    """Live events that the run builds in full (enabled) and this fake drops."""

    enabled = True

    async def publish(self, execution_id: str, event: Any) -> None:
        return None

    async def close_stream(self, execution_id: str) -> None:
        return None


def make_settings(tmp_path: Path, heartbeat_interval: str = "0.05") -> Settings:
    return load_settings(
        {
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
            "WORKER_HEARTBEAT_INTERVAL_SECONDS": heartbeat_interval,
            "STIGMER_STATUS_UPDATE_INTERVAL_MS": "20",
            "STIGMER_STATUS_FINAL_DEADLINE_SECONDS": "2",
        }
    )


def make_activities(
    tmp_path: Path,
    fake: FakeOrchestratorPorts,
    runtime: FakeRuntime,
    heartbeat_interval: str = "0.05",
) -> RunnerActivities:
    settings = make_settings(tmp_path, heartbeat_interval)
    executions = GraphtonExecutions(
        settings,
        fake,
        runtime,
        lambda execution_id: StatusPublisher(fake, execution_id, settings.status),
        NullLive(),
        attempt=AttemptControls(
            heartbeat=lambda: activity.heartbeat,
            heartbeat_timeout=activity_heartbeat_timeout,
            run_attempt=current_attempt,
        ),
    )
    return RunnerActivities(fake, executions, LocalSandboxes(settings.sandbox_root))


def an_execution(session_id: str = "ses-1", message: str = "List the files") -> Any:
    return execution_api.AgentExecution(
        metadata=ApiResourceMetadata(id="aex-1"),
        spec=AgentExecutionSpec(session_id=session_id, message=message),
    )


def phases(fake: FakeOrchestratorPorts) -> list[int]:
    return [status.phase for _, status in fake.updates]


async def test_ensure_thread_returns_the_session_thread_and_records_it_once(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    acts = make_activities(tmp_path, fake, FakeRuntime())
    env = ActivityEnvironment()
    first = await env.run(acts.ensure_thread, "ses-1", "agt-1")
    second = await env.run(acts.ensure_thread, "ses-1", "agt-1")
    assert first == second == "thread-ses-1"
    assert fake.sessions["ses-1"].spec.thread_id == "thread-ses-1"
    assert len(fake.session_updates) == 1


async def test_ensure_thread_still_answers_when_the_orchestrator_is_down(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    fake.down = True
    acts = make_activities(tmp_path, fake, FakeRuntime())
    assert await ActivityEnvironment().run(acts.ensure_thread, "ses-1", "") == "thread-ses-1"


async def test_ensure_thread_without_session_is_stable_for_the_workflow(tmp_path: Path) -> None:
    acts = make_activities(tmp_path, FakeOrchestratorPorts(), FakeRuntime())
    env = ActivityEnvironment()
    a = await env.run(acts.ensure_thread, "", "agt-1")
    b = await env.run(acts.ensure_thread, "", "agt-1")
    assert a == b
    assert a.startswith("thread-ephemeral-")


async def test_execute_graphton_completes_with_progressive_updates_and_heartbeats(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*tool_turn(1), *tool_turn(2), *final_turn()], delay=0.02)
    acts = make_activities(tmp_path, fake, runtime)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    status = await env.run(acts.execute_graphton, an_execution(), "thread-ses-1")

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert status.started_at and status.completed_at
    assert [m.type for m in status.messages] == [
        enum_pb2.MESSAGE_HUMAN,
        enum_pb2.MESSAGE_AI,
        enum_pb2.MESSAGE_AI,
        enum_pb2.MESSAGE_AI,
    ]
    assert [t.status for t in status.tool_calls] == [enum_pb2.TOOL_CALL_COMPLETED] * 2
    # IN_PROGRESS reaches the orchestrator first, COMPLETED last, and the last push is the result.
    assert phases(fake)[0] == enum_pb2.EXECUTION_IN_PROGRESS
    assert phases(fake)[-1] == enum_pb2.EXECUTION_COMPLETED
    assert without_additions(fake.updates[-1][1]) == status
    assert len(fake.updates) >= 3
    assert beats, "the activity heartbeated"
    assert beats[-1][0]["execution_id"] == "aex-1"
    assert runtime.plans[0].thread_id == "thread-ses-1"


async def test_a_short_heartbeat_timeout_shortens_the_heartbeat_period(tmp_path: Path) -> None:
    """The workflow's heartbeat timeout wins over the configured period: beating every 25 s
    under a 0.3 s timeout would have Temporal time every attempt out."""
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*tool_turn(1)], hang_after=True)
    acts = make_activities(tmp_path, fake, runtime, heartbeat_interval="25")
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.3))
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    task = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    try:
        async with asyncio.timeout(10):  # at the configured 25 s period, only one beat by then
            while len(beats) < 4:
                await asyncio.sleep(0.02)
    finally:
        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_missing_session_fails_non_retryable_and_pushes_failed(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    acts = make_activities(tmp_path, fake, FakeRuntime())
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            acts.execute_graphton, an_execution(session_id="ses-missing"), "t"
        )
    assert err.value.type == "NotFound"
    assert err.value.non_retryable
    final = fake.updates[-1][1]
    assert final.phase == enum_pb2.EXECUTION_FAILED
    assert "ses-missing" in final.error
    assert final.messages[0].content == "List the files"


async def test_empty_message_is_invalid_input(tmp_path: Path) -> None:
    acts = make_activities(tmp_path, FakeOrchestratorPorts.with_agent(), FakeRuntime())
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.execute_graphton, an_execution(message="  "), "t")
    assert err.value.type == "InvalidInput"
    assert err.value.non_retryable


async def test_agent_crash_keeps_the_transcript_and_is_retryable(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*tool_turn(1)], raise_after=RuntimeError("model exploded"))
    acts = make_activities(tmp_path, fake, runtime)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t")
    assert err.value.type == "AgentFailed"
    assert not err.value.non_retryable
    final = fake.updates[-1][1]
    assert final.phase == enum_pb2.EXECUTION_FAILED
    assert "model exploded" in final.error
    assert len(final.messages) == 2, "the human message and the AI turn survive the failure"
    assert final.tool_calls[0].status == enum_pb2.TOOL_CALL_COMPLETED
    assert all(s.phase != enum_pb2.EXECUTION_COMPLETED for _, s in fake.updates)


async def test_cancellation_stops_the_agent_and_pushes_cancelled(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*tool_turn(1)], hang_after=True)
    acts = make_activities(tmp_path, fake, runtime)
    env = ActivityEnvironment()
    task = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    while not any(s.tool_calls for _, s in fake.updates):
        await asyncio.sleep(0.01)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    final = fake.updates[-1][1]
    assert final.phase == enum_pb2.EXECUTION_CANCELLED
    assert final.completed_at
    assert len(final.messages) == 2


async def test_cleanup_sandbox_is_idempotent_and_refuses_paths(tmp_path: Path) -> None:
    acts = make_activities(tmp_path, FakeOrchestratorPorts(), FakeRuntime())
    workspace = tmp_path / "sandboxes" / "ses-1"
    workspace.mkdir(parents=True)
    (workspace / "notes.txt").write_text("x")
    env = ActivityEnvironment()
    await env.run(acts.cleanup_sandbox, "ses-1")
    await env.run(acts.cleanup_sandbox, "ses-1")
    assert not workspace.exists()
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.cleanup_sandbox, "../etc")
    assert err.value.non_retryable


async def test_retryable_failure_with_attempts_left_keeps_the_run_in_progress(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*tool_turn(1)], raise_after=RuntimeError("provider 503"))
    settings = make_settings(tmp_path)
    executions = GraphtonExecutions(
        settings,
        fake,
        runtime,
        lambda execution_id: StatusPublisher(fake, execution_id, settings.status),
        NullLive(),
        attempt=AttemptControls(heartbeat=lambda: activity.heartbeat, attempts_left=lambda: True),
    )
    acts = RunnerActivities(fake, executions, LocalSandboxes(settings.sandbox_root))
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t")
    assert not err.value.non_retryable
    assert enum_pb2.EXECUTION_FAILED not in phases(fake), "a retried run is not reported FAILED"
    assert len(fake.updates[-1][1].messages) == 2, "the transcript so far was pushed"


class RecordingLive:
    """Live events that record what the run publishes, switched on or off."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.types: list[str] = []
        self.closed: list[str] = []

    async def publish(self, execution_id: str, event: Any) -> None:
        self.types.append(event["type"])

    async def close_stream(self, execution_id: str) -> None:
        self.closed.append(execution_id)


@pytest.mark.parametrize("enabled", [True, False])
async def test_disabled_live_events_get_only_phases_and_the_close(
    tmp_path: Path, enabled: bool
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    settings = make_settings(tmp_path)
    live = RecordingLive(enabled=enabled)
    executions = GraphtonExecutions(
        settings,
        fake,
        FakeRuntime([*tool_turn(1), *final_turn()]),
        lambda execution_id: StatusPublisher(fake, execution_id, settings.status),
        live,
        attempt=AttemptControls(heartbeat=lambda: activity.heartbeat),
    )
    acts = RunnerActivities(fake, executions, LocalSandboxes(settings.sandbox_root))

    status = await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t")

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert live.closed == ["aex-1"]
    if enabled:
        assert {"phase", "tool_start", "tool_end"} <= set(live.types)
    else:
        assert live.types == ["phase", "phase"], "a disabled stream gets no per-event work"


@pytest.mark.parametrize(
    "execution",
    [
        execution_api.AgentExecution(
            metadata=ApiResourceMetadata(id="aex-1"),
            spec=AgentExecutionSpec(session_id="ses-1", message=" "),
        ),
        execution_api.AgentExecution(
            metadata=ApiResourceMetadata(id="aex-1"), spec=AgentExecutionSpec(message="hi")
        ),
    ],
    ids=["empty-message", "neither-session-nor-agent"],
)
async def test_an_execution_failing_validation_is_pushed_failed(
    tmp_path: Path, execution: execution_api.AgentExecution
) -> None:
    """An orchestrator that does not record failures itself would otherwise show it PENDING."""
    fake = FakeOrchestratorPorts.with_agent()
    acts = make_activities(tmp_path, fake, FakeRuntime())
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.execute_graphton, execution, "t")
    assert err.value.type == "InvalidInput"
    [(execution_id, final)] = fake.updates
    assert execution_id == "aex-1"
    assert final.phase == enum_pb2.EXECUTION_FAILED
    assert final.error == str(err.value.message)
    assert final.completed_at


async def test_an_execution_without_an_id_fails_without_a_push(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    acts = make_activities(tmp_path, fake, FakeRuntime())
    with pytest.raises(ApplicationError):
        await ActivityEnvironment().run(
            acts.execute_graphton,
            execution_api.AgentExecution(spec=AgentExecutionSpec(message="x")),
            "t",
        )
    assert fake.updates == []


async def test_the_heartbeat_counts_the_status_updates_that_landed(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*tool_turn(1), *tool_turn(2)], hang_after=True)
    acts = make_activities(tmp_path, fake, runtime)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    task = asyncio.create_task(env.run(acts.execute_graphton, an_execution(), "t"))
    try:
        async with asyncio.timeout(10):
            while not any(b["status_updates"] >= 1 for b in beats):
                await asyncio.sleep(0.02)
    finally:
        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    counts = [b["status_updates"] for b in beats]
    assert counts == sorted(counts)
    assert counts[-1] <= len(fake.updates)


async def test_every_status_update_names_the_activity_attempt_and_its_number(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*tool_turn(1), *final_turn()], delay=0.05)
    acts = make_activities(tmp_path, fake, runtime)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_run_id="run-42", activity_id="7", attempt=3)
    await env.run(acts.execute_graphton, an_execution(), "t")
    assert len(fake.update_metadata) >= 2
    assert {m[fencing.ATTEMPT_HEADER] for m in fake.update_metadata} == {"run-42:7/3"}
    numbers = [int(m[fencing.SEQ_HEADER]) for m in fake.update_metadata]
    assert numbers == sorted(set(numbers)), "numbers grow with every update"
