"""Bad input catalogue: malformed requests to the stub, malformed activity payloads, and executions
whose spec cannot run. Each gets a specific error (non-retryable where no retry can help), nothing
crashes or hangs, and what was stored before is intact afterwards.

Three tables:

- `STUB_ROWS`: the stub's gRPC API, called for real; the answer is a status code and a message
  naming the problem.
- `ACTIVITY_ROWS`: runner activities called by name through Temporal (`probe_workflow.Probe`) with
  hand-made payloads; the answer is the `ApplicationError` Temporal recorded.
- `EXECUTION_ROWS`: executions created through the stub that the cluster's workers run; the
  answer is the stored execution (FAILED, the error, the transcript kept) and the workflow's
  history (error type, retryability, attempts).
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1 import io_pb2 as agent_io
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.commons.apiresource.apiresourcekind import api_resource_kind_pb2 as kind_pb2
from google.protobuf import json_format
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.history.v1 import HistoryEvent
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from stigmer_cli.client import RpcFailed, StigmerClient
from tests.reliability.cluster import Cluster
from tests.reliability.probe_workflow import RAW, Probe

pytestmark = pytest.mark.integration

Code = grpc.StatusCode
Phase = enum_pb2.ExecutionPhase
MiB = 1024 * 1024
NO_SUCH = "01m80000000000000000000000"


def zipped(**files: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name.replace("__", "/"), text)
    return buffer.getvalue()


SKILL_MD = "---\nname: witness\ndescription: A skill that works.\n---\nUse it well.\n"


@dataclass
class Stored:
    """What exists before the catalogue runs, and must be unchanged after it."""

    agent: agent_api.Agent
    execution: execution_api.AgentExecution
    skill_slug: str
    skill_hash: str
    address: str = ""
    workers: list[Any] = field(default_factory=list)
    snapshot: dict[str, bytes] = field(default_factory=dict)


async def snapshot(client: StigmerClient, stored: Stored) -> dict[str, bytes]:
    session = await client.get_session(stored.execution.spec.session_id)
    skill = await client.get_skill(stored.skill_slug)
    return {
        "agent": (await client.get_agent(stored.agent.metadata.id)).SerializeToString(),
        "execution": (await client.get_execution(stored.execution.metadata.id)).SerializeToString(),
        "session": session.SerializeToString(),
        "skill": skill.SerializeToString(),
        "artifact": await client.get_skill_artifact(skill.status.artifact_storage_key),
    }


@pytest.fixture(scope="module")
async def stored(cluster: Cluster) -> Stored:
    await cluster.ensure_workers(2)
    client = cluster.client
    skill = await client.push_skill(
        f"witness-{uuid.uuid4().hex[:6]}", zipped(**{"SKILL.md": SKILL_MD})
    )
    agent = await client.create_agent(f"witness {uuid.uuid4().hex[:6]}", instructions="Be brief.")
    execution_id = await cluster.start(
        "Remember me", agent_id=agent.metadata.id, model="scripted:quick"
    )
    await cluster.finished(execution_id)
    # The workflow records the outcome after the runner's last push; only then is it settled.
    handle = cluster.temporal.get_workflow_handle(f"stigmer/agent-execution/invoke/{execution_id}")
    assert await _closed(handle)
    execution = await client.get_execution(execution_id)
    assert execution.status.phase == Phase.EXECUTION_COMPLETED
    witness = Stored(agent, execution, skill.metadata.slug, skill.status.version_hash)
    witness.workers = cluster.live_workers()
    witness.address = cluster.stub_address
    witness.snapshot = await snapshot(client, witness)
    return witness


# -- the stub's RPCs -------------------------------------------------------------------------

StubCall = Callable[[StigmerClient, Stored], Awaitable[Any]]


@dataclass(frozen=True)
class StubRow:
    name: str
    call: StubCall
    code: grpc.StatusCode
    says: str


async def _subscribe(client: StigmerClient, execution_id: str) -> None:
    async for _ in client.subscribe(execution_id):
        pass


async def _list(client: StigmerClient, **request: Any) -> Any:
    try:
        return await client.execution_queries.list(
            execution_io.ListAgentExecutionsRequest(**request), timeout=10
        )
    except grpc.aio.AioRpcError as err:
        raise RpcFailed("list", err.code(), err.details() or "") from err


async def _big_request(address: str, call: Callable[[StigmerClient], Awaitable[Any]]) -> Any:
    """A call from a client willing to send more than the server accepts."""
    async with StigmerClient(address, timeout_seconds=60, max_message_bytes=64 * MiB) as big:
        return await call(big)


def _instance(name: str, *, agent_id: str) -> instance_api.AgentInstance:
    instance = instance_api.AgentInstance()
    instance.metadata.name = name
    instance.spec.agent_id = agent_id
    return instance


async def _raw(method: Any, request: Any) -> Any:
    try:
        return await method(request, timeout=20)
    except grpc.aio.AioRpcError as err:
        raise RpcFailed("rpc", err.code(), err.details() or "") from err


def _status(phase: int) -> execution_api.AgentExecutionStatus:
    status = execution_api.AgentExecutionStatus()
    status.phase = Phase.ValueType(phase)  # also numbers the enum does not name
    return status


STUB_ROWS = [
    StubRow(
        "execution without session or agent",
        lambda c, s: c.create_execution("hi"),
        Code.INVALID_ARGUMENT,
        "spec.session_id or spec.agent_id is required",
    ),
    StubRow(
        "execution for an unknown agent",
        lambda c, s: c.create_execution("hi", agent_id=f"agt-{NO_SUCH}"),
        Code.NOT_FOUND,
        f"agt-{NO_SUCH}",
    ),
    StubRow(
        "execution in an unknown session",
        lambda c, s: c.create_execution("hi", session_id=f"ses-{NO_SUCH}"),
        Code.NOT_FOUND,
        f"ses-{NO_SUCH}",
    ),
    StubRow(
        "execution over the server's 16 MB message limit",
        lambda c, s: _big_request(
            s.address,
            lambda big: big.create_execution("x" * (17 * MiB), agent_id=s.agent.metadata.id),
        ),
        Code.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
    StubRow(
        # Just under the 16 MiB gRPC limit on the wire; with the id, slug, audit and the
        # document's indexed fields added, just over the store's 16 MiB document limit.
        "agent over the store's document limit",
        lambda c, s: c.create_agent("huge agent", instructions="x" * (16 * MiB - 100)),
        Code.INVALID_ARGUMENT,
        "16 MB document limit",
    ),
    StubRow(
        "agent without a name",
        lambda c, s: c.create_agent(""),
        Code.INVALID_ARGUMENT,
        "metadata.name",
    ),
    StubRow(
        "agent named like an existing one",
        lambda c, s: c.create_agent(s.agent.metadata.name),
        Code.ALREADY_EXISTS,
        "already exists",
    ),
    StubRow(
        "deleting an unknown agent",
        lambda c, s: _raw(c.agent_commands.delete, agent_io.AgentId(value=f"agt-{NO_SUCH}")),
        Code.NOT_FOUND,
        f"agt-{NO_SUCH}",
    ),
    StubRow(
        "agent instance without an agent",
        lambda c, s: _raw(c.instance_commands.create, _instance("orphan", agent_id="")),
        Code.INVALID_ARGUMENT,
        "spec.agent_id",
    ),
    StubRow(
        "get with an empty execution id",
        lambda c, s: c.get_execution(""),
        Code.INVALID_ARGUMENT,
        "is required",
    ),
    StubRow(
        "get an unknown execution",
        lambda c, s: c.get_execution(f"aex-{NO_SUCH}"),
        Code.NOT_FOUND,
        f"aex-{NO_SUCH}",
    ),
    StubRow(
        "status update without an execution id",
        lambda c, s: c.update_status("", _status(Phase.EXECUTION_COMPLETED)),
        Code.INVALID_ARGUMENT,
        "execution_id",
    ),
    StubRow(
        "status update for an unknown execution",
        lambda c, s: c.update_status(f"aex-{NO_SUCH}", _status(Phase.EXECUTION_COMPLETED)),
        Code.NOT_FOUND,
        f"aex-{NO_SUCH}",
    ),
    StubRow(
        "status update with a phase no enum value names",
        lambda c, s: c.update_status(s.execution.metadata.id, _status(42)),
        Code.INVALID_ARGUMENT,
        "phase",
    ),
    StubRow(
        "subscribing to an unknown execution",
        lambda c, s: _subscribe(c, f"aex-{NO_SUCH}"),
        Code.NOT_FOUND,
        f"aex-{NO_SUCH}",
    ),
    StubRow(
        "listing with a negative page size",
        lambda c, s: _list(c, page_size=-1),
        Code.INVALID_ARGUMENT,
        "must not be negative",
    ),
    StubRow(
        "listing with a forged page token",
        lambda c, s: _list(c, page_size=5, page_token="forged"),
        Code.INVALID_ARGUMENT,
        "not a page token issued by this server",
    ),
    StubRow(
        "session without an agent instance",
        lambda c, s: c.create_session(""),
        Code.INVALID_ARGUMENT,
        "spec.agent_instance_id",
    ),
    StubRow(
        "skill that is not a zip",
        lambda c, s: c.push_skill("not-a-zip", b"PK\x03\x04 truncated"),
        Code.INVALID_ARGUMENT,
        "is not a zip archive",
    ),
    StubRow(
        "skill without SKILL.md",
        lambda c, s: c.push_skill("no-skill-md", zipped(**{"README.md": "hello"})),
        Code.INVALID_ARGUMENT,
        "has no SKILL.md",
    ),
    StubRow(
        "skill with an empty artifact",
        lambda c, s: c.push_skill("empty", b""),
        Code.INVALID_ARGUMENT,
        "artifact",
    ),
    StubRow(
        "skill without a name",
        lambda c, s: c.push_skill("", zipped(**{"SKILL.md": SKILL_MD})),
        Code.INVALID_ARGUMENT,
        "name",
    ),
    StubRow(
        "skill archive over 10 MB",
        lambda c, s: c.push_skill("too-big", b"PK" + b"\0" * (11 * MiB)),
        Code.INVALID_ARGUMENT,
        "is larger than",
    ),
    StubRow(
        "unknown skill",
        lambda c, s: c.get_skill(f"no-such-skill-{NO_SUCH}"),
        Code.NOT_FOUND,
        "no-such-skill",
    ),
    StubRow(
        "unknown version of a skill",
        lambda c, s: c.get_skill(s.skill_slug, version="v-that-never-was"),
        Code.NOT_FOUND,
        "v-that-never-was",
    ),
    StubRow(
        "artifact that was never stored",
        lambda c, s: c.get_skill_artifact(f"skills/{'0' * 64}.zip"),
        Code.NOT_FOUND,
        "0000",
    ),
]


@pytest.mark.parametrize("row", STUB_ROWS, ids=[r.name for r in STUB_ROWS])
async def test_stub_rejects(cluster: Cluster, stored: Stored, row: StubRow) -> None:
    with pytest.raises(RpcFailed) as failed:
        await row.call(cluster.client, stored)
    assert failed.value.code == row.code, failed.value
    assert row.says in failed.value.details, failed.value


# -- activity payloads through Temporal ------------------------------------------------------


@dataclass(frozen=True)
class ActivityRow:
    name: str
    activity: str
    texts: tuple[str, ...]
    error_type: str
    says: str
    execution: dict[str, Any] = field(default_factory=dict)
    non_retryable: bool = True


ACTIVITY_ROWS = [
    ActivityRow(
        "execution without an id",
        "ExecuteGraphton",
        ("thread-x",),
        "InvalidInput",
        "execution.metadata.id is empty",
        {"spec": {"agent_id": "agt-x", "message": "hi"}},
    ),
    ActivityRow(
        "execution with an empty message",
        "ExecuteGraphton",
        ("thread-x",),
        "InvalidInput",
        "empty spec.message",
        {"metadata": {"id": "aex-probe-1"}, "spec": {"agent_id": "agt-x", "message": " "}},
    ),
    ActivityRow(
        "execution without session or agent",
        "ExecuteGraphton",
        ("thread-x",),
        "InvalidInput",
        "neither spec.session_id nor spec.agent_id",
        {"metadata": {"id": "aex-probe-2"}, "spec": {"message": "hi"}},
    ),
    ActivityRow(
        "execution in an unknown session",
        "ExecuteGraphton",
        ("thread-x",),
        "NotFound",
        f"ses-{NO_SUCH}",
        {
            "metadata": {"id": "aex-probe-3"},
            "spec": {"session_id": f"ses-{NO_SUCH}", "message": "hi"},
        },
    ),
    ActivityRow(
        "execution for an unknown agent",
        "ExecuteGraphton",
        ("thread-x",),
        "NotFound",
        f"agt-{NO_SUCH}",
        {
            "metadata": {"id": "aex-probe-4"},
            "spec": {"agent_id": f"agt-{NO_SUCH}", "message": "hi"},
        },
    ),
    # A string first argument is the later upstream signature (contract §7): an execution id,
    # read from the orchestrator; one that names no execution is NotFound, not retried.
    ActivityRow(
        "execution id that names no execution",
        RAW,
        ("this is not an execution", "thread-x"),
        "NotFound",
        "agent execution 'this is not an execution' not found",
    ),
    ActivityRow(
        "sandbox cleanup without an id",
        "CleanupSandbox",
        ("",),
        "InvalidInput",
        "sandbox_id is empty",
    ),
    ActivityRow(
        "sandbox cleanup of a path",
        "CleanupSandbox",
        ("../../etc",),
        "InvalidInput",
        "../../etc",
    ),
]


@pytest.fixture(scope="module")
async def activity_outcomes(cluster: Cluster) -> AsyncIterator[dict[str, dict[str, Any]]]:
    queue = f"probe-{cluster.suffix}"
    async with Worker(
        cluster.temporal,
        task_queue=queue,
        workflows=[Probe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):

        async def probe(row: ActivityRow) -> dict[str, Any]:
            result = await cluster.temporal.execute_workflow(
                "test/reliability/probe",
                args=[
                    row.activity,
                    json_format.ParseDict(row.execution, execution_api.AgentExecution()),
                    list(row.texts),
                    cluster.runner_queue,
                ],
                id=f"probe-{uuid.uuid4().hex}",
                task_queue=queue,
                result_type=str,
            )
            outcome: dict[str, Any] = json.loads(result)
            return outcome

        results = await asyncio.gather(*(probe(row) for row in ACTIVITY_ROWS))
        yield {row.name: result for row, result in zip(ACTIVITY_ROWS, results, strict=True)}


@pytest.mark.parametrize("row", ACTIVITY_ROWS, ids=[r.name for r in ACTIVITY_ROWS])
def test_activity_rejects(activity_outcomes: dict[str, dict[str, Any]], row: ActivityRow) -> None:
    outcome = activity_outcomes[row.name]
    assert outcome["type"] == row.error_type, outcome
    assert row.says in outcome["message"], outcome
    assert outcome["non_retryable"] is row.non_retryable, outcome
    expected = "NON_RETRYABLE_FAILURE" if row.non_retryable else "MAXIMUM_ATTEMPTS_REACHED"
    assert outcome["retry_state"] == expected, outcome


# -- executions the workers cannot run -------------------------------------------------------


@dataclass(frozen=True)
class ExecutionRow:
    name: str
    error_type: str
    says: str
    agent: dict[str, Any] = field(default_factory=dict)
    model: str = "scripted:quick"
    message: str = "Please do the thing."
    runtime_env: dict[str, str] = field(default_factory=dict)
    environment_refs: tuple[str, ...] = ()
    skill_archive: bytes | None = None
    unknown_skill: bool = False
    non_retryable: bool = True


def _http(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "http": {"url": url, **extra}}


UNREACHABLE = "http://127.0.0.1:9/mcp"  # the discard port: nothing listens there

EXECUTION_ROWS = [
    ExecutionRow(
        "unknown model provider",
        "ConfigurationError",
        "unknown provider 'nosuch'",
        model="nosuch:model",
    ),
    ExecutionRow(
        "unknown scripted script", "ConfigurationError", "unknown script", model="scripted:nosuch"
    ),
    ExecutionRow(
        "model the provider cannot run",
        "ConfigurationError",
        "cannot run model",
        model="anthropic:gpt-4o",
    ),
    ExecutionRow(
        "provider without a model", "ConfigurationError", "names no model", model="openai:"
    ),
    ExecutionRow("empty message", "InvalidInput", "empty spec.message", message="   "),
    ExecutionRow(
        "environment variable name with a dash",
        "InvalidInput",
        "BAD-NAME",
        runtime_env={"BAD-NAME": "x"},
    ),
    ExecutionRow(
        "environment variable name starting with a digit",
        "InvalidInput",
        "1ST",
        runtime_env={"1ST": "x"},
    ),
    ExecutionRow(
        "environment value with a NUL byte", "InvalidInput", "NUL", runtime_env={"GOOD": "a\0b"}
    ),
    ExecutionRow(
        "unknown environment", "NotFound", "no-such-env", environment_refs=("no-such-env",)
    ),
    ExecutionRow("unknown skill", "NotFound", "cannot be resolved", unknown_skill=True),
    ExecutionRow(
        "skill archive escaping its directory",
        "UnsafeArchive",
        "unsafe archive",
        skill_archive=zipped(**{"SKILL.md": SKILL_MD, "..__..__escape.txt": "out"}),
    ),
    ExecutionRow(
        "unreachable MCP server",
        "Unavailable",
        "unreachable",
        agent={"mcp_servers": [_http("unreachable", UNREACHABLE, timeout_seconds=2)]},
        non_retryable=False,
    ),
    ExecutionRow(
        "MCP command missing on the worker",
        "ConfigurationError",
        "is not on this worker",
        agent={"mcp_servers": [{"name": "ghost", "stdio": {"command": "no-such-mcp-binary"}}]},
    ),
    ExecutionRow(
        "MCP url that is not http",
        "InvalidInput",
        "must be http or https",
        agent={"mcp_servers": [_http("ftp", "ftp://127.0.0.1/mcp")]},
    ),
    ExecutionRow(
        "MCP placeholder for a missing variable",
        "InvalidInput",
        "MISSING_TOKEN",
        agent={
            "mcp_servers": [
                _http("api", UNREACHABLE, headers={"Authorization": "Bearer ${MISSING_TOKEN}"})
            ]
        },
    ),
    ExecutionRow(
        "MCP server defined twice",
        "InvalidInput",
        "defined twice",
        agent={"mcp_servers": [_http("twin", UNREACHABLE), _http("twin", UNREACHABLE)]},
    ),
    ExecutionRow(
        "sub-agent using an MCP server the agent lacks",
        "InvalidInput",
        "which the agent lacks",
        agent={
            "sub_agents": [{"name": "helper", "instructions": "Help.", "mcp_servers": ["absent"]}]
        },
    ),
]


@dataclass
class ExecutionOutcome:
    execution: execution_api.AgentExecution
    failure_type: str
    non_retryable: bool
    attempts: int
    closed: bool


async def run_bad_execution(cluster: Cluster, row: ExecutionRow) -> ExecutionOutcome:
    client = cluster.client
    suffix = uuid.uuid4().hex[:8]
    agent = agent_api.Agent()
    agent.metadata.name = f"bad input {suffix}"
    json_format.ParseDict(row.agent, agent.spec)
    agent.spec.instructions = agent.spec.instructions or "You are careful."
    if row.skill_archive is not None:
        skill = await client.push_skill(f"unsafe-{suffix}", row.skill_archive)
        agent.spec.skill_refs.add(kind=kind_pb2.ApiResourceKind.skill, slug=skill.metadata.slug)
    if row.unknown_skill:
        agent.spec.skill_refs.add(kind=kind_pb2.ApiResourceKind.skill, slug=f"no-skill-{suffix}")
    created = await client.apply_agent(agent, create=True)
    execution = execution_api.AgentExecution()
    execution.spec.message = row.message
    execution.spec.execution_config.model_name = row.model
    for key, value in row.runtime_env.items():
        execution.spec.runtime_env[key].value = value
    if row.environment_refs:
        instance = _instance(f"bad-input-{suffix}", agent_id=created.metadata.id)
        for slug in row.environment_refs:
            instance.spec.environment_refs.add(kind=kind_pb2.ApiResourceKind.environment, slug=slug)
        instance = await _raw(client.instance_commands.create, instance)
        session = await client.create_session(instance.metadata.id)
        execution.spec.session_id = session.metadata.id
    else:
        execution.spec.agent_id = created.metadata.id
    started = await _raw(client.execution_commands.create, execution)
    await cluster.finished(started.metadata.id, seconds=90)
    handle = cluster.temporal.get_workflow_handle(
        f"stigmer/agent-execution/invoke/{started.metadata.id}"
    )
    closed = await _closed(handle)
    final = await client.get_execution(started.metadata.id)  # with the workflow's own verdict
    failure_type, non_retryable, attempts = "", False, 0
    for event in map(HistoryEvent.FromString, await cluster.history_bytes(started.metadata.id)):
        if event.HasField("activity_task_started_event_attributes"):
            attempts = event.activity_task_started_event_attributes.attempt
        if event.HasField("activity_task_failed_event_attributes"):
            info = event.activity_task_failed_event_attributes.failure.application_failure_info
            failure_type, non_retryable = info.type, info.non_retryable
    return ExecutionOutcome(final, failure_type, non_retryable, attempts, closed)


async def _closed(handle: Any) -> bool:
    """Whether the workflow ends (it records the outcome after the runner's last push)."""
    running = WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        description = await handle.describe()
        if description.raw_description.workflow_execution_info.status != running:
            return True
        await asyncio.sleep(0.2)
    return False


@pytest.fixture(scope="module")
async def execution_outcomes(cluster: Cluster, stored: Stored) -> dict[str, ExecutionOutcome]:
    results = await asyncio.gather(*(run_bad_execution(cluster, row) for row in EXECUTION_ROWS))
    return {row.name: result for row, result in zip(EXECUTION_ROWS, results, strict=True)}


@pytest.mark.parametrize("row", EXECUTION_ROWS, ids=[r.name for r in EXECUTION_ROWS])
def test_execution_fails_clearly(
    execution_outcomes: dict[str, ExecutionOutcome], row: ExecutionRow
) -> None:
    outcome = execution_outcomes[row.name]
    status = outcome.execution.status
    assert status.phase == Phase.EXECUTION_FAILED, status
    assert row.says in status.error, status.error
    if row.message.strip():
        assert status.messages and status.messages[0].content == row.message, "transcript kept"
    assert outcome.closed, "the workflow ended"
    assert outcome.failure_type == row.error_type, outcome
    assert outcome.non_retryable is row.non_retryable
    if row.non_retryable:
        assert outcome.attempts == 1, "no retry where none can help"
    else:
        assert outcome.attempts > 1, "a transient failure is retried"


def test_the_catalogue_has_at_least_thirty_rows() -> None:
    assert len(STUB_ROWS) + len(ACTIVITY_ROWS) + len(EXECUTION_ROWS) >= 30


async def test_nothing_stored_before_was_lost_or_changed(
    cluster: Cluster,
    stored: Stored,
    activity_outcomes: dict[str, dict[str, Any]],
    execution_outcomes: dict[str, ExecutionOutcome],
) -> None:
    """Last in the module: every row above has run against the same store."""
    after = await snapshot(cluster.client, stored)
    for key, before in stored.snapshot.items():
        assert after[key] == before, f"the stored {key} changed"
    assert all(w.alive() for w in stored.workers), "no worker crashed"
    assert cluster.stub is not None and cluster.stub.alive(), "the stub did not crash"
