"""The sandbox as one execution's agent sees it, and the adapters its tools call.

`AgentSandbox` binds a `Sandbox` to one execution: the merged agent environment goes to every
command (and nowhere else), and the execution's secret values are masked in everything handed
back to the model: command output, file contents and downloads, grep lines, progress chunks, the
paths of listings, globs and grep matches (a file may be named after a secret), and error texts.
What the model reads ends up in the transcript and the checkpointer, so nothing the adapters
return skips the mask.

Two adapters over it, because the two libraries disagree on method names and shapes:

- `DeepAgentsBackend` implements deepagents' `SandboxBackendProtocol`, so its filesystem
  middleware (`ls`, `read_file`, `write_file`, `edit_file`, `glob`, `grep`, `execute`) works on
  the sandbox. Pass it as `backend=` to `deepagents.create_deep_agent`.
- `GraphtonBackend` has the methods graphton's platform tools call (`read`, `write`, `delete`,
  `list_files`, `is_directory`, `execute_streaming`). graphton builds its backend from a
  `sandbox_config` dict; `AgentSandbox.graphton_sandbox_config()` returns one that makes graphton
  use this backend (graphton has no way to take an instance: see `worker.agent.patches`), and
  graphton then wraps it for deepagents itself.

graphton's `ls`/`glob`/`grep` tools run `find`/`grep` through `execute` when the backend has one,
with paths straight from the model. On the local backend that would bypass the file jail (and
disagree with it about what `/` means), so `GraphtonBackend` only offers `execute` for sandboxes
whose commands see exactly the paths the file tools see (Daytona); otherwise those tools walk the
jailed file API. Commands themselves always go through `execute_streaming`.

The sync methods exist because both libraries call them from worker threads
(`asyncio.to_thread`); they run the async operation on the loop that owns the sandbox and wait.
Calling one from that loop's own thread would deadlock, so it raises instead.
"""

from __future__ import annotations

import asyncio
import difflib
import errno
import fnmatch
import posixpath
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from deepagents.backends.protocol import (
    EditResult,
    ExecuteResponse,
    FileDownloadResponse,
    FileInfo,
    FileUploadResponse,
    GrepMatch,
    SandboxBackendProtocol,
    WriteResult,
)
from deepagents.backends.utils import (
    check_empty_content,
    format_content_with_line_numbers,
    perform_string_replacement,
)
from graphton.core.backends.types import ExecutionResult

from worker.logs import MASK
from worker.sandbox.base import (
    CommandResult,
    FileEntry,
    FileWrite,
    OutputCallback,
    Redactor,
    Sandbox,
)

T = TypeVar("T")

MAX_WALK_ENTRIES = 10_000
MAX_WALK_DEPTH = 30
MAX_GREP_FILE_BYTES = 2 * 1024 * 1024
MAX_GREP_MATCHES = 1000


MAX_RESTORE_CHARS = 1_000_000


def restore_masked(raw: str, written: str, secrets: Sequence[str]) -> str:
    """Put back the secrets a masked view hid, where `written` kept that view's text.

    The model edits files through a masked view: a file holding a secret reads back with `***`
    in its place, and a read-modify-write of that view (graphton's `edit` and `write` work that
    way) would write the mask over the secret. Where `written` matches the view, the original
    text (secret included) is used; where the model changed something, its text is.
    """
    if MASK not in written or not raw or not secrets or len(raw) > MAX_RESTORE_CHARS:
        return written
    pattern = re.compile("|".join(re.escape(s) for s in secrets))
    spans: list[tuple[int, int, str, bool]] = []
    view: list[str] = []
    position = 0
    last = 0
    for match in [*pattern.finditer(raw), None]:
        start = match.start() if match else len(raw)
        if start > last:
            plain = raw[last:start]
            spans.append((position, position + len(plain), plain, False))
            view.append(plain)
            position += len(plain)
        if match is None:
            break
        spans.append((position, position + len(MASK), match.group(), True))
        view.append(MASK)
        position += len(MASK)
        last = match.end()
    if not any(secret for *_, secret in spans):
        return written
    matcher = difflib.SequenceMatcher(None, "".join(view), written, autojunk=False)
    out: list[str] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        out.append(_original(spans, i1, i2) if tag == "equal" else written[j1:j2])
    return "".join(out)


def _original(spans: Sequence[tuple[int, int, str, bool]], start: int, end: int) -> str:
    parts = []
    for lo, hi, text, secret in spans:
        if hi <= start or lo >= end:
            continue
        a, b = max(lo, start), min(hi, end)
        if secret:
            parts.append(text if (a, b) == (lo, hi) else MASK[a - lo : b - lo])
        else:
            parts.append(text[a - lo : b - lo])
    return "".join(parts)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a path glob: `*` and `?` stay within a segment, `**` crosses segments."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


