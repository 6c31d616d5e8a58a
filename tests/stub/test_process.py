"""The stub as a real process: grpcurl without proto files, health, a second process on the same
database, settings errors and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from devstack import Endpoints
from stigmer_cli.changes import ExecutionFold
from stigmer_cli.client import StigmerClient
from tests.stub.support import Stub

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
EXECUTIONS = "ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController"


@dataclass
class StubProcess:
    process: asyncio.subprocess.Process
    address: str
    log_path: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(stub: Stub, stack: Endpoints, port: int) -> dict[str, str]:
    suffix = f"proc-{port}"
    return {
        **os.environ,
        "STIGMER_STUB_PORT": str(port),
        "STIGMER_CONSOLE_PORT": "0",  # no web console: a developer's stub may hold 8234
        "MONGODB_URI": stack.mongodb_uri,
        # The same database as the in-process stub: two stubs, one store.
        "STIGMER_STUB_MONGODB_DATABASE": stub.settings.mongo.database,
        "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
        "TEMPORAL_AGENT_EXECUTION_STIGMER_TASK_QUEUE": f"stub-workflows-{suffix}",
        "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": f"fake-runner-{suffix}",
        "LOG_FORMAT": "json",
    }


@pytest.fixture(scope="module")
async def stub_process(
    stub: Stub, stack: Endpoints, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[StubProcess]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("stub-process") / "stderr.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stigmer_stub",
            env=process_env(stub, stack, port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
    address = f"127.0.0.1:{port}"
    try:
        async with StigmerClient(address) as client:
            await client.wait_ready(timeout_seconds=30)
        yield StubProcess(process, address, log_path)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def grpcurl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_lists_every_service_through_reflection(stub_process: StubProcess) -> None:
    services = (await grpcurl(stub_process.address, "list")).split()
    for name in (
        EXECUTIONS,
        "ai.stigmer.agentic.agentexecution.v1.AgentExecutionQueryController",
        "ai.stigmer.agentic.session.v1.SessionCommandController",
        "ai.stigmer.agentic.session.v1.SessionQueryController",
        "ai.stigmer.agentic.agentinstance.v1.AgentInstanceCommandController",
        "ai.stigmer.agentic.agentinstance.v1.AgentInstanceQueryController",
        "ai.stigmer.agentic.agent.v1.AgentCommandController",
        "ai.stigmer.agentic.agent.v1.AgentQueryController",
        "ai.stigmer.agentic.skill.v1.SkillCommandController",
        "ai.stigmer.agentic.skill.v1.SkillQueryController",
        "ai.stigmer.agentic.environment.v1.EnvironmentCommandController",
        "ai.stigmer.agentic.environment.v1.EnvironmentQueryController",
        "grpc.health.v1.Health",
    ):
        assert name in services
    methods = (await grpcurl(stub_process.address, "list", EXECUTIONS)).split()
    assert f"{EXECUTIONS}.updateStatus" in methods


async def test_grpcurl_creates_an_agent_and_an_execution_from_json(
    stub_process: StubProcess,
) -> None:
    agent = json.loads(
        await grpcurl(
            "-d",
            '{"metadata": {"name": "grpcurl agent"}, "spec": {"instructions": "be brief"}}',
            stub_process.address,
            "ai.stigmer.agentic.agent.v1.AgentCommandController/create",
        )
    )
    request = json.dumps({"spec": {"agentId": agent["metadata"]["id"], "message": "hi"}})
    execution = json.loads(
        await grpcurl("-d", request, stub_process.address, f"{EXECUTIONS}/create")
    )
    assert execution["metadata"]["id"].startswith("aex-")
    assert execution["spec"]["session_id"].startswith("ses-")
    assert execution["status"]["phase"] == "EXECUTION_PENDING"


async def test_health_reports_serving(stub_process: StubProcess) -> None:
    health = json.loads(await grpcurl(stub_process.address, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}


async def test_a_subscriber_of_one_process_sees_updates_made_through_another(
    stub: Stub, stub_process: StubProcess
) -> None:
    agent = await stub.client.create_agent("Two Processes")
    created = await stub.client.create_execution("hi", agent_id=agent.metadata.id)
    eid = created.metadata.id
    async with StigmerClient(stub_process.address) as remote:
        stream = remote.subscribe(eid)
        first = await anext(stream)
        await stub.client.update_status(
            eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS)
        )
        await stub.client.update_status(
            eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
        )
        async with asyncio.timeout(20):
            rest = [e.status.phase async for e in stream]
    assert first.status.phase == Phase.EXECUTION_PENDING
    assert rest == [Phase.EXECUTION_IN_PROGRESS, Phase.EXECUTION_COMPLETED]


async def test_a_delta_subscriber_of_one_process_folds_updates_made_through_another(
    stub: Stub, stub_process: StubProcess
) -> None:
    agent = await stub.client.create_agent("Two Processes, Deltas")
    created = await stub.client.create_execution("hi", agent_id=agent.metadata.id)
    eid = created.metadata.id
    message = api_pb2.AgentMessage(type=enum_pb2.MESSAGE_AI, content="a")
    async with StigmerClient(stub_process.address) as remote:
        fold = ExecutionFold()
        stream = remote.subscribe_deltas(eid)
        assert fold.apply(await anext(stream)) is not None
        await stub.client.update_status(
            eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_IN_PROGRESS, messages=[message])
        )
        await stub.client.update_status(
            eid, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
        )
        async with asyncio.timeout(20):
            async for change in stream:
                fold.apply(change)
        assert fold.execution == await remote.get_execution(eid)
    assert fold.execution is not None
    assert fold.execution.status.phase == Phase.EXECUTION_COMPLETED
    assert [m.content for m in fold.execution.status.messages] == ["a"]


async def test_invalid_settings_exit_with_a_message_naming_the_variable() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stigmer_stub",
        env={**os.environ, "STIGMER_STUB_PORT": "not-a-port"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "STIGMER_STUB_PORT" in err.decode()


async def test_sigterm_stops_the_process_gracefully(stub_process: StubProcess) -> None:
    """Last in this module: it stops the shared process."""
    process = stub_process.process
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        code = await process.wait()
    events = [
        json.loads(line)["event"]
        for line in stub_process.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert code == 0
    assert events.index("stub_started") < events.index("stub_stopping")
    assert events[-1] == "stub_stopped"
