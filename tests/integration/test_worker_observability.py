"""The worker's health endpoints and metrics, on a real run and with Temporal taken down."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1.spec_pb2 import AgentSpec
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1.spec_pb2 import AgentExecutionSpec
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.agentinstance.v1.spec_pb2 import AgentInstanceSpec
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.session.v1.spec_pb2 import SessionSpec
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devstack import Stack
from tests.adapters.fake_orchestrator import FakeOrchestrator, start_fake_orchestrator
from tests.integration.invoke_workflow import InvokeForTest
from worker import app
from worker.converter import DATA_CONVERTER
from worker.settings import load_settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get(port: int, path: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    return await asyncio.to_thread(fetch)


async def eventually(check: Callable[[], Any], within: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def test_metrics_status_and_readiness_follow_the_worker(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack(temporal=True, mongo=False, redis=False, ephemeral=True)
    temporal = stack.endpoints.temporal_address
    fake = FakeOrchestrator()
    fake.agents["agt-1"] = agent_api.Agent(
        metadata=ApiResourceMetadata(id="agt-1"),
        spec=AgentSpec(instructions="Helpful.\nscript: demo"),
    )
    fake.instances["ain-1"] = instance_api.AgentInstance(
        metadata=ApiResourceMetadata(id="ain-1"), spec=AgentInstanceSpec(agent_id="agt-1")
    )
    fake.sessions["ses-o"] = session_api.Session(
        metadata=ApiResourceMetadata(id="ses-o"), spec=SessionSpec(agent_instance_id="ain-1")
    )
    server, port = await start_fake_orchestrator(fake)
    health = free_port()
    queue = "obs-" + uuid.uuid4().hex[:8]
    settings = load_settings(
        {
            "TEMPORAL_SERVICE_ADDRESS": temporal,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": queue,
            "STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{port}",
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
            "HEALTH_PORT": str(health),
            "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "2",
        }
    )
    stop = asyncio.Event()
    worker_task = asyncio.create_task(app.run(settings, stop=stop))
    try:
        await eventually(lambda: _ready(health))
        client = await Client.connect(temporal, data_converter=DATA_CONVERTER)
        execution = execution_api.AgentExecution(
            metadata=ApiResourceMetadata(id="aex-obs"),
            spec=AgentExecutionSpec(session_id="ses-o", message="Go"),
        )
        async with Worker(
            client,
            task_queue=queue + "-wf",
            workflows=[InvokeForTest],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            status = await client.execute_workflow(
                InvokeForTest.run,
                args=[execution, queue],
                id="obs-" + uuid.uuid4().hex,
                task_queue=queue + "-wf",
            )
        assert status.phase == enum_pb2.EXECUTION_COMPLETED

        code, body = await get(health, "/metrics")
        assert code == 200
        for series in (
            'executions_total{outcome="completed"} 1.0',
            "execution_duration_seconds_count 1.0",
            "events_processed_total",
            "status_updates_sent_total",
            "status_update_latency_seconds_bucket",
            'tokens_total{kind="output",model=',
        ):
            assert series in body, series
        assert "temporal_" in body, "the SDK's own runtime metrics are exposed too"

        code, body = await get(health, "/status")
        assert code == 200
        assert json.loads(body)["ready"] is True
        assert (await get(health, "/livez"))[0] == 200

        stack.stop_service("temporal", graceful=False)
        code, body = await eventually(lambda: _not_ready(health))
        assert json.loads(body)["checks"]["temporal"] is False
    finally:
        stop.set()
        await asyncio.wait_for(worker_task, 30)
        await server.stop(None)


async def _ready(port: int) -> bool:
    try:
        return (await get(port, "/readyz"))[0] == 200
    except OSError:
        return False


async def _not_ready(port: int) -> tuple[int, str] | None:
    code, body = await get(port, "/readyz")
    return (code, body) if code == 503 else None


async def test_worker_starts_without_an_orchestrator_and_says_so(
    stack: Any, tmp_path: Path
) -> None:
    health = free_port()
    settings = load_settings(
        {
            "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": "lonely-" + uuid.uuid4().hex[:8],
            "STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{free_port()}",
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
            "HEALTH_PORT": str(health),
        }
    )
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        worker_task = asyncio.create_task(app.run(settings, stop=stop))
        try:
            code, body = await eventually(lambda: _status_when_polling(health))
            checks = json.loads(body)["checks"]
            assert checks["polling"] is True
            assert checks["temporal"] is True
            assert checks["orchestrator"] is False
            assert code == 503, "not ready while the orchestrator is unreachable"
        finally:
            stop.set()
            await asyncio.wait_for(worker_task, 30)
    events = [entry["event"] for entry in logs]
    assert "orchestrator_unreachable" in events
    assert "worker_started" in events


async def _status_when_polling(port: int) -> tuple[int, str] | None:
    try:
        code, body = await get(port, "/readyz")
    except OSError:
        return None
    return (code, body) if json.loads(body)["checks"].get("polling") else None