class AgentSandbox:
    """One execution's view of a sandbox: its environment, its secrets masked.

    Create it on the event loop that runs the agent: the synchronous adapter methods, called
    from worker threads, hand their work to that loop.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        env: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        command_timeout: float | None = None,
    ) -> None:
        self.sandbox = sandbox
        self._env = dict(env or {})
        self.redact = Redactor(secrets)
        self._timeout = command_timeout
        self._loop = asyncio.get_running_loop()

    # Async operations, shared by both adapters.

    async def read_text(self, path: str) -> str:
        data = await self.sandbox.read_file(path)
        if _is_binary(data):
            raise OSError(errno.EINVAL, "binary file; inspect it with a command", path)
        return self.redact(data.decode("utf-8", errors="replace"))

    async def write_text(self, path: str, content: str) -> None:
        await self.sandbox.write_files([FileWrite(path, content.encode("utf-8"))])

    async def write_text_unmasking(self, path: str, content: str) -> None:
        """Write text the model derived from a masked read, keeping the secrets it could not
        see (see `restore_masked`)."""
        if MASK in content and self.redact.values:
            try:
                raw = (await self.sandbox.read_file(path)).decode("utf-8", errors="replace")
            except OSError:
                raw = ""
            content = restore_masked(raw, content, self.redact.values)
        await self.write_text(path, content)

    async def exists(self, path: str) -> bool:
        target = await self._base(path)
        try:
            entries = await self.sandbox.list_dir(posixpath.dirname(target) or ".")
        except OSError:
            return False
        name = posixpath.basename(target)
        return any(posixpath.basename(e.path) == name for e in entries)

    async def is_dir(self, path: str) -> bool:
        try:
            await self.sandbox.list_dir(path)
        except OSError:
            return False
        return True

    async def ls(self, path: str) -> list[FileEntry]:
        return self._masked(await self.sandbox.list_dir(path))

    async def download(self, path: str) -> bytes:
        """A file's bytes for the agent (images, memory and skill files), secrets masked."""
        return self.redact.data(await self.sandbox.read_file(path))

    def _masked(self, entries: Iterable[FileEntry]) -> list[FileEntry]:
        return [FileEntry(self.redact(e.path), e.is_dir, e.size) for e in entries]

    async def walk(self, path: str) -> list[FileEntry]:
        """Every entry under `path`, breadth first, bounded in count and depth; paths unmasked
        (callers walk on from them), so never handed to the model as they are."""
        found: list[FileEntry] = []
        level = [path]
        for _ in range(MAX_WALK_DEPTH):
            next_level: list[str] = []
            for directory in level:
                try:
                    entries = await self.sandbox.list_dir(directory)
                except OSError:
                    continue
                for entry in entries:
                    found.append(entry)
                    if len(found) >= MAX_WALK_ENTRIES:
                        return found
                    if entry.is_dir:
                        next_level.append(entry.path)
            if not next_level:
                break
            level = next_level
        return found

    async def glob(self, pattern: str, path: str) -> list[FileEntry]:
        base = await self._base(path)
        regex = glob_regex(pattern.lstrip("/"))
        matches = []
        for entry in await self.walk(base):
            relative = posixpath.relpath(entry.path, base)
            if regex.match(relative):
                matches.append(entry)
        return self._masked(matches)

    async def grep(self, pattern: str, path: str | None, glob: str | None) -> list[GrepMatch]:
        """Lines containing `pattern` literally, in files under `path` whose name matches `glob`."""
        base = await self._base(path or ".")
        name_filter = glob_regex(glob) if glob and "/" in glob else None
        matches: list[GrepMatch] = []
        entries = await self.walk(base) if await self.is_dir(base) else [FileEntry(base, False)]
        for entry in entries:
            if entry.is_dir or entry.size > MAX_GREP_FILE_BYTES:
                continue
            relative = posixpath.relpath(entry.path, base)
            if glob and not (
                name_filter.match(relative)
                if name_filter
                else fnmatch.fnmatchcase(posixpath.basename(entry.path), glob)
            ):
                continue
            try:
                data = await self.sandbox.read_file(entry.path)
            except OSError:
                continue
            if _is_binary(data):
                continue
            for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
                if pattern in line:
                    matches.append(
                        {"path": self.redact(entry.path), "line": number, "text": self.redact(line)}
                    )
                    if len(matches) >= MAX_GREP_MATCHES:
                        return matches
        return matches

    async def _base(self, path: str) -> str:
        # Resolved by the sandbox, so results carry the same absolute paths as `ls`. The local
        # jail may stat the disk here; that is a few syscalls, not worth a thread hop.
        return self.sandbox.resolve(path)

    async def execute(
        self,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the command's limit, not this call's
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        forward = _LineRedactor(on_output, self.redact) if on_output else None
        result = await self.sandbox.exec(
            command,
            env=self._env,
            timeout=timeout if timeout is not None else self._timeout,
            on_output=forward,
        )
        if forward is not None:
            forward.flush()
        return CommandResult(
            self.redact(result.output),
            result.exit_code,
            truncated=result.truncated,
            timed_out=result.timed_out,
        )

    # Bridging for the libraries' synchronous calls from worker threads.

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError(
                "a synchronous sandbox call on the event loop's thread would deadlock; "
                "use the async method"
            )
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    # Adapters.

    def deepagents_backend(self) -> DeepAgentsBackend:
        return DeepAgentsBackend(self)

    def graphton_backend(self) -> GraphtonBackend:
        if self.sandbox.isolation.mechanism == "daytona":
            return GraphtonShellBackend(self)
        return GraphtonBackend(self)

    def graphton_sandbox_config(self) -> dict[str, Any]:
        """A `sandbox_config` for `graphton.create_deep_agent` that uses this sandbox (with
        `worker.agent.patches` applied, which `build_agent` makes sure of)."""
        return {"type": "filesystem", GRAPHTON_BACKEND_KEY: self.graphton_backend()}


class _LineRedactor:
    """Forwards output whole lines at a time, masked; a secret is never split across chunks."""

    def __init__(self, target: OutputCallback, redact: Callable[[str], str]) -> None:
        self._target = target
        self._redact = redact
        self._pending = ""

    def __call__(self, chunk: str) -> None:
        text = self._pending + chunk
        cut = text.rfind("\n") + 1
        self._pending = text[cut:]
        if cut:
            self._target(self._redact(text[:cut]))

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self._target(self._redact(pending))


def _file_info(entry: FileEntry) -> FileInfo:
    return {"path": entry.path, "is_dir": entry.is_dir, "size": entry.size}


def _describe(err: BaseException, path: str) -> str:
    if isinstance(err, FileNotFoundError):
        return f"Error: File '{path}' not found"
    if isinstance(err, IsADirectoryError):
        return f"Error: '{path}' is a directory"
    if isinstance(err, PermissionError):
        return f"Error: access to '{path}' refused: {err}"
    return f"Error: {path}: {err}"


class DeepAgentsBackend(SandboxBackendProtocol):
    """deepagents' `SandboxBackendProtocol` over an `AgentSandbox`."""

    def __init__(self, agent_sandbox: AgentSandbox) -> None:
        self._s = agent_sandbox

    @property
    def id(self) -> str:
        return self._s.sandbox.id

    def _error(self, err: BaseException, path: str) -> str:
        return self._s.redact(_describe(err, path))

    async def als_info(self, path: str) -> list[FileInfo]:
        try:
            return [_file_info(e) for e in await self._s.ls(path)]
        except OSError:
            return []

    async def aread(self, file_path: str, offset: int = 0, limit: int = 2000) -> str:
        try:
            content = await self._s.read_text(file_path)
        except OSError as err:
            return self._error(err, file_path)
        empty = check_empty_content(content)
        if empty:
            return empty
        lines = content.splitlines()
        if offset >= len(lines):
            return f"Error: Line offset {offset} exceeds file length ({len(lines)} lines)"
        selected = lines[offset : offset + limit]
        return format_content_with_line_numbers(selected, start_line=offset + 1)

    async def awrite(self, file_path: str, content: str) -> WriteResult:
        try:
            if await self._s.exists(file_path):
                return WriteResult(
                    error=f"Cannot write to {file_path} because it already exists. "
                    "Read and then make an edit, or write to a new path."
                )
            await self._s.write_text(file_path, content)
        except OSError as err:
            return WriteResult(error=self._error(err, file_path))
        return WriteResult(path=file_path, files_update=None)

    async def aedit(
        self,
        file_path: str,
        old_string: str,
        new_string: str,
        replace_all: bool = False,
    ) -> EditResult:
        try:
            data = await self._s.sandbox.read_file(file_path)
            outcome = perform_string_replacement(
                data.decode("utf-8"), old_string, new_string, replace_all
            )
            if isinstance(outcome, str):
                return EditResult(error=self._s.redact(outcome))
            content, occurrences = outcome
            await self._s.write_text(file_path, content)
        except UnicodeDecodeError:
            return EditResult(error=f"Error: '{file_path}' is not a text file")
        except OSError as err:
            return EditResult(error=self._error(err, file_path))
        return EditResult(path=file_path, files_update=None, occurrences=int(occurrences))

    async def agrep_raw(
        self, pattern: str, path: str | None = None, glob: str | None = None
    ) -> list[GrepMatch] | str:
        try:
            return await self._s.grep(pattern, path, glob)
        except OSError as err:
            return self._error(err, path or ".")

    async def aglob_info(self, pattern: str, path: str = "/") -> list[FileInfo]:
        try:
            return [_file_info(e) for e in await self._s.glob(pattern, path)]
        except OSError:
            return []

    async def aexecute(
        self,
        command: str,
        *,
        timeout: int | None = None,  # noqa: ASYNC109 - forwarded to the sandbox's own timeout
    ) -> ExecuteResponse:
        result = await self._s.execute(command, timeout=timeout)
        return ExecuteResponse(
            output=result.output, exit_code=result.exit_code, truncated=result.truncated
        )

    async def aupload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        responses = []
        for path, data in files:
            try:
                await self._s.sandbox.write_files([FileWrite(path, data)])
                responses.append(FileUploadResponse(path=path))
            except IsADirectoryError:
                responses.append(FileUploadResponse(path=path, error="is_directory"))
            except PermissionError:
                responses.append(FileUploadResponse(path=path, error="permission_denied"))
            except OSError:
                responses.append(FileUploadResponse(path=path, error="invalid_path"))
        return responses

    async def adownload_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        responses = []
        for path in paths:
            try:
                data = await self._s.download(path)
                responses.append(FileDownloadResponse(path=path, content=data))
            except FileNotFoundError:
                responses.append(FileDownloadResponse(path=path, error="file_not_found"))
            except IsADirectoryError:
                responses.append(FileDownloadResponse(path=path, error="is_directory"))
            except PermissionError:
                responses.append(FileDownloadResponse(path=path, error="permission_denied"))
            except OSError:
                responses.append(FileDownloadResponse(path=path, error="invalid_path"))
        return responses

    # Synchronous forms, for callers on worker threads.

    def ls_info(self, path: str) -> list[FileInfo]:
        return self._s.call(lambda: self.als_info(path))

    def read(self, file_path: str, offset: int = 0, limit: int = 2000) -> str:
        return self._s.call(lambda: self.aread(file_path, offset, limit))

    def write(self, file_path: str, content: str) -> WriteResult:
        return self._s.call(lambda: self.awrite(file_path, content))

    def edit(
        self,
        file_path: str,
        old_string: str,
        new_string: str,
        replace_all: bool = False,
    ) -> EditResult:
        return self._s.call(lambda: self.aedit(file_path, old_string, new_string, replace_all))

    def grep_raw(
        self, pattern: str, path: str | None = None, glob: str | None = None
    ) -> list[GrepMatch] | str:
        return self._s.call(lambda: self.agrep_raw(pattern, path, glob))

    def glob_info(self, pattern: str, path: str = "/") -> list[FileInfo]:
        return self._s.call(lambda: self.aglob_info(pattern, path))

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        return self._s.call(lambda: self.aexecute(command, timeout=timeout))

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        return self._s.call(lambda: self.aupload_files(files))

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        return self._s.call(lambda: self.adownload_files(paths))


class GraphtonBackend:
    """What graphton's platform tools call; errors are raised (graphton turns them into text)."""

    def __init__(self, agent_sandbox: AgentSandbox) -> None:
        self._s = agent_sandbox

    @property
    def id(self) -> str:
        return self._s.sandbox.id

    def read(self, path: str) -> str:
        return self._s.call(lambda: self._s.read_text(path))

    def write(self, path: str, content: str) -> WriteResult:
        # graphton's `edit` is a read-modify-write through this (masked) view.
        self._s.call(lambda: self._s.write_text_unmasking(path, content))
        return WriteResult(path=path)

    def delete(self, path: str) -> None:
        self._s.call(lambda: self._s.sandbox.delete(path))

    def list_files(self, path: str = ".") -> list[str]:
        entries = self._s.call(lambda: self._s.ls(path))
        return [posixpath.basename(e.path) for e in entries]

    def is_directory(self, path: str) -> bool:
        return self._s.call(lambda: self._s.is_dir(path))

    async def execute_streaming(
        self,
        command: str,
        *,
        timeout: int | float | None = None,  # noqa: ASYNC109 - forwarded to the sandbox
        on_chunk: Callable[[str], Any] | None = None,
    ) -> Any:
        result = await self._s.execute(command, timeout=timeout, on_output=on_chunk)
        return ExecutionResult(exit_code=result.exit_code, stdout=result.output, stderr="")

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        return DeepAgentsBackend(self._s).upload_files(files)

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        return DeepAgentsBackend(self._s).download_files(paths)


class GraphtonShellBackend(GraphtonBackend):
    """`GraphtonBackend` plus a synchronous `execute`, for sandboxes whose shell and file
    tools agree on paths (graphton then runs `ls`, `glob` and `grep` as commands)."""

    def execute(self, command: str, timeout: int | float | None = None) -> Any:
        return self._s.call(lambda: self.execute_streaming(command, timeout=timeout))


GRAPHTON_BACKEND_KEY = "agent_runner_backend"
"""The `sandbox_config` key whose value graphton uses as its backend (`worker.agent.patches`)."""
