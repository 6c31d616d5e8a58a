"""`make demo`: the whole system on one machine, one conversation, watched live.

Starts the embedded stack (Temporal with its Web UI, a MongoDB-wire server, Valkey), the stub and
the agent-runner worker as child processes; creates a demo agent (the scripted model unless
`STIGMER_LLM_PROVIDER` names a real provider); runs a first turn with live progress and a second
turn in the same session that recalls the first; a third turn, with an agent whose shell commands
wait for approval, stops at the gate and the demo rejects the command with a comment; prints a
summary with the Temporal workflow ids; then stops everything, or with `--keep` leaves it
running until Ctrl-C.

Every child runs in its own process group with its output in a log file under `<data-dir>/logs`,
and gets SIGTERM if this process dies; Ctrl-C and SIGTERM unwind through the same shutdown.

    python -m stigmer_cli.demo [--keep] [--data-dir DIR] [--token-delay-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TypeVar

import grpc
import httpx
import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from rich.console import Console
from rich.markup import escape
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.api.workflowservice.v1.service_pb2_grpc import WorkflowServiceStub

from devstack import Endpoints, Stack, StackConfig, StackError
from devstack.process import ServerProcess, Signals, Spawner
from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_cli.follow import (
    ExecutionView,
    PlainRenderer,
    Renderer,
    RichRenderer,
    final_answer,
    summary_line,
    watch,
    workflow_id,
)
from stigmer_cli.runcontrol import describe_call

log = structlog.get_logger(__name__)

T = TypeVar("T")

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = Path(".data/demo")
DEFAULT_STUB_PORT = 7234
DEFAULT_CONSOLE_PORT = 8234
EXECUTION_QUERIES = "ai.stigmer.agentic.agentexecution.v1.AgentExecutionQueryController"
RUNNER_TASK_QUEUE = "execution"
DEFAULT_TOKEN_DELAY_MS = 15.0
STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
TURN_TIMEOUT = 300.0

CODE_NAME = "Blue Heron"
AGENT_NAME = "release-engineer"
INSTRUCTIONS = (
    "You are a careful release engineer. Plan with a todo list, keep notes in files, check your "
    "work from the shell, delegate research to a sub-agent, and keep answers short."
)
TURN_1 = (
    f"Our next release is code-named {CODE_NAME}. Draft a short release plan in notes.md, "
    "sanity-check the workspace from the shell, and have a sub-agent review what is there."
)
TURN_2 = "Quick check before I go: what code name did I give you for the release?"

# Turn 3: an agent whose shell commands wait for a person (an approval gate, docs/run-control.md).
GATED_AGENT_NAME = "careful-engineer"
GATED_INSTRUCTIONS = (
    "You are a careful release engineer on a shared build machine. Clean up before a release, "
    "and report exactly what the shell said."
)
GATE_POLICY = ("execute", "The agent wants to run `{command}` on the shared build machine.")
TURN_3 = "Clean the build directory before we cut the release."
REJECTION = "Not on the shared box: use `make clean` in your own checkout."


class DemoError(Exception):
    """The demo cannot go on; the message says why and where to look."""


@dataclass(frozen=True, slots=True)
class Options:
    keep: bool = False
    data_dir: Path = DEFAULT_DATA_DIR
    token_delay_ms: float = DEFAULT_TOKEN_DELAY_MS
    stub_port: int = DEFAULT_STUB_PORT


@dataclass(frozen=True, slots=True)
class Model:
    """Who answers: the scripted model, or a real provider configured in the environment."""

    provider: str  # "scripted" or the provider's name

    @property
    def scripted(self) -> bool:
        return self.provider == "scripted"

    @property
    def instructions(self) -> str:
        # The scripted model reads its script from a `script:` line of the instructions.
        return INSTRUCTIONS + ("\n\nscript: demo" if self.scripted else "")

    @property
    def gated_instructions(self) -> str:
        """Turn 3's agent; the scripted model asks to run `rm -rf build && echo cleaned`."""
        return GATED_INSTRUCTIONS + ("\n\nscript: approval" if self.scripted else "")

    @property
    def second_turn_model(self) -> str:
        # The scripted `memory` script answers by quoting the thread's earlier messages.
        return "scripted:memory" if self.scripted else ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Model:
        provider = environ.get("STIGMER_LLM_PROVIDER", "").strip().lower()
        return cls(provider or "scripted")


