"""What a sandbox is to the rest of the worker: a workspace, files in it, and shell commands.

Two implementations: `local` (a directory per session on this machine, optionally behind
bubblewrap) and `daytona` (a remote sandbox per session). The agent never sees them directly: the
backends in `worker.sandbox.backend` adapt a `Sandbox` to what deepagents and graphton call.

Paths are strings as the sandbox's own commands see them. `workdir` is absolute; relative paths
are taken from it. File-level problems are the built-in `OSError` subclasses
(`FileNotFoundError`, `IsADirectoryError`, ...), because they are the agent's to handle; a path
that would leave a jailed workspace raises `SandboxPathError`, a `PermissionError`; a write the
sandbox refuses (a read-only location) raises `WriteRefused`, both a `PermissionError` and a
non-retryable `ConfigurationError`. Problems with the sandbox itself (cannot be created, backend
down) are `worker.errors` types.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from worker.errors import ConfigurationError, InvalidInput
from worker.redaction import SECRETS, Matcher, worth_masking

OutputCallback = Callable[[str], None]
"""Receives decoded output as it arrives (for live progress); must not block."""

DEFAULT_OUTPUT_LIMIT = 100_000
"""Bytes of command output kept for the agent (head and tail); the middle is dropped."""

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxPathError(PermissionError):
    """A path would leave the sandbox's workspace (`..`, a symlink pointing out)."""


class WriteRefused(ConfigurationError, PermissionError):
    """The sandbox refused to create or chmod a file (a location its user cannot write).

    A `PermissionError`, so the agent's file tools report it like any other file problem, and a
    `ConfigurationError` (not retryable): a new attempt meets the same sandbox image. Callers
    that can go without the file (the skill installer) degrade instead of failing the run.
    """


@dataclass(frozen=True)
class Isolation:
    """How commands are contained, for logs and the status; never assumed, always detected."""

    mechanism: str
    """`bubblewrap`, `none` (plain subprocess in the workspace) or `daytona` (a remote VM)."""
    network: bool
    """Whether commands can reach the network."""
    detail: str = ""

    def describe(self) -> str:
        net = "network" if self.network else "no network"
        text = f"{self.mechanism}, {net}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class CommandResult:
    output: str
    """stdout and stderr interleaved as the command wrote them, possibly truncated."""
    exit_code: int
    truncated: bool = False
    timed_out: bool = False


@dataclass(frozen=True)
class FileEntry:
    path: str
    """Absolute, as the sandbox's commands see it."""
    is_dir: bool
    size: int = 0


@dataclass(frozen=True)
class FileWrite:
    path: str
    data: bytes
    mode: int = 0o644


