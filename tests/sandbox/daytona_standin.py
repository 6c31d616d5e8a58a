"""A local stand-in for the Daytona API, for tests: not Daytona, and not a complete fake of it.

It serves the HTTP endpoints the async Daytona SDK calls for what `DaytonaSandboxes` does (found
by reading the SDK installed in the venv: `daytona/_async/{daytona,sandbox,process,filesystem}.py`,
`daytona/internal/event_dispatcher.py` and the generated clients), with the JSON shapes the SDK's
models require, and it behaves the way the service is documented or observed to behave. Each
behaviour below names its source; "API source" is `apps/api/src/sandbox/services/sandbox.service.ts`
and "daemon source" is `apps/daemon/pkg/toolbox/` in the daytonaio/daytona repository.

- API: `POST /sandbox` (create), `GET /sandbox` (list, `labels` filter), `GET /sandbox/{id or
  name}`, `DELETE /sandbox/{id}`, `POST /sandbox/{id}/start`, `GET /sandbox/{id}/toolbox-proxy-url`.
- Socket.IO at `/api/socket.io/` (the SDK's default state channel: `AsyncEventDispatcher` connects
  there with `auth={"token": ...}`): every state change is emitted as `sandbox.state.updated`
  `{sandbox, oldState, newState}`, the payload `AsyncSandbox._handle_event` reads.
- Toolbox (`/toolbox/{id}/...`): `GET work-dir`, `POST process/execute`, `POST files/bulk-upload`
  (multipart), `POST files/bulk-download` (multipart response), `GET files`, `DELETE files`,
  `POST files/permissions`.

State machine (API source, `start`/`stop`/`archive`, and the SDK's `SandboxState`): a new sandbox
is `creating`, then `started` after `start_delay` (the create response says `creating`, daytona
issue #2474). `start` is accepted in `stopped`, `archived` and `archiving`; in a transition
(`stopping`, `starting`, ...) it is a 400 "State change in progress"; `started` returns at once.
`stop()` and `archive()` are test hooks that move a sandbox through `stopping` / `archiving`.

Eventual consistency (daytona issue #5138: the label list serves stale state for a second or two
while `GET /sandbox/{id}` is authoritative): the list shows the world as it was `list_lag` seconds
ago, so a sandbox created less than `list_lag` ago is missing from it. Destroyed sandboxes are
never listed and `GET` answers 404 for them (API source, `findAll` and `findOneByIdOrName`).

Each sandbox is a directory on this machine; sandbox paths map under it. Commands run as local
subprocesses in the mapped working directory, so absolute paths inside a command reach this
machine, not the sandbox: a limitation of the stand-in, not of Daytona.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio  # type: ignore[import-untyped]
from aiohttp import BodyPartReader, web

STARTABLE = {"stopped", "archived", "archiving"}
"""States `POST /sandbox/{id}/start` accepts (API source, `start`)."""


@dataclass
class StandInSandbox:
    id: str
    name: str
    labels: dict[str, str]
    snapshot: str | None
    root: Path
    created_at: str
    state: str = "creating"
    env: dict[str, str] = field(default_factory=dict)
    history: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, state) of every change, for the lagging list view."""

    def state_at(self, moment: float) -> str | None:
        """The state as of `moment`, None before the sandbox existed."""
        seen = None
        for when, state in self.history:
            if when > moment:
                break
            seen = state
        return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    # The API's and the daemon's error envelope, as the SDK's `_parse_openapi_exception` reads it.
    body: dict[str, Any] = {"message": message, "statusCode": status}
    if code:
        body.update(code=code, source="daemon")
    return web.json_response(body, status=status)


