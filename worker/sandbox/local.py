"""Local sandboxes: one workspace directory per session under `SANDBOX_ROOT_DIR`.

The directory is reused by every execution of the session, so files persist between turns.

File access is jailed: every path is resolved component by component inside the workspace
(absolute paths are taken relative to it unless they already name it), `..` cannot climb above
it, and symlinks are followed only while they stay inside. The resolved path is then opened one
component at a time with `O_NOFOLLOW` from a directory descriptor, so a symlink swapped in by a
concurrent command makes the access fail instead of escape.

Commands run with `/bin/sh -c` in the workspace, in their own process group (killed as a whole on
timeout or cancellation, and when the command returns), with a scrubbed environment plus the
execution's agent environment, and with their output limited. Where bubblewrap works on this
machine, commands also run inside it: read-only system directories, the workspace as the only
writable place besides a private /tmp (other sessions' workspaces and the worker's data are not
there), private /proc (the worker's process is not in it) and /dev, and no network, loopback
included, unless `SANDBOX_ALLOW_NETWORK`. Whether bubblewrap works is probed once (user namespaces
may be disabled), logged and exposed as `isolation`.

`SANDBOX_ISOLATION` decides what happens without it: `required` refuses (`detect_isolation`
raises `ConfigurationError`, which the worker's start turns into an exit), `preferred` and `off`
run commands as plain subprocesses and the isolation reads `none`. Even then a command cannot
read the worker's own environment or memory through /proc: the worker makes itself non-dumpable
(same-user processes may no longer open its /proc files), and a worker holding capabilities (run
as root) starts commands through `setpriv` with every capability dropped. Other sessions'
workspaces, the worker's data directory and the network stay reachable: that is what `none`
means. File tools stay jailed either way.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import structlog

from worker.errors import ConfigurationError, InvalidInput
from worker.logs import SECRETS
from worker.sandbox.base import (
    DEFAULT_OUTPUT_LIMIT,
    CommandResult,
    FileEntry,
    FileWrite,
    Isolation,
    OutputCallback,
    OutputLimiter,
    SandboxPathError,
    command_environment,
    effective_timeout,
)
from worker.settings import SandboxIsolation

log = structlog.get_logger(__name__)

T = TypeVar("T")

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINK_HOPS = 40
_TIMEOUT_EXIT = 124
"""What `timeout(1)` returns; agents know it."""
_DRAIN_GRACE_SECONDS = 1.0
MAX_READ_BYTES = 20 * 1024 * 1024


class _Runner(Protocol):
    """Runs blocking file work off the event loop."""

    def __call__(self, fn: Callable[[], T], /) -> asyncio.Future[T]: ...


class _Jail:
    """Synchronous, descriptor-based file access confined to one directory."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)

    def _split(self, path: str) -> list[str]:
        if "\x00" in path:
            raise SandboxPathError(f"path {path!r} contains a NUL byte")
        if path == self.root or path.startswith(self.root + "/"):
            path = path[len(self.root) :]
        return [p for p in path.split("/") if p not in ("", ".")]

    def canonical(self, path: str, *, follow_last: bool = True) -> list[str]:
        """The path's components inside the root after `..` and symlinks, or SandboxPathError."""
        pending = self._split(path)
        resolved: list[str] = []
        hops = 0
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if not resolved:
                    raise SandboxPathError(f"path {path!r} leaves the workspace")
                resolved.pop()
                continue
            if not pending and not follow_last:
                resolved.append(name)
                break
            full = os.path.join(self.root, *resolved, name)
            try:
                info = os.lstat(full)
            except (FileNotFoundError, NotADirectoryError):
                resolved.append(name)
                continue
            if not stat.S_ISLNK(info.st_mode):
                resolved.append(name)
                continue
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise SandboxPathError(f"path {path!r}: too many levels of symbolic links")
            target = os.readlink(full)
            if target.startswith("/"):
                if target != self.root and not target.startswith(self.root + "/"):
                    raise SandboxPathError(
                        f"path {path!r} goes through a symbolic link that points outside the "
                        "workspace"
                    )
                resolved = []
                target = target[len(self.root) :]
            pending = [p for p in target.split("/") if p] + pending
        return resolved

    def agent_path(self, parts: Sequence[str]) -> str:
        return "/".join([self.root, *parts]) if parts else self.root

    @staticmethod
    def _step(fd: int, name: str, *, create: bool) -> int:
        try:
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise SandboxPathError(f"{name!r} became a symbolic link during access") from err
            raise
        finally:
            os.close(fd)

    def _open_dir(self, parts: Sequence[str], *, create: bool) -> int:
        fd = os.open(self.root, _DIR_FLAGS)
        for name in parts:
            fd = self._step(fd, name, create=create)
        return fd

    @contextlib.contextmanager
    def _parent(self, parts: Sequence[str], *, create: bool) -> Iterator[tuple[int, str]]:
        fd = self._open_dir(parts[:-1], create=create)
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def read(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        parts = self.canonical(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "is the workspace directory", path)
        with self._parent(parts, create=False) as (dir_fd, name):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = _open_leaf(name, flags, dir_fd, path)
            try:
                info = os.fstat(fd)
                if stat.S_ISDIR(info.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "is a directory", path)
                if not stat.S_ISREG(info.st_mode):
                    raise SandboxPathError(f"{path!r} is not a regular file")
                if info.st_size > max_bytes:
                    raise OSError(
                        errno.EFBIG, f"file is larger than {max_bytes} bytes; read it in a command"
                    )
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

    def write(self, path: str, data: bytes, mode: int) -> None:
        parts = self.canonical(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "is the workspace directory", path)
        with self._parent(parts, create=True) as (dir_fd, name):
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = _open_leaf(name, flags, dir_fd, path, mode=mode & 0o777)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise SandboxPathError(f"{path!r} is not a regular file")
                os.ftruncate(fd, 0)
                os.fchmod(fd, mode & 0o777)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)

    def list(self, path: str) -> list[FileEntry]:
        parts = self.canonical(path)
        fd = self._open_dir(parts, create=False)
        try:
            entries: list[FileEntry] = []
            with os.scandir(fd) as it:
                for entry in it:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    size = 0 if is_dir else entry.stat(follow_symlinks=False).st_size
                    entries.append(FileEntry(self.agent_path([*parts, entry.name]), is_dir, size))
            return sorted(entries, key=lambda e: e.path)
        finally:
            os.close(fd)

    def delete(self, path: str) -> None:
        parts = self.canonical(path, follow_last=False)
        if not parts:
            raise SandboxPathError("the workspace directory itself cannot be deleted")
        with self._parent(parts, create=False) as (dir_fd, name):
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)