@dataclass
class Turn:
    number: int
    message: str
    view: ExecutionView

    @property
    def execution_id(self) -> str:
        return self.view.execution_id


@dataclass
class Children:
    """The stub and the worker, started from one long-lived thread (see `Spawner`)."""

    spawner: Spawner = field(default_factory=Spawner)
    processes: dict[str, ServerProcess] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], log_path: Path, env: Mapping[str, str]) -> None:
        process = ServerProcess(name, argv, PROJECT_DIR, log_path, Signals())
        self.processes[name] = process
        process.start(self.spawner, env)

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.processes.items() if p.pid is not None and p.alive()}

    def exited(self) -> dict[str, int | None]:
        return {n: p.returncode for n, p in self.processes.items() if not p.alive()}

    def stop(self) -> None:
        """Stop the children in reverse start order (SIGTERM, wait, SIGKILL), then the spawner.

        The worker goes first: a draining worker still pushes its executions' statuses to the
        stub, which must outlive it.
        """
        for process in reversed(self.processes.values()):
            process.stop(STOP_TIMEOUT)
        self.spawner.close()


class Demo:
    def __init__(self, options: Options, console: Console, environ: Mapping[str, str]) -> None:
        self.options = options
        self.out = console
        self.environ = environ
        self.model = Model.from_environment(environ)
        self.data_dir = options.data_dir.expanduser().resolve()
        self.logs_dir = self.data_dir / "logs"
        self.stack = Stack(StackConfig(data_dir=self.data_dir, ephemeral=True))
        self.children = Children()
        self.stub_address = ""
        self.console_url = ""
        self.health_port = 0
        self.began = time.monotonic()
        # The demo's stub requires keys, as a deployed one should: the worker pushes status with
        # the runner's, the demo (and the commands it suggests) act as a user.
        self.runner_key = secrets.token_urlsafe(24)
        self.user_key = secrets.token_urlsafe(24)

    # -- the story ------------------------------------------------------------------------------

    def run(self) -> int:
        self._intro()
        try:
            endpoints = self._start(
                "Temporal, MongoDB-wire and Valkey",
                self.stack.start,
                detail=lambda ep: f"Temporal UI {ep.temporal_ui_url}",
            )
            self._start_services(endpoints)
            turns = asyncio.run(self._conversation(endpoints))
            self._summary(endpoints, turns)
            if self.options.keep:
                self._keep_running(endpoints, turns)
            return 0 if all(t.view.phase == enum_pb2.EXECUTION_COMPLETED for t in turns) else 1
        except (DemoError, StackError) as err:
            self.out.print(f"\n[bold red]demo failed:[/] {escape(str(err))}")
            return 1
        except KeyboardInterrupt:
            self.out.print("\n[yellow]interrupted[/]")
            return 130
        finally:
            self._shutdown()

    def _intro(self) -> None:
        model = (
            "scripted model (set STIGMER_LLM_PROVIDER for a real one)"
            if self.model.scripted
            else f"{self.model.provider} (from STIGMER_LLM_PROVIDER)"
        )
        self.out.print(
            f"[bold]agent-runner demo[/] [dim]· model: {escape(model)} · data: "
            f"{escape(_relative(self.data_dir))}[/]\n"
            "[dim]Starts Temporal, a MongoDB-wire server, Valkey, the stigmer stub and the worker, "
            "then runs two turns of one conversation: a task with tools, todos and a sub-agent, "
            "and a question about the first turn; then a third turn whose shell command waits "
            "for approval and is rejected with a comment.[/]\n"
        )

    def _start_services(self, endpoints: Endpoints) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        stub_port = _free_port(self.options.stub_port)
        health_port = self.health_port = _free_port(0)
        console_port = _free_port(DEFAULT_CONSOLE_PORT)
        self.stub_address = f"127.0.0.1:{stub_port}"
        self.console_url = f"http://127.0.0.1:{console_port}"
        began = time.monotonic()
        # Both start at once; each is waited for in turn (the worker imports more).
        self.children.start(
            "stub",
            [sys.executable, "-m", "stigmer_stub"],
            self.logs_dir / "stub.log",
            self._stub_env(endpoints, stub_port, console_port),
        )
        self.children.start(
            "worker",
            _worker_argv(),
            self.logs_dir / "worker.log",
            self._worker_env(endpoints, stub_port, health_port),
        )
        self._start(
            "stigmer stub",
            lambda: self._await_port("stub", stub_port, began),
            detail=lambda _: f"{self.stub_address} · log {_relative(self.logs_dir / 'stub.log')}",
            began=began,
        )
        self.out.print(f"[dim]  web console {self.console_url} (sign in with the user key)[/]")
        self._start(
            "agent-runner worker",
            lambda: self._await_worker(health_port, endpoints, began),
            detail=lambda _: (
                f"task queue execution · log {_relative(self.logs_dir / 'worker.log')}"
            ),
            began=began,
        )
        pids: dict[str, int] = {str(k): v for k, v in self.stack.pids().items()}
        pids.update(self.children.pids())
        self.out.print(
            "[dim]  pids: " + " ".join(f"{name}={pid}" for name, pid in pids.items()) + "[/]"
        )

    async def _conversation(self, endpoints: Endpoints) -> list[Turn]:
        redis_url = f"redis://{endpoints.redis_host}:{endpoints.redis_port}/0"
        async with StigmerClient(self.stub_address, api_key=self.user_key) as client:
            try:
                agent = await client.create_agent(
                    AGENT_NAME, instructions=self.model.instructions, description="demo agent"
                )
            except RpcFailed as err:
                raise DemoError(f"creating the demo agent failed: {err}") from err
            self.out.print(
                f"[green]✓[/] agent [bold]{AGENT_NAME}[/] [dim]{agent.metadata.id} · instance "
                f"{agent.status.default_instance_id}[/]"
            )
            first = await self._turn(client, 1, TURN_1, redis_url, agent_id=agent.metadata.id)
            if first.view.phase != enum_pb2.EXECUTION_COMPLETED:
                return [first]
            session_id = first.view.latest.spec.session_id if first.view.latest else ""
            second = await self._turn(
                client,
                2,
                TURN_2,
                redis_url,
                session_id=session_id,
                model_name=self.model.second_turn_model,
            )
            self._memory_verdict(second)
            if second.view.phase != enum_pb2.EXECUTION_COMPLETED:
                return [first, second]
            third = await self._gated_turn(client, redis_url)
            return [first, second, third]

    async def _gated_turn(self, client: StigmerClient, redis_url: str) -> Turn:
        """Turn 3: the agent's shell command stops at an approval gate; the demo plays the
        person and rejects it with a comment, which the agent gets as the command's result."""
        try:
            agent = await client.create_agent(
                GATED_AGENT_NAME,
                instructions=self.model.gated_instructions,
                description="demo agent whose shell commands need approval",
                tool_approvals=[GATE_POLICY],
            )
        except RpcFailed as err:
            raise DemoError(f"creating the gated demo agent failed: {err}") from err
        self.out.print(
            f"\n[green]✓[/] agent [bold]{GATED_AGENT_NAME}[/] [dim]{agent.metadata.id} · "
            f"`{GATE_POLICY[0]}` waits for approval[/]"
        )
        decisions: list[str] = []
        execution_id: list[str] = [""]  # set by `_turn` once the execution exists

        async def decide(calls: list[api_pb2.ToolCall]) -> None:
            for call in calls:
                self.out.print(
                    f"[bold yellow]approval needed[/] {escape(call.approval_message)}\n"
                    f"  [dim]{escape(describe_call(call))}[/]\n"
                    f"[bold blue]you[/] reject: {escape(REJECTION)}"
                )
                await client.submit_approval(
                    execution_id[0],
                    call.id,
                    enum_pb2.APPROVAL_ACTION_REJECT,
                    REJECTION,
                )
                decisions.append(call.id)

        turn = await self._turn(
            client,
            3,
            TURN_3,
            redis_url,
            agent_id=agent.metadata.id,
            on_approval=decide,
            started=execution_id,
        )
        answer = final_answer(turn.view.latest) if turn.view.latest else ""
        if decisions and REJECTION in answer:
            self.out.print(
                "[green]✓[/] approval: the command never ran; the agent got the rejection "
                "as its result [dim](approval gate, LangGraph interrupt, resumed by a decision)[/]"
            )
        elif turn.view.phase == enum_pb2.EXECUTION_COMPLETED:
            self.out.print("[yellow]![/] approval: the run did not stop at the gate; read it above")
        return turn

    async def _turn(
        self,
        client: StigmerClient,
        number: int,
        message: str,
        redis_url: str,
        *,
        agent_id: str = "",
        session_id: str = "",
        model_name: str = "",
        on_approval: Callable[[list[api_pb2.ToolCall]], Awaitable[None]] | None = None,
        started: list[str] | None = None,
    ) -> Turn:
        where = f"same session {session_id}" if session_id else "new session"
        self.out.print(f"\n[bold]turn {number}[/] [dim]· {where}[/]")
        self.out.print(f"[bold blue]you[/] {escape(message)}")
        try:
            execution = await client.create_execution(
                message, agent_id=agent_id, session_id=session_id, model_name=model_name
            )
        except RpcFailed as err:
            raise DemoError(f"starting turn {number} failed: {err}") from err
        execution_id = execution.metadata.id
        if started is not None:
            started[0] = execution_id
        renderer: Renderer = (
            RichRenderer(self.out)
            if self.out.is_terminal
            else PlainRenderer(self.out.file, summary=False)
        )
        following = asyncio.create_task(
            watch(
                client,
                execution_id,
                redis_url=redis_url,
                renderer=renderer,
                on_approval=on_approval,
            )
        )
        try:
            view = await self._while_alive(following, f"turn {number}")
        except RpcFailed as err:
            raise DemoError(f"following turn {number} failed: {err}") from err
        mark = "[green]✓[/]" if view.phase == enum_pb2.EXECUTION_COMPLETED else "[red]✗[/]"
        self.out.print(f"{mark} turn {number} [dim]{escape(summary_line(view))}[/]")
        if view.phase != enum_pb2.EXECUTION_COMPLETED:
            self.out.print(
                f"  [red]{escape(view.error or 'the execution did not complete')}[/]\n"
                f"  worker log: {_relative(self.logs_dir / 'worker.log')}"
            )
        return Turn(number, message, view)

    async def _while_alive(self, task: asyncio.Task[ExecutionView], what: str) -> ExecutionView:
        """The task's result, unless a server dies or time runs out first: nothing else would
        pick up an execution whose worker is gone, and waiting for it would look like a hang."""
        deadline = time.monotonic() + TURN_TIMEOUT
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.5)
                if done:
                    return task.result()
                gone = self._exited()
                if gone:
                    raise DemoError(f"{gone} stopped during {what}; logs in {self._logs()}")
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"{what} did not finish in {TURN_TIMEOUT:.0f}s; "
                        f"worker log: {_relative(self.logs_dir / 'worker.log')}"
                    )
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _exited(self) -> str:
        """`worker (exit 0), mongo (exit -9)` for children that are gone; empty if none."""
        gone: dict[str, int | None] = {str(k): v for k, v in self.stack.exited().items()}
        gone.update(self.children.exited())
        return ", ".join(f"the {name} (exit {code})" for name, code in gone.items())

    def _logs(self) -> str:
        return f"{_relative(self.logs_dir)}/"

    def _memory_verdict(self, turn: Turn) -> None:
        answer = final_answer(turn.view.latest) if turn.view.latest else ""
        if CODE_NAME.lower() in answer.lower():
            self.out.print(
                f'[green]✓[/] memory: turn 2 recalled "{CODE_NAME}" from turn 1 '
                "[dim](same session, same LangGraph thread)[/]"
            )
        elif turn.view.phase == enum_pb2.EXECUTION_COMPLETED:
            self.out.print(
                f'[yellow]![/] memory: the answer does not mention "{CODE_NAME}"; read it above'
            )

    def _summary(self, endpoints: Endpoints, turns: list[Turn]) -> None:
        self.out.print("\n[bold]where to look[/]")
        for turn in turns:
            wid = workflow_id(turn.execution_id)
            url = (
                f"{endpoints.temporal_ui_url}/namespaces/{endpoints.temporal_namespace}"
                f"/workflows/{urllib.parse.quote(wid, safe='')}"
            )
            self.out.print(f"  turn {turn.number} workflow  {wid}")
            self.out.print(f"  [dim]Temporal UI[/]     {url}", soft_wrap=True)
            self.out.print(
                f"  [dim]web console[/]     {self.console_url}/executions/{turn.execution_id}",
                soft_wrap=True,
            )
        self.out.print(f"  [dim]logs[/]            {_relative(self.logs_dir)}/")
        if not self.options.keep:
            self.out.print(
                "  [dim]everything stops now; to browse the console and the Temporal UI, run it "
                "again with `make demo DEMO_ARGS=--keep`[/]"
            )
        total = time.monotonic() - self.began
        self.out.print(f"\n[bold]demo finished in {total:.1f}s[/]")

    def _keep_running(self, endpoints: Endpoints, turns: list[Turn]) -> None:
        session = turns[0].view.latest.spec.session_id if turns[0].view.latest else "SESSION"
        redis_url = f"redis://{endpoints.redis_host}:{endpoints.redis_port}"
        bin_dir = _relative(Path(sys.executable).parent)
        cli = f"STIGMER_API_KEY={self.user_key} {bin_dir}/stigmer --endpoint {self.stub_address}"
        self.out.print(
            "\n[bold]still running[/] [dim](Ctrl-C stops everything)[/]\n"
            f"  web console      {self.console_url}  (user key {self.user_key})\n"
            f"  stub (gRPC)      {self.stub_address}\n"
            f"  Temporal         {endpoints.temporal_address}\n"
            f"  Temporal UI      {endpoints.temporal_ui_url}\n"
            f"  MongoDB          {endpoints.mongodb_uri}\n"
            f"  Redis            {redis_url}\n"
            "\n  try:\n"
            f'    {cli} run "What else did we do?" --session {session} '
            f"--model scripted:memory --redis {redis_url}\n"
            f"    {cli} get {turns[-1].execution_id}\n"
            f"    {bin_dir}/grpcurl -plaintext {self.stub_address} list\n"
            f"    {bin_dir}/grpcurl -plaintext -H 'authorization: Bearer {self.user_key}' "
            f'-d \'{{"value":"{turns[-1].execution_id}"}}\' {self.stub_address} '
            f"{EXECUTION_QUERIES}/get",
            soft_wrap=True,
        )
        while True:
            time.sleep(0.5)
            gone = self._exited()
            if gone:
                raise DemoError(f"{gone} stopped on its own; logs in {self._logs()}")

    # -- processes ------------------------------------------------------------------------------

    def _stub_env(self, endpoints: Endpoints, port: int, console_port: int) -> dict[str, str]:
        return {
            "STIGMER_CONSOLE_PORT": str(console_port),
            "TEMPORAL_UI_URL": endpoints.temporal_ui_url,
            "STIGMER_CONSOLE_REDIS_URL": (
                f"redis://{endpoints.redis_host}:{endpoints.redis_port}/0"
            ),
            **_python_env(self.environ, self.data_dir / "pycache"),
            "STIGMER_STUB_HOST": "127.0.0.1",
            "STIGMER_STUB_PORT": str(port),
            "MONGODB_URI": endpoints.mongodb_uri,
            "TEMPORAL_SERVICE_ADDRESS": endpoints.temporal_address,
            "TEMPORAL_NAMESPACE": endpoints.temporal_namespace,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": RUNNER_TASK_QUEUE,
            "STIGMER_STUB_API_KEYS": (
                f"demo-worker:runner:{self.runner_key},demo-user:user:{self.user_key}"
            ),
            "LOG_FORMAT": "json",
        }

    def _worker_env(self, endpoints: Endpoints, stub_port: int, health_port: int) -> dict[str, str]:
        env = {
            key: value
            for key, value in _python_env(self.environ, self.data_dir / "pycache").items()
            # The demo's own servers replace whatever the shell points at.
            if key not in ("REDIS_PASSWORD", "CHECKPOINTER", "CHECKPOINTER_URL", "SANDBOX_BACKEND")
        }
        env.update(
            {
                "MODE": "local",
                "TEMPORAL_SERVICE_ADDRESS": endpoints.temporal_address,
                "TEMPORAL_NAMESPACE": endpoints.temporal_namespace,
                "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": RUNNER_TASK_QUEUE,
                "STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{stub_port}",
                "STIGMER_API_KEY": self.runner_key,
                "REDIS_HOST": endpoints.redis_host,
                "REDIS_PORT": str(endpoints.redis_port),
                "HEALTH_PORT": str(health_port),
                "STIGMER_AGENT_RUNNER_DATA_DIR": str(self.data_dir / "worker"),
                "STIGMER_SCRIPTED_TOKEN_DELAY_MS": f"{self.options.token_delay_ms:g}",
                "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "5",
                "LOG_FORMAT": "json",
            }
        )
        env.pop("CHECKPOINTER_SQLITE_PATH", None)
        env.pop("SANDBOX_ROOT_DIR", None)
        env.pop("WORKSPACE_ROOT", None)
        return env

    def _start(
        self,
        label: str,
        start: Callable[[], T],
        *,
        detail: Callable[[T], str],
        began: float | None = None,
    ) -> T:
        """Run one start-up step under a spinner; print `✓ label  detail  ready in 1.8s`."""
        began = time.monotonic() if began is None else began
        with self._spinner(f"starting {label}"):
            result = start()
        took = time.monotonic() - began
        self.out.print(
            f"[green]✓[/] {label:<35} [dim]{escape(detail(result))}[/]  ready in {took:.1f}s",
            soft_wrap=True,
        )
        return result

    @contextlib.contextmanager
    def _spinner(self, label: str) -> Iterator[None]:
        if self.out.is_terminal:
            with self.out.status(f"{label} ...", spinner="dots"):
                yield
        else:
            yield

    def _await_port(self, name: str, port: int, began: float) -> None:
        while True:
            self._check_alive(name)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
            self._check_timeout(name, began)
            time.sleep(0.1)

    def _await_worker(self, health_port: int, endpoints: Endpoints, began: float) -> None:
        """Ready means /readyz answers 200 and the worker polls the task queue in Temporal."""
        url = f"http://127.0.0.1:{health_port}/readyz"
        with (
            httpx.Client(timeout=2.0) as http,
            grpc.insecure_channel(endpoints.temporal_address) as channel,
        ):
            temporal = WorkflowServiceStub(channel)
            while True:
                self._check_alive("worker")
                with contextlib.suppress(httpx.HTTPError, grpc.RpcError):
                    ready = http.get(url).status_code == 200
                    if ready and _has_poller(temporal, endpoints.temporal_namespace):
                        return
                self._check_timeout("worker", began)
                time.sleep(0.2)

    def _check_alive(self, name: str) -> None:
        process = self.children.processes[name]
        if not process.alive():
            raise DemoError(
                f"the {name} exited (code {process.returncode}) while starting; "
                f"the end of {_relative(process.log_path)}:\n{_indent(process.log_tail(25))}"
            )

    def _check_timeout(self, name: str, began: float) -> None:
        if time.monotonic() - began > STARTUP_TIMEOUT:
            process = self.children.processes[name]
            raise DemoError(
                f"the {name} was not ready after {STARTUP_TIMEOUT:.0f}s; "
                f"the end of {_relative(process.log_path)}:\n{_indent(process.log_tail(25))}"
            )

    def _shutdown(self) -> None:
        """Stop the worker and the stub (SIGTERM, wait, SIGKILL), then the stack. A second
        Ctrl-C or SIGTERM cannot cut this short: every wait here is bounded."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        began = time.monotonic()
        with self._spinner("stopping the worker, the stub and the stack"):
            self._drain_worker()
            self.children.stop()
            self.stack.stop()
        took = time.monotonic() - began
        self.out.print(f"[green]✓[/] stopped the worker, the stub and the stack in {took:.1f}s")

    def _drain_worker(self) -> None:
        """SIGTERM the worker and wait until its health server closes: it is the last thing
        the worker closes, after handing over its executions. The interpreter's own teardown
        (seconds, with this many modules) then needs nothing else, so the rest can stop."""
        worker = self.children.processes.get("worker")
        if worker is None or worker.pid is None or not worker.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while worker.alive() and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.health_port), 0.5):
                    pass
            except OSError:
                return
            time.sleep(0.1)


def _has_poller(temporal: WorkflowServiceStub, namespace: str) -> bool:
    request = DescribeTaskQueueRequest(
        namespace=namespace,
        task_queue=TaskQueue(name=RUNNER_TASK_QUEUE),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    return bool(temporal.DescribeTaskQueue(request, timeout=2.0).pollers)


def _python_env(environ: Mapping[str, str], cache_dir: Path) -> dict[str, str]:
    """The children's environment: bytecode is cached under the data dir, even when the shell
    sets PYTHONDONTWRITEBYTECODE (whose point, no __pycache__ in source trees, still holds), so
    a second run does not compile every dependency again."""
    env = {k: v for k, v in environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


def _worker_argv() -> list[str]:
    run_sh = PROJECT_DIR / "run.sh"
    if run_sh.is_file():
        return [str(run_sh)]
    return [sys.executable, "-c", "from worker.app import main; main()"]


def _free_port(preferred: int) -> int:
    """`preferred` when it is free (0: any free port)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _configure_logs(path: Path) -> IO[str]:
    """The demo's own structured logs (and devstack's) go to a file: the terminal is for the
    story."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", encoding="utf-8")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=handle),
        cache_logger_on_first_use=False,
    )
    return handle


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes Ctrl-C's path (inside asyncio.run too, which handles SIGINT itself)."""
    os.kill(os.getpid(), signal.SIGINT)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stigmer_cli.demo",
        description="Start the embedded stack, the stub and the worker; run a two-turn "
        "conversation with live progress; stop everything (or keep it running).",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep everything running after the demo until Ctrl-C, and print how to reach it",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="logs, the worker's checkpoints and sandboxes (default: %(default)s)",
    )
    parser.add_argument(
        "--token-delay-ms",
        type=float,
        default=DEFAULT_TOKEN_DELAY_MS,
        metavar="MS",
        help="pause between the scripted model's tokens, for a watchable stream "
        "(default: %(default)s; 0 runs flat out)",
    )
    parser.add_argument(
        "--stub-port",
        type=int,
        default=DEFAULT_STUB_PORT,
        metavar="PORT",
        help="the stub's gRPC port when free, else any free port (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(
        keep=args.keep,
        data_dir=args.data_dir,
        token_delay_ms=args.token_delay_ms,
        stub_port=args.stub_port,
    )
    console = Console(highlight=False)
    # Off a terminal (CI logs, pipes) long lines stay whole instead of wrapping at 80 columns.
    console.soft_wrap = not console.is_terminal
    log_file = _configure_logs(options.data_dir / "logs" / "demo.log")
    # A shell starts background jobs with SIGINT ignored; Ctrl-C and SIGTERM must still unwind.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return Demo(options, console, dict(os.environ)).run()
    finally:
        log_file.close()


if __name__ == "__main__":
    sys.exit(main())