class DaytonaStandIn:
    WORKDIR = "/home/daytona"

    def __init__(self, root: Path, *, api_key: str = "standin-key") -> None:
        self.root = root
        self.api_key = api_key
        self.sandboxes: dict[str, StandInSandbox] = {}
        self.creates = 0
        self.create_delay = 0.0
        self.start_delay = 0.05
        """Seconds from `creating`/`starting` to `started`."""
        self.list_lag = 0.0
        """How far behind the present the label list is (seconds)."""
        self.snapshots: dict[str, str] | None = None
        """Snapshots that exist and their states (`active`, `building`, `error`, ...); None
        accepts any name as active."""
        self.quota_exceeded: int | None = None
        """When set, create answers this status with the quota message (403 in the current API
        source, `validateOrganizationQuotas`; older APIs answered 400)."""
        self.read_only: list[str] = []
        """Sandbox path prefixes the daemon cannot write (a root-owned directory in an image whose
        daemon runs as an unprivileged user); empty writes anywhere, as a root daemon does."""
        self.chmod_refused: list[str] = []
        """Path prefixes whose files can be written but not chmod-ed (e.g. a FUSE volume)."""
        self.chmod_refusal_status = 403
        """403 FILE_ACCESS_DENIED in the current daemon source (`classifyChmodChownError`); older
        daemons answered every chmod failure with a generic 400."""
        self.honours_envs = True
        """False plays an older daemon, from before the execute request had its optional `envs`
        (`daytona_toolbox_api_client_async/models/execute_request.py`): Go's JSON decoding drops
        a field the struct does not have, so the command runs without the variables, silently."""
        self.executed: list[dict[str, Any]] = []
        self.socket_clients = 0
        self.events_sent = 0
        self._clock = itertools.count()
        self._runner: web.AppRunner | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
        self.base = ""

    @property
    def api_url(self) -> str:
        return f"{self.base}/api"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        self._sio.attach(app, socketio_path="/api/socket.io/")
        self._sio.on("connect", self._socket_connect)
        self._sio.on("disconnect", self._socket_disconnect)
        api = [
            web.post("/api/sandbox", self.create),
            web.get("/api/sandbox", self.list),
            web.get("/api/sandbox/{sid}", self.get),
            web.delete("/api/sandbox/{sid}", self.delete),
            web.post("/api/sandbox/{sid}/start", self.start_sandbox),
            web.get("/api/sandbox/{sid}/toolbox-proxy-url", self.proxy_url),
        ]
        toolbox = [
            web.get("/toolbox/{sid}/work-dir", self.work_dir),
            web.post("/toolbox/{sid}/process/execute", self.execute),
            web.post("/toolbox/{sid}/files/bulk-upload", self.upload),
            web.post("/toolbox/{sid}/files/bulk-download", self.download),
            web.get("/toolbox/{sid}/files", self.list_files),
            web.delete("/toolbox/{sid}/files", self.delete_file),
            web.post("/toolbox/{sid}/files/permissions", self.permissions),
        ]
        app.add_routes(api + toolbox)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # The Socket.IO handshake authenticates in its connect packet instead (`_socket_connect`).
        if request.path.startswith("/api/socket.io/"):
            response: web.StreamResponse = await handler(request)
            return response
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "unauthorized")
        response = await handler(request)
        return response

    async def _socket_connect(self, sid: str, environ: Any, auth: Any = None) -> bool:
        if not isinstance(auth, dict) or auth.get("token") != self.api_key:
            return False
        self.socket_clients += 1
        return True

    async def _socket_disconnect(self, sid: str, *args: Any) -> None:
        self.socket_clients -= 1

    # State machine

    def set_state(self, sb: StandInSandbox, state: str) -> None:
        """Change a sandbox's state now, record it for the list view, and emit the event."""
        old, sb.state = sb.state, state
        sb.history.append((time.monotonic(), state))
        if old == state or not self.socket_clients:
            return
        payload = {"sandbox": self._dto(sb), "oldState": old, "newState": state}
        task = asyncio.get_running_loop().create_task(self._emit(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, payload: dict[str, Any]) -> None:
        await self._sio.emit("sandbox.state.updated", payload)
        self.events_sent += 1

    def _later(self, delay: float, sb: StandInSandbox, expected: str, state: str) -> None:
        """Move `sb` from `expected` to `state` after `delay`, unless something else moved it."""

        def fire() -> None:
            if sb.state == expected:
                self.set_state(sb, state)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def stop_sandbox(self, sid: str, *, delay: float = 0.05) -> None:
        """Test hook: stop a started sandbox, as auto-stop would (`stopping`, then `stopped`)."""
        sb = self.sandboxes[sid]
        self.set_state(sb, "stopping")
        self._later(delay, sb, "stopping", "stopped")

    def archive_sandbox(self, sid: str, *, delay: float = 0.05) -> None:
        """Test hook: archive a stopped sandbox (`archiving`, then `archived`)."""
        sb = self.sandboxes[sid]
        self.set_state(sb, "archiving")
        self._later(delay, sb, "archiving", "archived")

    # Sandbox API

    def _dto(self, sb: StandInSandbox, state: str | None = None) -> dict[str, Any]:
        return {
            "id": sb.id,
            "organizationId": "org-standin",
            "name": sb.name,
            "snapshot": sb.snapshot,
            "user": "daytona",
            "env": sb.env,
            "labels": sb.labels,
            "public": False,
            "networkBlockAll": False,
            "kvm": False,
            "target": "us",
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": state or sb.state,
            "createdAt": sb.created_at,
            "toolboxProxyUrl": f"{self.base}/toolbox",
        }

    def _find(self, key: str) -> StandInSandbox | None:
        # By id, then by name; never a destroyed one (API source, `findOneByIdOrName`).
        found = self.sandboxes.get(key)
        if found is None:
            named = [s for s in self.sandboxes.values() if s.name == key]
            found = named[0] if named else None
        if found is None or found.state == "destroyed":
            return None
        return found

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("name") or f"sandbox-{uuid.uuid4().hex[:8]}"
        snapshot = body.get("snapshot")
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        if self.snapshots is not None and snapshot and snapshot not in self.snapshots:
            # API source, `createFromSnapshot`: an unknown snapshot is a 400, not a 404.
            return _error(
                400, f"Snapshot {snapshot} not found. Did you add it through the Daytona Dashboard?"
            )
        if self.snapshots is not None and snapshot and self.snapshots[snapshot] != "active":
            # API source, `createFromSnapshot`: a snapshot that is not active is a 400 too.
            return _error(400, f"Snapshot {snapshot} is {self.snapshots[snapshot]}")
        if self.quota_exceeded is not None:
            # API source, `validateOrganizationQuotas`.
            return _error(
                self.quota_exceeded,
                "Total CPU limit exceeded. Maximum allowed: 10.\n"
                "To increase concurrency limits, upgrade your organization's Tier.",
            )
        if any(s.name == name and s.state != "destroyed" for s in self.sandboxes.values()):
            # API source: the unique-name violation (23505) becomes a ConflictException.
            return _error(409, f"Sandbox with name {name} already exists")
        sid = f"sb-{uuid.uuid4().hex[:12]}"
        root = self.root / sid
        (root / self.WORKDIR.lstrip("/")).mkdir(parents=True)
        sb = StandInSandbox(
            id=sid,
            name=name,
            labels=dict(body.get("labels") or {}),
            snapshot=snapshot,
            root=root,
            created_at=f"2025-01-01T00:00:{next(self._clock):02d}Z",
            env=dict(body.get("env") or {}),
        )
        self.sandboxes[sid] = sb
        self.creates += 1
        sb.history.append((time.monotonic(), "creating"))
        self._later(self.start_delay, sb, "creating", "started")
        return web.json_response(self._dto(sb))

    async def list(self, request: web.Request) -> web.Response:
        wanted = json.loads(request.query.get("labels") or "{}")
        moment = time.monotonic() - self.list_lag
        items = []
        for s in self.sandboxes.values():
            seen = s.state_at(moment)
            if seen is None or seen == "destroyed":
                continue
            if all(s.labels.get(k) == v for k, v in wanted.items()):
                items.append(self._dto(s, seen))
        return web.json_response({"items": items, "nextCursor": None})

    async def get(self, request: web.Request) -> web.Response:
        sb = self._find(request.match_info["sid"])
        if sb is None:
            return _error(404, f"Sandbox with ID or name {request.match_info['sid']} not found")
        return web.json_response(self._dto(sb))

    async def delete(self, request: web.Request) -> web.Response:
        sb = self._find(request.match_info["sid"])
        if sb is None:
            return _error(404, f"Sandbox with ID or name {request.match_info['sid']} not found")
        self.set_state(sb, "destroyed")
        shutil.rmtree(sb.root, ignore_errors=True)
        return web.json_response(self._dto(sb))

    async def start_sandbox(self, request: web.Request) -> web.Response:
        sb = self._find(request.match_info["sid"])
        if sb is None:
            return _error(404, f"Sandbox with ID or name {request.match_info['sid']} not found")
        if sb.state == "started":
            return web.json_response(self._dto(sb))
        if sb.state not in STARTABLE:
            # API source, `start`: a sandbox on its way somewhere else cannot be started.
            message = "Sandbox is not in valid state"
            if sb.state in {"stopping", "starting", "creating", "restoring", "pulling_snapshot"}:
                message = "State change in progress"
            return _error(400, message)
        self.set_state(sb, "starting")
        self._later(self.start_delay, sb, "starting", "started")
        return web.json_response(self._dto(sb))

    async def proxy_url(self, request: web.Request) -> web.Response:
        return web.json_response({"url": f"{self.base}/toolbox"})

    # Toolbox

    def _sandbox(self, request: web.Request) -> StandInSandbox:
        sb = self.sandboxes.get(request.match_info["sid"])
        if sb is None or sb.state != "started":
            raise web.HTTPNotFound(text="sandbox not running")
        return sb

    @staticmethod
    def _local(sb: StandInSandbox, path: str) -> Path:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise web.HTTPBadRequest(text="stand-in refuses '..'")
        return sb.root.joinpath(*parts)

    def _absolute(self, path: str) -> str:
        return path if path.startswith("/") else f"{self.WORKDIR}/{path}"

    @staticmethod
    def _under(path: str, prefixes: Sequence[str]) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)

    async def work_dir(self, request: web.Request) -> web.Response:
        self._sandbox(request)
        return web.json_response({"dir": self.WORKDIR})

    async def execute(self, request: web.Request) -> web.Response:
        sb = self._sandbox(request)
        body = await request.json()
        self.executed.append(body)
        cwd = self._local(sb, body.get("cwd") or self.WORKDIR)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
        if self.honours_envs:
            env.update(body.get("envs") or {})
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(body["command"]),
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=body.get("timeout") or 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return _error(408, "command execution timeout", "PROCESS_EXECUTION_TIMEOUT")
        return web.json_response(
            {"exitCode": proc.returncode, "result": out.decode(errors="replace")}
        )

    async def upload(self, request: web.Request) -> web.Response:
        sb = self._sandbox(request)
        reader = await request.multipart()
        paths: dict[str, str] = {}
        contents: dict[str, bytes] = {}
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            index, _, kind = part.name.rpartition(".")
            if kind == "path":
                paths[index] = await part.text()
            elif kind == "file":
                contents[index] = bytes(await part.read(decode=False))
        errors: list[str] = []
        files: list[dict[str, Any]] = []
        for index, data in contents.items():
            path = paths[index]
            if self._under(self._absolute(path), self.read_only):
                # Daemon source, `UploadFiles`: a failed write is listed in `errors`, and any
                # error makes the whole answer a 400 (without `message` or `code`).
                parent = path.rsplit("/", 1)[0] or "/"
                errors.append(f"{path}: mkdir {parent}: permission denied")
                continue
            target = self._local(sb, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files.append({"path": path, "bytes": len(data)})
        if errors:
            return web.json_response({"errors": errors, "files": files}, status=400)
        return web.json_response({"files": files})

    async def download(self, request: web.Request) -> web.Response:
        sb = self._sandbox(request)
        body = await request.json()
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for path in body["paths"]:
            local = self._local(sb, path)
            # The daemon echoes the requested path in the part's filename; a path that is not
            # plain ASCII also goes as RFC 5987 `filename*=UTF-8''<percent-encoded>`, the
            # lossless form the SDK decodes first (`daytona/common/file_transfer.py`,
            # `parse_content_disposition`). The body is built by hand: it is bytes on the wire.
            quoted = path.replace("\\", "\\\\").replace('"', '\\"')
            disposition = f'filename="{quoted}"'
            if not path.isascii():
                ascii_only = quoted.encode("ascii", "replace").decode()
                extended = urllib.parse.quote(path, safe="/")
                disposition = f"filename=\"{ascii_only}\"; filename*=UTF-8''{extended}"
            if local.is_file():
                payload, kind, part_name = local.read_bytes(), "application/octet-stream", "file"
            else:
                reason = "is a directory" if local.is_dir() else "file not found"
                status = 400 if local.is_dir() else 404
                code = "INVALID_FILE_PATH" if local.is_dir() else "FILE_NOT_FOUND"
                error = {"message": reason, "statusCode": status, "code": code, "source": "daemon"}
                payload, kind, part_name = json.dumps(error).encode(), "application/json", "error"
            head = (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{part_name}"; {disposition}\r\n'
                f"Content-Type: {kind}\r\n\r\n"
            )
            parts.append(head.encode() + payload + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return web.Response(
            body=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

    async def list_files(self, request: web.Request) -> web.Response:
        sb = self._sandbox(request)
        local = self._local(sb, request.query.get("path", self.WORKDIR))
        if not local.is_dir():
            return _error(404, "directory not found", "FILE_NOT_FOUND")
        infos = []
        for child in sorted(local.iterdir()):
            info = child.lstat()
            infos.append(
                {
                    "name": child.name,
                    "isDir": stat.S_ISDIR(info.st_mode),
                    "size": info.st_size,
                    "mode": oct(info.st_mode),
                    "modTime": "",
                    "owner": "daytona",
                    "group": "daytona",
                    "permissions": oct(info.st_mode & 0o777),
                }
            )
        return web.json_response(infos)

    async def delete_file(self, request: web.Request) -> web.Response:
        sb = self._sandbox(request)
        local = self._local(sb, request.query["path"])
        if local.is_dir() and not local.is_symlink():
            shutil.rmtree(local)
        elif local.exists() or local.is_symlink():
            local.unlink()
        else:
            return _error(404, "file not found", "FILE_NOT_FOUND")
        return web.json_response({})

    async def permissions(self, request: web.Request) -> web.Response:
        sb = self._sandbox(request)
        path = self._absolute(request.query["path"])
        local = self._local(sb, path)
        if not local.exists():
            return _error(404, f"stat {path}: no such file or directory", "FILE_NOT_FOUND")
        if "mode" in request.query:
            if self._under(path, self.chmod_refused) or self._under(path, self.read_only):
                # Daemon source, `SetFilePermissions`/`classifyChmodChownError`.
                message = f"failed to change mode for {path}: chmod {path}: operation not permitted"
                if self.chmod_refusal_status == 403:
                    return _error(403, message, "FILE_ACCESS_DENIED")
                return web.json_response(
                    {"message": message, "statusCode": 400, "code": "BAD_REQUEST"}, status=400
                )
            local.chmod(int(request.query["mode"], 8))
        return web.json_response({})
