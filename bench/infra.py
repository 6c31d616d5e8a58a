"""Real servers for the benchmarks: the embedded stack, the stub and workers as child processes.

One devstack (Temporal + MongoDB-wire, ephemeral) is started lazily and shared by every
benchmark of an invocation; `close()` stops it. The stub and the workers run as subprocesses so
their CPU is not the measured process's and their memory is their own; each gets its own
database and task queues, so benchmarks never see each other's executions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.results import NotRun
from devstack import Endpoints, Stack, StackConfig
from devstack.net import pick_free_ports
from stigmer_cli.client import StigmerClient

LOOPBACK = "127.0.0.1"
STOP_SECONDS = 15.0
WORKER_START_SECONDS = 90.0
ROOT_MAIN = Path(__file__).resolve().parent.parent / "main.py"


class _Shared:
    """What one invocation shares between benchmarks: a scratch directory and the stack."""

    stack: Stack | None = None
    scratch: tempfile.TemporaryDirectory[str] | None = None


_shared = _Shared()


def scratch() -> Path:
    """A directory for this invocation's logs, workspaces and stack data; removed by close()."""
    if _shared.scratch is None:
        _shared.scratch = tempfile.TemporaryDirectory(prefix="agent-runner-bench-")
    return Path(_shared.scratch.name)


def stack() -> Endpoints:
    """The shared ephemeral stack (Temporal and MongoDB-wire), started on first use."""
    if _shared.stack is None:
        candidate = Stack(StackConfig(data_dir=scratch() / "stack", ephemeral=True, redis=False))
        try:
            candidate.start()
        except Exception as err:
            raise NotRun(f"the embedded stack did not start: {err}") from err
        _shared.stack = candidate
    return _shared.stack.endpoints


def stack_pids() -> dict[str, int]:
    return {str(k): v for k, v in _shared.stack.pids().items()} if _shared.stack else {}


def close() -> None:
    """Stop the shared stack and remove the scratch directory (idempotent)."""
    if _shared.stack is not None:
        _shared.stack.stop()
        _shared.stack = None
    if _shared.scratch is not None:
        _shared.scratch.cleanup()
        _shared.scratch = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), from /proc."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Child:
    """A server started by a benchmark: its process, log file and what it listens on."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    address: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        self.log_file.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def spawn(name: str, args: list[str], env: Mapping[str, str]) -> Child:
    log_path = scratch() / f"{name}-{uuid.uuid4().hex[:6]}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **env},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=scratch(),
    )
    return Child(name, process, log_path, log_file)


@dataclass(frozen=True)
class StubConfig:
    runner_queue: str
    workflow_queue: str
    database: str


def stub_env(
    endpoints: Endpoints, config: StubConfig, port: int, mongodb_uri: str | None = None
) -> dict[str, str]:
    return {
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "STIGMER_STUB_HOST": LOOPBACK,
        "STIGMER_STUB_PORT": str(port),
        "STIGMER_CONSOLE_PORT": "0",  # the benchmarks measure the API, not the web console
        "MONGODB_URI": mongodb_uri or endpoints.mongodb_uri,
        "STIGMER_STUB_MONGODB_DATABASE": config.database,
        "TEMPORAL_SERVICE_ADDRESS": endpoints.temporal_address,
        "TEMPORAL_NAMESPACE": endpoints.temporal_namespace,
        "TEMPORAL_AGENT_EXECUTION_STIGMER_TASK_QUEUE": config.workflow_queue,
        "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": config.runner_queue,
        "STIGMER_STUB_SHUTDOWN_GRACE_SECONDS": "1",
    }


def new_stub_config(label: str) -> StubConfig:
    suffix = uuid.uuid4().hex[:8]
    return StubConfig(
        runner_queue=f"bench-{label}-runner-{suffix}",
        workflow_queue=f"bench-{label}-workflows-{suffix}",
        database=f"bench_{label}_{suffix}",
    )


def worker_env(
    endpoints: Endpoints, config: StubConfig, stub_address: str, data_dir: Path
) -> dict[str, str]:
    return {
        "MODE": "local",
        # INFO as deployed: the worker's per-update log lines are part of what it costs.
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "TEMPORAL_SERVICE_ADDRESS": endpoints.temporal_address,
        "TEMPORAL_NAMESPACE": endpoints.temporal_namespace,
        "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": config.runner_queue,
        "STIGMER_BACKEND_ENDPOINT": stub_address,
        "STIGMER_AGENT_RUNNER_DATA_DIR": str(data_dir),
        "HEALTH_PORT": "0",
        "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "5",
    }


async def start_worker(
    config: StubConfig, stub_address: str, index: int, *, ready_text: str = "worker_started"
) -> Child:
    """`main.py` as a subprocess polling the stub's runner queue; returns once it logs that it
    started polling."""
    endpoints = stack()
    data_dir = scratch() / f"worker-{config.runner_queue}-{index}"
    env = worker_env(endpoints, config, stub_address, data_dir)
    child = spawn(f"worker{index}", [str(ROOT_MAIN)], env)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WORKER_START_SECONDS
    while loop.time() < deadline:
        if child.process.poll() is not None:
            raise NotRun(f"a worker exited at start:\n{child.tail()}")
        if ready_text in child.log_path.read_text(errors="replace"):
            return child
        await asyncio.sleep(0.2)
    child.stop()
    raise NotRun(f"a worker did not start within {WORKER_START_SECONDS:.0f} s:\n{child.tail()}")


@contextlib.asynccontextmanager
async def running_fake(instructions: str, sessions: int) -> AsyncIterator[Child]:
    """The tests' fake orchestrator as a subprocess (see `bench.fake_orchestrator`)."""
    port_file = scratch() / f"fake-port-{uuid.uuid4().hex[:6]}"
    args = ["-m", "bench.fake_orchestrator", "--port-file", str(port_file)]
    args += ["--sessions", str(sessions), "--instructions", instructions]
    child = spawn("fake-orchestrator", args, {})
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if child.process.poll() is not None or loop.time() > deadline:
                raise NotRun(f"the fake orchestrator did not start:\n{child.tail()}")
            await asyncio.sleep(0.1)
        child.address = f"{LOOPBACK}:{port_file.read_text().strip()}"
        yield child
    finally:
        child.stop()


@contextlib.asynccontextmanager
async def running_stub(
    label: str, *, mongodb_uri: str | None = None
) -> AsyncIterator[tuple[Child, StubConfig, StigmerClient]]:
    """The stub as a subprocess on the shared stack (its database reached at `mongodb_uri` when
    given: a relay in front of the stack's), and a client of it."""
    endpoints = stack()
    config = new_stub_config(label)
    (port,) = pick_free_ports(LOOPBACK, 1)
    env = stub_env(endpoints, config, port, mongodb_uri)
    child = spawn("stub", ["-m", "stigmer_stub"], env)
    child.address = f"{LOOPBACK}:{port}"
    try:
        async with StigmerClient(child.address, timeout_seconds=60) as client:
            try:
                await client.wait_ready(30)
            except TimeoutError as err:
                raise NotRun(f"the stub did not start:\n{child.tail()}") from err
            yield child, config, client
    finally:
        child.stop()
