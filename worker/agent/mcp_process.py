"""A stdio MCP server's process, kept on a short leash.

`stdio_transport` starts the server and gives the MCP client its two message streams, like the MCP
SDK's `stdio_client`, with what an execution needs on top:

- the server runs in a process group of its own (a new session); when the execution ends, the
  server's stdin is closed, then the whole group gets SIGTERM and, if anything is left after a
  grace period, SIGKILL. Processes the server started (a `sleep 777`, a browser, a language server)
  end with it, unless they left the group themselves (`setsid`), which only a cgroup would catch;
- its stderr never reaches the worker's stderr: each line is masked (the execution's secrets and
  every registered one), cut to `STDERR_LINE_CHARS`, logged as `mcp_server_stderr` up to
  `STDERR_LOG_LINES` lines per server (the rest counted in `mcp_server_stderr_dropped`), and the
  last `STDERR_TAIL_LINES` are kept for error messages;
- `ServerProcess` records the pid, the exit code and that tail, so a crash can be described by the
  server's name, its exit code and its last (masked) words.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.shared.message import SessionMessage

log = structlog.get_logger(__name__)

STDERR_LINE_CHARS = 1000
STDERR_LOG_LINES = 200
STDERR_TAIL_LINES = 10
STDERR_PENDING_BYTES = 64 * 1024
"""A stderr "line" longer than this without a newline is cut there."""
STDIN_CLOSE_GRACE_SECONDS = 2.0
TERM_GRACE_SECONDS = 2.0
DRAIN_SECONDS = 1.0


@dataclass
class ServerProcess:
    """What is known about one stdio server's process."""

    name: str
    pid: int | None = None
    returncode: int | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    logged: int = 0
    dropped: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    def exit_text(self) -> str:
        """`exited with code 3`, `was killed by signal 9`, or `is still running`."""
        code = self.returncode
        if code is None:
            return "is still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"was killed by signal {name}"
        return f"exited with code {code}"

    def last_words(self) -> str:
        """The last stderr lines, masked, as one string; empty when the server wrote none."""
        if not self.tail:
            return ""
        return "; its last stderr lines: " + " | ".join(self.tail)

    async def wait_exit(self, seconds: float) -> None:
        """Give a dying server a moment to be reaped, so its exit code is known."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.exited.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member changed user; it is still there
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _until(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll `predicate` every 50 ms for up to `seconds`; whether it became true."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class _StderrSink:
    """Masks, bounds and logs a server's stderr, line by line."""

    def __init__(self, record: ServerProcess, redact: Callable[[str], str]) -> None:
        self._record = record
        self._redact = redact
        self._pending = b""
        self._cut = False  # the current line was already cut and logged

    def feed(self, chunk: bytes) -> None:
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if self._cut:  # the rest of a line that was cut: already logged
                self._cut = False
            else:
                self._line(line)
        if self._cut:
            self._pending = b""
        elif len(self._pending) > STDERR_PENDING_BYTES:
            self._line(self._pending)
            self._pending, self._cut = b"", True

    def close(self) -> None:
        if self._pending and not self._cut:
            self._line(self._pending)
        self._pending = b""
        if self._record.dropped:
            log.warning(
                "mcp_server_stderr_dropped",
                server=self._record.name,
                lines=self._record.dropped,
                limit=STDERR_LOG_LINES,
            )

    def _line(self, raw: bytes) -> None:
        text = self._redact(raw.decode("utf-8", errors="replace")).strip()
        if len(text) > STDERR_LINE_CHARS:
            text = text[:STDERR_LINE_CHARS] + f"… ({len(text) - STDERR_LINE_CHARS} more chars)"
        if not text:
            return
        record = self._record
        record.tail.append(text)
        if record.logged < STDERR_LOG_LINES:
            record.logged += 1
            log.info("mcp_server_stderr", server=record.name, line=text)
        else:
            record.dropped += 1


async def _read_stdout(
    stdout: ByteReceiveStream, sink: MemoryObjectSendStream[SessionMessage | Exception]
) -> None:
    async with sink:
        pending = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            while True:
                pending += await stdout.receive()
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        message = types.JSONRPCMessage.model_validate_json(line)
                    except ValueError as err:
                        await sink.send(err)  # the session logs it and goes on
                        continue
                    await sink.send(SessionMessage(message))


async def _write_stdin(process: Process, source: MemoryObjectReceiveStream[SessionMessage]) -> None:
    stdin = process.stdin
    if stdin is None:
        raise RuntimeError("the server's stdin is not a pipe")
    async with source:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for item in source:
                data = item.message.model_dump_json(by_alias=True, exclude_none=True)
                await stdin.send(data.encode() + b"\n")


async def _read_stderr(stderr: ByteReceiveStream, sink: _StderrSink) -> None:
    try:
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            while True:
                sink.feed(await stderr.receive())
    finally:
        sink.close()


async def _watch_exit(process: Process, record: ServerProcess) -> None:
    record.returncode = await process.wait()
    record.exited.set()


async def _end_group(process: Process, record: ServerProcess) -> None:
    """Close stdin, then SIGTERM and at last SIGKILL the server's whole process group."""
    pgid = process.pid
    if process.stdin is not None:
        with contextlib.suppress(Exception):
            await process.stdin.aclose()
    await record.wait_exit(STDIN_CLOSE_GRACE_SECONDS)
    # The group outlives its leader while any member is left: end those too.
    _signal_group(pgid, signal.SIGTERM)
    ended = await _until(
        lambda: record.exited.is_set() and not _group_alive(pgid), TERM_GRACE_SECONDS
    )
    if not ended:
        log.warning("mcp_server_killed", server=record.name, pid=pgid)
        _signal_group(pgid, signal.SIGKILL)
    await record.wait_exit(TERM_GRACE_SECONDS)


@contextlib.asynccontextmanager
async def stdio_transport(
    record: ServerProcess,
    command: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    redact: Callable[[str], str],
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """Start the server; yield (messages from it, messages to it); end its process group."""
    process = await anyio.open_process(
        [command, *args], env=dict(env), cwd=cwd, start_new_session=True
    )
    record.pid = process.pid
    if process.stdout is None or process.stderr is None:
        raise RuntimeError("the server's stdout and stderr are not pipes")
    stdout, stderr = process.stdout, process.stderr
    from_server_sink, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    to_server, to_server_source = anyio.create_memory_object_stream[SessionMessage](0)
    sink = _StderrSink(record, redact)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_watch_exit, process, record)
        tasks.start_soon(_read_stdout, stdout, from_server_sink)
        tasks.start_soon(_write_stdin, process, to_server_source)
        stderr_done = anyio.Event()

        async def stderr_reader() -> None:
            try:
                await _read_stderr(stderr, sink)
            finally:
                stderr_done.set()

        tasks.start_soon(stderr_reader)
        try:
            yield from_server, to_server
        finally:
            with anyio.CancelScope(shield=True):
                await to_server.aclose()
                await _end_group(process, record)
                with anyio.move_on_after(DRAIN_SECONDS):
                    await stderr_done.wait()  # the last words, for the error message
                tasks.cancel_scope.cancel()
    with anyio.CancelScope(shield=True):
        await from_server.aclose()
        await process.aclose()