@runtime_checkable
class Sandbox(Protocol):
    """One session's sandbox. Safe to use from several tasks at once."""

    @property
    def id(self) -> str:
        """What `CleanupSandbox` takes; the execution records it as `session.spec.sandbox_id`."""
        ...

    @property
    def workdir(self) -> str:
        """The workspace: commands start here; relative paths are taken from here."""
        ...

    @property
    def skills_root(self) -> str:
        """Where skills are written: `<skills_root>/<version_hash>/`."""
        ...

    @property
    def isolation(self) -> Isolation: ...

    def resolve(self, path: str) -> str:
        """The absolute path `path` names in this sandbox (`SandboxPathError` if it would leave
        a jailed workspace)."""
        ...

    async def exec(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the command's limit, not this call's
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        """Run `command` with `/bin/sh -c` in `workdir`.

        The process sees a minimal environment plus `env` (the execution's merged agent
        environment), never the worker's own. It is killed after `timeout` seconds (the backend's
        default when None); its output is limited.
        """
        ...

    async def read_file(self, path: str) -> bytes: ...

    async def write_files(self, files: Sequence[FileWrite]) -> None:
        """Create or replace files, creating parent directories as needed."""
        ...

    async def list_dir(self, path: str) -> list[FileEntry]: ...

    async def delete(self, path: str) -> None:
        """Remove a file, or a directory with everything in it."""
        ...


class SandboxProvider(Protocol):
    """Hands out one sandbox per session and removes them (`CleanupSandbox`)."""

    @property
    def backend(self) -> str: ...

    async def acquire(self, session_key: str, *, sandbox_id: str = "") -> Sandbox:
        """The session's sandbox, created on first use and reused afterwards.

        `session_key` is the session id (the execution id for a session-less run).
        `sandbox_id` is what the session recorded last time, if anything; a hint, not a promise.
        """
        ...

    async def cleanup(self, sandbox_id: str) -> bool:
        """Remove a sandbox; idempotent. Returns False when there was nothing to remove."""
        ...

    async def aclose(self) -> None: ...


def command_environment(home: str, env: Mapping[str, str] | None) -> dict[str, str]:
    """A scrubbed environment for a sandbox command: a few basics, then the agent's variables.

    Nothing comes from the worker's own environment, so its credentials cannot leak into a
    command. The agent's variables win over the basics (an agent may set its own PATH).
    """
    base = {
        "PATH": BASE_PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": "/tmp",  # noqa: S108 - inside the sandbox; bubblewrap gives it a private one
    }
    base.update(checked_env(env))
    return base


def checked_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """`env` as a plain dict, refusing what no process environment can carry."""
    for name, value in (env or {}).items():
        if not name or "=" in name or "\x00" in name or "\x00" in value:
            raise InvalidInput(f"environment variable {name!r} cannot be passed to a command")
    return dict(env or {})


@dataclass
class OutputLimiter:
    """Keeps the first and last `limit // 2` bytes of a stream and counts what it dropped.

    The tail matters as much as the head: compilers and test runners print the error last.
    """

    limit: int = DEFAULT_OUTPUT_LIMIT
    _head: bytearray = field(default_factory=bytearray)
    _tail: collections.deque[bytes] = field(default_factory=collections.deque)
    _tail_size: int = 0
    dropped: int = 0

    def feed(self, chunk: bytes) -> None:
        head_room = self.limit // 2 - len(self._head)
        if head_room > 0:
            self._head += chunk[:head_room]
            chunk = chunk[head_room:]
        if not chunk:
            return
        self._tail.append(chunk)
        self._tail_size += len(chunk)
        keep = self.limit - self.limit // 2
        while self._tail_size > keep:
            first = self._tail[0]
            excess = self._tail_size - keep
            if len(first) <= excess:
                self._tail.popleft()
                self._tail_size -= len(first)
                self.dropped += len(first)
            else:
                self._tail[0] = first[excess:]
                self._tail_size -= excess
                self.dropped += excess

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def text(self) -> str:
        head = bytes(self._head).decode("utf-8", errors="replace")
        tail = b"".join(self._tail).decode("utf-8", errors="replace")
        if not self.dropped:
            return head + tail
        return f"{head}\n[... output truncated: {self.dropped} bytes omitted ...]\n{tail}"


def limit_output(data: bytes | str, limit: int) -> tuple[str, bool]:
    """`OutputLimiter` over a whole buffer (remote backends return output in one piece)."""
    limiter = OutputLimiter(limit)
    limiter.feed(data.encode("utf-8", errors="replace") if isinstance(data, str) else data)
    return limiter.text(), limiter.truncated


def effective_timeout(requested: float | None, default: float, maximum: float) -> float:
    """The agent may ask for a timeout; zero or none means the default; never above `maximum`."""
    if requested is None or requested <= 0:
        return min(default, maximum)
    return min(float(requested), maximum)


class Redactor:
    """Masks the execution's secret values and every secret the process's registry holds.

    One compiled matcher over both, rebuilt when the registry's set changes (a run starts or
    ends), not per call. Inside a run the execution's values are in the registry already (its
    scope), so the registry's own matcher is used as it is.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        own = worth_masking(secrets)
        self.values: tuple[str, ...] = Matcher(own).ordered
        """The execution's values, longest first."""
        self._own = own
        self._combined: tuple[Matcher, Matcher] | None = None

    def matcher(self) -> Matcher:
        registry = SECRETS.matcher
        cached = self._combined
        if cached is not None and cached[0] is registry:
            return cached[1]
        combined = (
            registry if self._own <= registry.values else Matcher(registry.values | self._own)
        )
        self._combined = (registry, combined)
        return combined

    def __call__(self, text: str) -> str:
        return self.matcher()(text)

    def data(self, raw: bytes) -> bytes:
        """`raw` with every secret's UTF-8 bytes masked (a file the agent downloads, text or
        not: a binary holding a secret loses it rather than keeps it)."""
        return self.matcher().data(raw)
