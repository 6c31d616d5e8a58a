"""A run's secrets belong to the ExecuteGraphton activity that carries it: masked in everything
the run emits (its statuses, its error for Temporal), released when the activity returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import spec_pb2 as execution_spec
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.activities.fakes import FakeOrchestratorPorts, FakeRuntime, final_turn
from tests.activities.test_runner_activities import NullLive, make_settings
from worker.activities.runner import RunnerActivities, activity_heartbeat_timeout
from worker.domain.agent_events import ToolEnded, ToolStarted
from worker.errors import ConfigurationError
from worker.logs import MASK, SECRETS
from worker.run.attempt import AttemptControls
from worker.run.prepare import Prepared
from worker.run.resolve import Resolved
from worker.run.service import GraphtonExecutions
from worker.run.status_publisher import StatusPublisher
from worker.sandbox import LocalSandboxes


class EnvironmentSecrets:
    """Registers the execution's `is_secret` runtime values, as `SpecPreparer` does, and
    prepares nothing else."""

    @asynccontextmanager
    async def prepare(
        self, execution: execution_api.AgentExecution, resolved: Resolved
    ) -> AsyncIterator[Prepared | None]:
        SECRETS.add(v.value for v in execution.spec.runtime_env.values() if v.is_secret)
        yield None


def activities(
    tmp_path: Path, fake: FakeOrchestratorPorts, runtime: FakeRuntime
) -> RunnerActivities:
    settings = make_settings(tmp_path)
    executions = GraphtonExecutions(
        settings,
        fake,
        runtime,
        lambda execution_id: StatusPublisher(fake, execution_id, settings.status),
        NullLive(),
        attempt=AttemptControls(
            heartbeat=lambda: activity.heartbeat, heartbeat_timeout=activity_heartbeat_timeout
        ),
        preparer=EnvironmentSecrets(),
    )
    return RunnerActivities(fake, executions, LocalSandboxes(settings.sandbox_root))


def with_secret(secret: str) -> execution_api.AgentExecution:
    execution = execution_api.AgentExecution(
        metadata=ApiResourceMetadata(id="aex-secret"),
        spec=execution_spec.AgentExecutionSpec(session_id="ses-1", message="Read the key"),
    )
    execution.spec.runtime_env["API_TOKEN"].value = secret
    execution.spec.runtime_env["API_TOKEN"].is_secret = True
    return execution


def reading(secret: str) -> list[ToolStarted | ToolEnded]:
    return [
        ToolStarted(tool_call_id="c1", name="read_file", args={"path": "key.txt"}),
        ToolEnded(tool_call_id="c1", name="read_file", result=f"token={secret}", error=""),
    ]


async def test_a_completed_runs_secret_is_masked_in_its_statuses_and_released_after(
    tmp_path: Path,
) -> None:
    secret = "rt-scope-secret-completed-1"
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime([*reading(secret), *final_turn()])

    status = await ActivityEnvironment().run(
        activities(tmp_path, fake, runtime).execute_graphton, with_secret(secret), "thread-ses-1"
    )

    assert status.tool_calls[0].result == f"token={MASK}"
    assert all(secret.encode() not in s.SerializeToString() for _, s in fake.updates)
    assert secret not in SECRETS


async def test_a_failed_runs_error_reaches_temporal_masked_and_the_secret_is_released(
    tmp_path: Path,
) -> None:
    secret = "rt-scope-secret-failed-2"
    fake = FakeOrchestratorPorts.with_agent()
    runtime = FakeRuntime(
        reading(secret), raise_after=ConfigurationError(f"the key {secret} was refused")
    )

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            activities(tmp_path, fake, runtime).execute_graphton,
            with_secret(secret),
            "thread-ses-1",
        )

    assert raised.value.message == f"the key {MASK} was refused"
    assert fake.updates[-1][1].error == f"the key {MASK} was refused"
    assert secret not in SECRETS