def _open_leaf(name: str, flags: int, dir_fd: int, path: str, mode: int = 0o644) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SandboxPathError(f"{path!r} became a symbolic link during access") from err
        raise


# Bubblewrap


def bubblewrap_argv(bwrap: str, workspace: str, *, network: bool) -> list[str]:
    """The bwrap prefix for a command in `workspace`: read-only system, writable workspace."""
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-all"]
    if network:
        argv.append("--share-net")
    for directory in ("/usr", "/etc", "/opt"):
        if os.path.isdir(directory) and not os.path.islink(directory):
            argv += ["--ro-bind", directory, directory]
    for directory in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(directory):
            argv += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            argv += ["--ro-bind", directory, directory]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - a private tmpfs
    argv += ["--bind", workspace, workspace, "--chdir", workspace, "--"]
    return argv


async def probe_bubblewrap(*, network: bool, bwrap: str | None = None) -> Isolation:
    """Try bubblewrap once on this machine; report what commands will actually get."""
    found = bwrap or shutil.which("bwrap")
    if not found:
        return Isolation("none", network=True, detail="bubblewrap (bwrap) is not installed")
    with tempfile.TemporaryDirectory(prefix="bwrap-probe-") as scratch:
        argv = [*bubblewrap_argv(found, scratch, network=network), "/bin/sh", "-c", "echo ok"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"},
            )
            out, err = await asyncio.wait_for(proc.communicate(), timeout=15)
        except (OSError, TimeoutError) as exc:
            return Isolation("none", network=True, detail=f"bubblewrap failed to start: {exc}")
    if proc.returncode != 0 or out.strip() != b"ok":
        lines = err.decode(errors="replace").strip().splitlines()
        reason = lines[0] if lines else f"exit {proc.returncode}"
        return Isolation("none", network=True, detail=f"bubblewrap unusable here: {reason}")
    return Isolation("bubblewrap", network=network, detail=found)


# Without bubblewrap

_PR_SET_DUMPABLE = 4
_DROP_CAPABILITIES = ("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--")


def hide_own_process() -> bool:
    """Make this process non-dumpable: processes of the same user (an unisolated command) can no
    longer open its /proc files (`environ`, `mem`, `fd`...); root keeps that power only with
    `CAP_SYS_PTRACE`. The flag is not inherited by the commands themselves (exec resets it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def effective_capabilities() -> int:
    """This process's effective capability set (0 for an ordinary user)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


async def capability_drop(setpriv: str | None = None) -> list[str] | None:
    """The `setpriv` prefix that starts a command with no capabilities, if it works here."""
    found = setpriv or shutil.which("setpriv")
    if not found:
        return None
    prefix = [found, *_DROP_CAPABILITIES]
    try:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            "/bin/sh",
            "-c",
            "grep '^CapEff:' /proc/self/status",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=15)
    except (OSError, TimeoutError):
        return None
    fields = out.decode(errors="replace").split()
    if proc.returncode != 0 or fields[1:] != ["0" * len(fields[-1])]:
        return None
    return prefix


