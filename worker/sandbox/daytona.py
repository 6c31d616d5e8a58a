"""Daytona sandboxes: one remote sandbox per session, through the async Daytona SDK.

A session's sandbox is found, not remembered: it carries the label `stigmer-session=<session id>`
and a deterministic name, so a retry, a second execution of the same session, or another worker
replica finds the same sandbox instead of creating a second one. Within this process a lock per
session serializes lookup and creation; across processes the name is the tie-breaker (Daytona
refuses a second sandbox with the same name, and the loser of that race fetches the winner's by
name: the label list is eventually consistent and may not show it yet).

A sandbox found stopped, archived or archiving is started again, one stopping once it has
stopped; one found destroyed or failed is replaced; a live one that will not start fails the
attempt (retryable) rather than being replaced. A write the daemon refuses is `WriteRefused`.
The sandbox id is returned so the execution records it on the session (`session.spec.sandbox_id`)
and `CleanupSandbox` can delete it later.

The Daytona VM is the isolation boundary, so paths are the VM's own: relative paths are taken
from the sandbox's working directory, absolute ones are used as they are. Skills live under
`/bin/skills/<version_hash>/` (the contract's location). Commands get the VM's environment plus
the execution's agent environment; nothing from the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import posixpath
import re
import secrets
import shlex
import weakref
from collections.abc import Mapping, Sequence

import structlog
from daytona import (
    AsyncDaytona,
    AsyncSandbox,
    CreateSandboxFromSnapshotParams,
    DaytonaAuthenticationError,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaConflictError,
    DaytonaError,
    DaytonaForbiddenError,
    DaytonaNotFoundError,
    DaytonaTimeoutError,
    DaytonaValidationError,
    FileUpload,
    ListSandboxesQuery,
    SandboxState,
)

from worker.errors import (
    ConfigurationError,
    InvalidInput,
    PermissionDenied,
    RunnerError,
    Unavailable,
)
from worker.logs import SECRETS
from worker.sandbox.base import (
    DEFAULT_OUTPUT_LIMIT,
    CommandResult,
    FileEntry,
    FileWrite,
    Isolation,
    OutputCallback,
    WriteRefused,
    checked_env,
    effective_timeout,
    limit_output,
)

log = structlog.get_logger(__name__)

SESSION_LABEL = "stigmer-session"
OWNER_LABEL = "stigmer-owner"
OWNER = "agent-runner"
SKILLS_ROOT = "/bin/skills"
_ENV_PROBE = "STIGMER_ENV_PROBE"

_TIMEOUT_EXIT = 124
_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")
_STARTED = SandboxState.STARTED.value
_DEAD = {
    SandboxState.DESTROYED.value,
    SandboxState.DESTROYING.value,
    SandboxState.ERROR.value,
    SandboxState.BUILD_FAILED.value,
}
# The states the API's `start` accepts (its sandbox service: stopped, archived and archiving;
# paused is in the list because the SDK offers `start`, and no resume, for a paused sandbox).
# Archiving needs no wait: the API accepts a start while archiving.
_STARTABLE = {
    SandboxState.STOPPED.value,
    SandboxState.ARCHIVED.value,
    SandboxState.ARCHIVING.value,
    SandboxState.PAUSED.value,
}
# On its way to stopped: the API refuses a start until it gets there ("State change in progress").
_STOPPING = SandboxState.STOPPING.value
# The API's quota refusals ("Total CPU limit exceeded. Maximum allowed: 10."), a 403 in its
# current source and a 400 in older releases: capacity that frees up as other sandboxes stop.
_QUOTA = re.compile(r"(limit|quota) exceeded", re.IGNORECASE)
_UNKNOWN_SNAPSHOT = re.compile(r"snapshot .* not found", re.IGNORECASE)
_ISOLATION = Isolation("daytona", network=True, detail="remote sandbox VM")


def sandbox_name(session_key: str) -> str:
    """A deterministic, DNS-safe name per session: the cross-process idempotency key."""
    slug = _NAME_UNSAFE.sub("-", session_key.lower()).strip("-")[:50]
    return f"stigmer-{slug}"


def _translate(err: DaytonaError, action: str) -> RunnerError:
    message = f"daytona: {action}: {SECRETS.redact(str(err))}"
    if _QUOTA.search(str(err)):
        return Unavailable(f"{message} (the Daytona organization's quota is used up; retrying)")
    if isinstance(err, DaytonaAuthenticationError | DaytonaForbiddenError):
        return PermissionDenied(message)
    if isinstance(err, DaytonaBadRequestError | DaytonaValidationError):
        return ConfigurationError(message)
    return Unavailable(message)


def _state(sandbox: AsyncSandbox) -> str:
    # The SDK mixes two generated enum types for states; compare their string values.
    state = sandbox.state
    return str(state.value) if state is not None else ""


class DaytonaSandbox:
    """A Daytona sandbox as a `Sandbox`; made by `DaytonaSandboxes.acquire`."""

    def __init__(
        self,
        sdk: AsyncSandbox,
        workdir: str,
        *,
        default_timeout: float,
        max_timeout: float,
        output_limit: int,
    ) -> None:
        self._sdk = sdk
        self._workdir = workdir.rstrip("/") or "/"
        self._default_timeout = default_timeout
        self._max_timeout = max_timeout
        self._output_limit = output_limit
        self._envs_honoured: bool | None = None
        self._probe_lock = asyncio.Lock()

    @property
    def id(self) -> str:
        return str(self._sdk.id)

    @property
    def workdir(self) -> str:
        return self._workdir

    @property
    def skills_root(self) -> str:
        return SKILLS_ROOT

    @property
    def isolation(self) -> Isolation:
        return _ISOLATION

    def resolve(self, path: str) -> str:
        if "\x00" in path:
            raise InvalidInput(f"path {path!r} contains a NUL byte")
        joined = path if path.startswith("/") else posixpath.join(self._workdir, path)
        return posixpath.normpath(joined)

    async def exec(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the command's limit, not this call's
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        seconds = effective_timeout(timeout, self._default_timeout, self._max_timeout)
        variables = checked_env(env)
        # The toolbox's execute does not promise a shell; ask for one explicitly.
        wrapped = f"/bin/sh -c {shlex.quote(command)}"
        if variables and not await self._daemon_takes_envs():
            # `env` takes any variable name, where a shell `export` would not.
            assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items())
            wrapped = f"/usr/bin/env {assignments} {wrapped}"
            variables = {}
        try:
            async with asyncio.timeout(seconds + 30):
                response = await self._sdk.process.exec(
                    wrapped,
                    cwd=self._workdir,
                    env=variables,
                    timeout=max(1, math.ceil(seconds)),
                )
        except (TimeoutError, DaytonaTimeoutError):
            note = f"[command timed out after {seconds:g}s and was killed]"
            return CommandResult(note, _TIMEOUT_EXIT, timed_out=True)
        except DaytonaError as err:
            raise _translate(err, f"running a command in sandbox {self.id}") from err
        output, truncated = limit_output(response.result or "", self._output_limit)
        if on_output is not None and output:
            on_output(output)
        exit_code = response.exit_code if response.exit_code is not None else -1
        return CommandResult(output, int(exit_code), truncated=truncated)

    async def _daemon_takes_envs(self) -> bool:
        """Whether the sandbox's daemon applies the execute request's `envs` (older daemons
        drop the field silently); found once per sandbox handle with a probe command."""
        async with self._probe_lock:
            if self._envs_honoured is None:
                token = secrets.token_hex(8)
                probe = "/bin/sh -c " + shlex.quote(f'printf %s "${_ENV_PROBE}"')
                try:
                    response = await self._sdk.process.exec(
                        probe, cwd=self._workdir, env={_ENV_PROBE: token}, timeout=30
                    )
                except DaytonaError as err:
                    raise _translate(err, f"probing sandbox {self.id}") from err
                self._envs_honoured = (response.result or "").strip() == token
                if not self._envs_honoured:
                    log.warning("sandbox_envs_ignored", backend="daytona", sandbox_id=self.id)
            return self._envs_honoured

    async def read_file(self, path: str) -> bytes:
        target = self.resolve(path)
        try:
            data = await self._sdk.fs.download_file(target)
        except DaytonaNotFoundError as err:
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from err
        except DaytonaError as err:
            text = str(err).lower()
            if "directory" in text:
                raise IsADirectoryError(errno.EISDIR, "is a directory", path) from err
            if "permission" in text or isinstance(err, DaytonaForbiddenError):
                raise PermissionError(errno.EACCES, "permission denied", path) from err
            raise OSError(errno.EIO, f"daytona: {err}", path) from err
        return bytes(data or b"")

    async def write_files(self, files: Sequence[FileWrite]) -> None:
        if not files:
            return
        uploads = [FileUpload(source=f.data, destination=self.resolve(f.path)) for f in files]
        try:
            await self._sdk.fs.upload_files(uploads)
        except DaytonaError as err:
            raise self._write_error(err, "writing files") from err
        try:
            await asyncio.gather(
                *(
                    self._sdk.fs.set_file_permissions(self.resolve(f.path), mode=f"{f.mode:o}")
                    for f in files
                    if f.mode & 0o111
                )
            )
        except DaytonaError as err:
            raise self._write_error(err, "setting file modes") from err

    def _write_error(self, err: DaytonaError, action: str) -> Exception:
        # The daemon refuses a path its user cannot write with a 400 listing the failed files
        # (bulk upload; the SDK raises a plain `DaytonaError` carrying the status) and a chmod
        # with 403 FILE_ACCESS_DENIED (400 in older daemons): the same on every retry.
        refused = isinstance(err, DaytonaForbiddenError | DaytonaBadRequestError) or (
            err.status_code in (400, 403)
        )
        if refused:
            text = f"daytona: sandbox {self.id} refused {action}: {SECRETS.redact(str(err))}"
            return WriteRefused(errno.EACCES, text)
        return _translate(err, f"{action} in sandbox {self.id}")

    async def list_dir(self, path: str) -> list[FileEntry]:
        target = self.resolve(path)
        try:
            infos = await self._sdk.fs.list_files(target)
        except DaytonaNotFoundError as err:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path) from err
        except DaytonaError as err:
            raise OSError(errno.EIO, f"daytona: {err}", path) from err
        entries = [
            FileEntry(posixpath.join(target, info.name), bool(info.is_dir), int(info.size or 0))
            for info in infos
        ]
        return sorted(entries, key=lambda e: e.path)

    async def delete(self, path: str) -> None:
        target = self.resolve(path)
        if target == "/":
            raise PermissionError(errno.EACCES, "refusing to delete /", path)
        try:
            await self._sdk.fs.delete_file(target, recursive=True)
        except DaytonaNotFoundError as err:
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from err
        except DaytonaError as err:
            raise OSError(errno.EIO, f"daytona: {err}", path) from err


class DaytonaSandboxes:
    """The `daytona` sandbox provider."""

    backend = "daytona"

    def __init__(
        self,
        *,
        api_key: str,
        api_url: str | None = None,
        target: str | None = None,
        snapshot_id: str | None = None,
        command_timeout: float = 120.0,
        max_command_timeout: float = 600.0,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        auto_stop_minutes: int = 30,
        poll_state: bool = False,
        operation_timeout: float = 120.0,
    ) -> None:
        self._config = DaytonaConfig(
            api_key=api_key,
            api_url=api_url,
            target=target,
            # None keeps the SDK's default, a Socket.IO channel for state events (it falls back
            # to polling by itself when the channel cannot connect); `poll_state` forces the
            # deprecated polling mode.
            use_deprecated_polling=True if poll_state else None,
        )
        self._snapshot = snapshot_id or None
        self._command_timeout = command_timeout
        self._max_timeout = max(max_command_timeout, command_timeout)
        self._output_limit = output_limit
        self._auto_stop = auto_stop_minutes
        self._op_timeout = operation_timeout
        self._client: AsyncDaytona | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def isolation(self) -> Isolation:
        return _ISOLATION

    def _sdk(self) -> AsyncDaytona:
        # Built lazily: the SDK binds its HTTP session to the running event loop.
        if self._client is None:
            self._client = AsyncDaytona(self._config)
        return self._client

    def _lock_for(self, session_key: str) -> asyncio.Lock:
        lock = self._locks.get(session_key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_key] = lock
        return lock

    async def acquire(self, session_key: str, *, sandbox_id: str = "") -> DaytonaSandbox:
        if not session_key:
            raise InvalidInput("a sandbox needs a session key")
        lock = self._lock_for(session_key)
        async with lock:
            try:
                sandbox, reused = await self._find_or_create(session_key, sandbox_id)
                workdir = await sandbox.get_work_dir()
            except DaytonaError as err:
                raise _translate(err, f"preparing the sandbox of session {session_key}") from err
        log.info(
            "sandbox_acquired",
            backend="daytona",
            sandbox_id=sandbox.id,
            session_key=session_key,
            reused=reused,
        )
        return DaytonaSandbox(
            sandbox,
            workdir or "/home/daytona",
            default_timeout=self._command_timeout,
            max_timeout=self._max_timeout,
            output_limit=self._output_limit,
        )

    async def _find_or_create(self, session_key: str, hint: str) -> tuple[AsyncSandbox, bool]:
        # `get` (by id or name) is authoritative; the label list is eventually consistent (it
        # misses new sandboxes and reports stale states for a second or two), so it is only
        # the last resort, for a sandbox created under a fallback name.
        name = sandbox_name(session_key)
        for key in dict.fromkeys(k for k in (hint, name) if k):
            found = await self._get(key)
            ours = found is not None and found.labels.get(SESSION_LABEL) == session_key
            if found is not None and ours and await self._usable(found):
                return found, True
        for candidate in await self._by_label(session_key):
            if candidate.name != name and await self._usable(candidate):
                return candidate, True
        return await self._create(session_key), False

    async def _get(self, sandbox_id_or_name: str) -> AsyncSandbox | None:
        try:
            return await self._sdk().get(sandbox_id_or_name)
        except DaytonaNotFoundError:
            return None

    async def _by_label(self, session_key: str) -> list[AsyncSandbox]:
        query = ListSandboxesQuery(labels={SESSION_LABEL: session_key})
        found = [sb async for sb in self._sdk().list(query)]
        # The oldest one first, so concurrent finders converge on the same sandbox.
        return sorted(found, key=lambda sb: (sb.created_at or "", sb.id))

    async def _usable(self, sandbox: AsyncSandbox) -> bool:
        """Bring `sandbox` to STARTED; False when it is gone or broken (so it is replaced).

        A live sandbox that cannot be started right now raises `Unavailable`: replacing it would
        abandon the session's files, a later attempt finds it again.
        """
        try:
            await sandbox.refresh_data()  # a listed state may be stale
        except DaytonaNotFoundError:
            return False
        state = _state(sandbox)
        if state == _STARTED:
            return True
        if state in _DEAD:
            log.info("sandbox_dead", backend="daytona", sandbox_id=sandbox.id, state=state)
            return False
        try:
            if state == _STOPPING:
                await sandbox.wait_for_sandbox_stop(timeout=self._op_timeout)
                state = _state(sandbox)
            if state in _STARTABLE:
                await sandbox.start(timeout=self._op_timeout)
            elif state != _STARTED:
                await sandbox.wait_for_sandbox_start(timeout=self._op_timeout)
        except DaytonaNotFoundError:
            return False
        except DaytonaError as err:
            with contextlib.suppress(DaytonaError):
                await sandbox.refresh_data()
            state = _state(sandbox)
            log.warning(
                "sandbox_start_failed",
                backend="daytona",
                sandbox_id=sandbox.id,
                state=state,
                error=str(err),
            )
            if state in _DEAD:
                return False
            translated = _translate(err, f"starting sandbox {sandbox.id} (state {state})")
            if isinstance(translated, ConfigurationError):
                # A 400 from start ("State change in progress"): the sandbox is alive and busy.
                translated = Unavailable(str(translated))
            raise translated from err
        return _state(sandbox) == _STARTED

    async def _create(self, session_key: str) -> AsyncSandbox:
        labels = {SESSION_LABEL: session_key, OWNER_LABEL: OWNER}
        name = sandbox_name(session_key)
        for attempt in range(2):
            params = CreateSandboxFromSnapshotParams(
                name=name,
                labels=dict(labels),
                snapshot=self._snapshot,
                auto_stop_interval=self._auto_stop,
            )
            try:
                created = await self._sdk().create(params, timeout=self._op_timeout)
            except DaytonaConflictError:
                # Another worker won the race for this name: adopt its sandbox, fetched by name
                # (the label list may not show it yet).
                winner = await self._get(name)
                ours = winner is not None and winner.labels.get(SESSION_LABEL) == session_key
                if winner is not None and ours and await self._usable(winner):
                    return winner
                if attempt:
                    raise
                # The name is held by a dead sandbox: use a fresh one.
                name = f"{sandbox_name(session_key)}-{secrets.token_hex(3)}"
                continue
            except DaytonaBadRequestError as err:
                raise self._refused(err) from err
            except DaytonaNotFoundError as err:
                raise ConfigurationError(
                    f"daytona: cannot create a sandbox (target or region unknown?): {err}"
                ) from err
            log.info(
                "sandbox_created",
                backend="daytona",
                sandbox_id=created.id,
                session_key=session_key,
                snapshot=self._snapshot,
            )
            return created
        raise Unavailable(f"daytona: could not create a sandbox for session {session_key}")

    def _refused(self, err: DaytonaBadRequestError) -> RunnerError:
        """A 400 on create: an unknown snapshot (permanent) or a quota (temporary), else as is."""
        if _UNKNOWN_SNAPSHOT.search(str(err)):
            return ConfigurationError(
                f"daytona: snapshot {self._snapshot!r} does not exist in this organization "
                f"(DAYTONA_DEV_TOOLS_SNAPSHOT_ID): {SECRETS.redact(str(err))}"
            )
        return _translate(err, "creating a sandbox")

    async def cleanup(self, sandbox_id: str) -> bool:
        """Delete the sandbox; idempotent (False when it was already gone)."""
        try:
            sandbox = await self._get(sandbox_id)
            if sandbox is None or _state(sandbox) == SandboxState.DESTROYED.value:
                removed = False
            else:
                try:
                    await sandbox.delete(timeout=self._op_timeout)
                    removed = True
                except DaytonaNotFoundError:
                    removed = False
        except DaytonaError as err:
            raise _translate(err, f"deleting sandbox {sandbox_id}") from err
        log.info("sandbox_removed", backend="daytona", sandbox_id=sandbox_id, removed=removed)
        return removed

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()  # type: ignore[no-untyped-call]