class LocalSandbox:
    """One session's workspace directory; created by `LocalSandboxes.acquire`."""

    def __init__(
        self,
        sandbox_id: str,
        workspace: Path,
        *,
        isolation: Isolation,
        bwrap: str | None,
        run: _Runner,
        unisolated_prefix: Sequence[str] = (),
        default_timeout: float,
        max_timeout: float,
        output_limit: int,
    ) -> None:
        self._id = sandbox_id
        self._jail = _Jail(workspace)
        self._isolation = isolation
        self._bwrap = bwrap
        self._run = run
        self._unisolated_prefix = list(unisolated_prefix)
        self._default_timeout = default_timeout
        self._max_timeout = max_timeout
        self._output_limit = output_limit

    @property
    def id(self) -> str:
        return self._id

    @property
    def workdir(self) -> str:
        return self._jail.root

    @property
    def skills_root(self) -> str:
        return f"{self._jail.root}/skills"

    @property
    def isolation(self) -> Isolation:
        return self._isolation

    def resolve(self, path: str) -> str:
        """The jailed absolute path for `path` (SandboxPathError if it would leave)."""
        return self._jail.agent_path(self._jail.canonical(path))

    async def read_file(self, path: str) -> bytes:
        return await self._run(lambda: self._jail.read(path))

    async def write_files(self, files: Sequence[FileWrite]) -> None:
        def write_all() -> None:
            for item in files:
                self._jail.write(item.path, item.data, item.mode)

        await self._run(write_all)

    async def list_dir(self, path: str) -> list[FileEntry]:
        return await self._run(lambda: self._jail.list(path))

    async def delete(self, path: str) -> None:
        await self._run(lambda: self._jail.delete(path))

    async def exec(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the command's limit, not this call's
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        seconds = effective_timeout(timeout, self._default_timeout, self._max_timeout)
        argv = ["/bin/sh", "-c", command]
        if self._isolation.mechanism == "bubblewrap" and self._bwrap:
            argv = [
                *bubblewrap_argv(self._bwrap, self.workdir, network=self._isolation.network),
                *argv,
            ]
        else:
            argv = [*self._unisolated_prefix, *argv]
        limiter = OutputLimiter(self._output_limit)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(
            lambda: _CommandProtocol(limiter, on_output),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.workdir,
            env=command_environment(self.workdir, env),
            start_new_session=True,
        )
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proto.exited.wait(), timeout=seconds)
            except TimeoutError:
                timed_out = True
        finally:
            # Also on cancellation: nothing the command started outlives the call.
            await _finish(transport, proto)
        output = limiter.text()
        if timed_out:
            output += f"\n[command timed out after {seconds:g}s and was killed]"
        exit_code = _TIMEOUT_EXIT if timed_out else _exit_code(transport.get_returncode())
        log.debug(
            "sandbox_command",
            sandbox_id=self._id,
            command=SECRETS.redact(command[:120]),
            exit_code=exit_code,
            timed_out=timed_out,
            truncated=limiter.truncated,
        )
        return CommandResult(output, exit_code, truncated=limiter.truncated, timed_out=timed_out)


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Collects output and tells process exit apart from pipe close.

    asyncio's `Process.wait()` only returns once the pipes close, which a background child
    holding stdout can delay indefinitely; `process_exited` fires when the command itself ends.
    """

    def __init__(self, limiter: OutputLimiter, on_output: OutputCallback | None) -> None:
        self.limiter = limiter
        self.on_output = on_output
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.limiter.feed(data)
        if self.on_output is not None:
            with contextlib.suppress(Exception):
                self.on_output(self.decoder.decode(data))

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def _kill_group(transport: asyncio.SubprocessTransport) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(transport.get_pid(), signal.SIGKILL)


async def _finish(transport: asyncio.SubprocessTransport, proto: _CommandProtocol) -> None:
    try:
        if not proto.exited.is_set():
            _kill_group(transport)
            await asyncio.shield(proto.exited.wait())
        # Background children may still hold the pipe open: give them a moment to finish
        # writing, then end the whole process group.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.closed.wait()), _DRAIN_GRACE_SECONDS)
        _kill_group(transport)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.closed.wait()), _DRAIN_GRACE_SECONDS)
    finally:
        transport.close()


def _exit_code(returncode: int | None) -> int:
    if returncode is None:
        return -1
    return 128 - returncode if returncode < 0 else returncode


def _make_workspace(path: Path) -> tuple[bool, Path]:
    """Create `path` if needed; whether it existed, and its real path."""
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    return existed, path.resolve()


class LocalSandboxes:
    """The `local` sandbox provider; also `CleanupSandbox`'s target for local sandboxes."""

    backend = "local"

    def __init__(
        self,
        root: Path,
        *,
        command_timeout: float = 120.0,
        max_command_timeout: float = 600.0,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        allow_network: bool = False,
        isolation: SandboxIsolation | str = SandboxIsolation.PREFERRED,
        bwrap: str | None = None,
    ) -> None:
        self._root = root
        self._command_timeout = command_timeout
        self._max_timeout = max(max_command_timeout, command_timeout)
        self._output_limit = output_limit
        self._allow_network = allow_network
        self._mode = SandboxIsolation(isolation)
        self._bwrap = bwrap
        self._isolation: Isolation | None = None
        self._unisolated_prefix: list[str] = []
        self._detect_lock = asyncio.Lock()
        # File work runs here, not in the default executor: graphton's tools already hold
        # default-executor threads while they wait for these calls.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-fs")

    @property
    def root(self) -> Path:
        return self._root

    @property
    def isolation(self) -> Isolation | None:
        """What commands get; None until the first `acquire` (or `detect_isolation`)."""
        return self._isolation

    def path_for(self, sandbox_id: str) -> Path:
        """The workspace of `sandbox_id`; refuses ids that could name a path outside the root."""
        if not _SAFE_ID.match(sandbox_id) or sandbox_id in {".", ".."}:
            raise InvalidInput(f"sandbox id {sandbox_id!r} is not a plain name")
        return self._root.resolve() / sandbox_id

    async def detect_isolation(self) -> Isolation:
        """What commands get here, probed once; `ConfigurationError` when isolation is required
        and impossible (the worker calls this at start, so it refuses to start)."""
        async with self._detect_lock:
            if self._isolation is not None:
                return self._isolation
            if self._mode is SandboxIsolation.OFF:
                found = Isolation("none", network=True, detail="SANDBOX_ISOLATION=off")
            else:
                found = await probe_bubblewrap(network=self._allow_network, bwrap=self._bwrap)
                if found.mechanism == "bubblewrap":
                    self._bwrap = found.detail
                elif self._mode is SandboxIsolation.REQUIRED:
                    raise ConfigurationError(
                        "SANDBOX_ISOLATION=required, but sandbox commands cannot be isolated "
                        f"here: {found.detail}. Install bubblewrap where unprivileged user "
                        "namespaces are allowed (docs/sandboxes.md), use SANDBOX_BACKEND=daytona, "
                        "or set SANDBOX_ISOLATION=preferred to run commands without isolation"
                    )
            if found.mechanism == "none":
                found = await self._hide_worker(found)
            self._isolation = found
            if found.mechanism == "none":
                log.warning(
                    "sandbox_isolation", backend="local", mechanism="none", detail=found.detail
                )
            else:
                log.info(
                    "sandbox_isolation",
                    backend="local",
                    mechanism=found.mechanism,
                    network=found.network,
                )
            return found

    async def _hide_worker(self, found: Isolation) -> Isolation:
        """Keep unisolated commands out of the worker's /proc files; say what was done."""
        notes = ["worker not dumpable" if hide_own_process() else "worker still dumpable"]
        if effective_capabilities():
            prefix = await capability_drop()
            self._unisolated_prefix = prefix or []
            notes.append(
                "commands without capabilities" if prefix else "commands keep its capabilities"
            )
        detail = f"{found.detail}; {', '.join(notes)}"
        return Isolation("none", network=True, detail=detail)

    def _run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def acquire(self, session_key: str, *, sandbox_id: str = "") -> LocalSandbox:
        isolation = await self.detect_isolation()
        path = self.path_for(session_key)
        # One trip to the file pool, not one per call: under load each trip waits its turn on
        # the busy event loop and for the GIL, which made three trips most of a preparation.
        existed, real = await self._run(lambda: _make_workspace(path))
        log.info(
            "sandbox_acquired",
            backend="local",
            sandbox_id=session_key,
            reused=existed,
            isolation=isolation.mechanism,
        )
        return LocalSandbox(
            session_key,
            real,
            isolation=isolation,
            bwrap=self._bwrap,
            run=self._run,
            unisolated_prefix=self._unisolated_prefix,
            default_timeout=self._command_timeout,
            max_timeout=self._max_timeout,
            output_limit=self._output_limit,
        )

    async def cleanup(self, sandbox_id: str) -> bool:
        """Remove the workspace; idempotent (False when there was nothing to remove)."""
        path = self.path_for(sandbox_id)

        def remove() -> bool:
            if not path.exists():
                return False
            shutil.rmtree(path)
            return True

        removed = await self._run(remove)
        log.info("sandbox_removed", backend="local", sandbox_id=sandbox_id, removed=removed)
        return removed

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
