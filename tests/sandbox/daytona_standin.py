"""A local stand-in for the Daytona API, for tests: not Daytona, and not a complete fake of it.

It serves exactly the HTTP endpoints the async Daytona SDK calls for what `DaytonaSandboxes` does
(found by reading the SDK: `daytona/_async/{daytona,sandbox,process,filesystem}.py` and the
generated clients), with the JSON shapes the SDK's models require:

- API: `POST /sandbox` (create; 409 on a name in use), `GET /sandbox` (list, `labels` filter),
  `GET /sandbox/{id or name}`, `DELETE /sandbox/{id}`, `POST /sandbox/{id}/start`,
  `GET /sandbox/{id}/toolbox-proxy-url`.
- Toolbox (`/toolbox/{id}/...`): `GET work-dir`, `POST process/execute`, `POST files/bulk-upload`
  (multipart), `POST files/bulk-download` (multipart response), `GET files`, `DELETE files`,
  `POST files/permissions`.

Each sandbox is a directory on this machine; sandbox paths map under it. Commands run as local
subprocesses in the mapped working directory, split like the real toolbox splits them (no shell
unless asked for), so absolute paths inside a command reach this machine, not the sandbox: a
limitation of the stand-in, not of Daytona. No Socket.IO: clients must poll for state.
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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, MultipartWriter, web


@dataclass
class StandInSandbox:
    id: str
    name: str
    labels: dict[str, str]
    snapshot: str | None
    root: Path
    created_at: str
    state: str = "starting"
    env: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _error(status: int, message: str, code: str | None = None) -> web.Response:
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
        self._clock = itertools.count()
        self._runner: web.AppRunner | None = None
        self.base = ""

    @property
    def api_url(self) -> str:
        return f"{self.base}/api"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
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
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    # Sandbox API

    def _dto(self, sb: StandInSandbox) -> dict[str, Any]:
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
            "state": sb.state,
            "createdAt": sb.created_at,
            "toolboxProxyUrl": f"{self.base}/toolbox",
        }

    def _find(self, key: str) -> StandInSandbox | None:
        if key in self.sandboxes:
            return self.sandboxes[key]
        live = [s for s in self.sandboxes.values() if s.name == key and s.state != "destroyed"]
        return live[0] if live else None

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("name") or f"sandbox-{uuid.uuid4().hex[:8]}"
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        if any(s.name == name and s.state != "destroyed" for s in self.sandboxes.values()):
            return _error(409, f"sandbox with name {name} already exists")
        sid = f"sb-{uuid.uuid4().hex[:12]}"
        root = self.root / sid
        (root / self.WORKDIR.lstrip("/")).mkdir(parents=True)
        sb = StandInSandbox(
            id=sid,
            name=name,
            labels=dict(body.get("labels") or {}),
            snapshot=body.get("snapshot"),
            root=root,
            created_at=f"2025-01-01T00:00:{next(self._clock):02d}Z",
            env=dict(body.get("env") or {}),
        )
        self.sandboxes[sid] = sb
        self.creates += 1
        return web.json_response(self._dto(sb))

    async def list(self, request: web.Request) -> web.Response:
        wanted = json.loads(request.query.get("labels") or "{}")
        items = [
            self._dto(s)
            for s in self.sandboxes.values()
            if all(s.labels.get(k) == v for k, v in wanted.items())
        ]
        return web.json_response({"items": items, "nextCursor": None})

    async def get(self, request: web.Request) -> web.Response:
        sb = self._find(request.match_info["sid"])
        if sb is None:
            return _error(404, "sandbox not found")
        if sb.state == "starting":
            sb.state = "started"  # a sandbox finishes starting between two polls
        return web.json_response(self._dto(sb))

    async def delete(self, request: web.Request) -> web.Response:
        sb = self._find(request.match_info["sid"])
        if sb is None or sb.state == "destroyed":
            return _error(404, "sandbox not found")
        sb.state = "destroyed"
        shutil.rmtree(sb.root, ignore_errors=True)
        return web.json_response(self._dto(sb))

    async def start_sandbox(self, request: web.Request) -> web.Response:
        sb = self._find(request.match_info["sid"])
        if sb is None:
            return _error(404, "sandbox not found")
        sb.state = "started"
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

    async def work_dir(self, request: web.Request) -> web.Response:
        self._sandbox(request)
        return web.json_response({"dir": self.WORKDIR})

    async def execute(self, request: web.Request) -> web.Response:
        sb = self._sandbox(request)
        body = await request.json()
        cwd = self._local(sb, body.get("cwd") or self.WORKDIR)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **(body.get("envs") or {})}
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
        for index, data in contents.items():
            target = self._local(sb, paths[index])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return web.json_response({})

    async def download(self, request: web.Request) -> web.StreamResponse:
        sb = self._sandbox(request)
        body = await request.json()
        writer = MultipartWriter("form-data")
        for path in body["paths"]:
            local = self._local(sb, path)
            # Like the daemon (Go's mime/multipart): the path goes into the filename unescaped.
            quoted = path.replace("\\", "\\\\").replace('"', '\\"')
            if local.is_file():
                writer.append(
                    local.read_bytes(),
                    {
                        "Content-Type": "application/octet-stream",
                        "Content-Disposition": f'form-data; name="file"; filename="{quoted}"',
                    },
                )
            else:
                reason = "is a directory" if local.is_dir() else "file not found"
                status = 400 if local.is_dir() else 404
                code = "INVALID_FILE_PATH" if local.is_dir() else "FILE_NOT_FOUND"
                error = {"message": reason, "statusCode": status, "code": code, "source": "daemon"}
                writer.append(
                    json.dumps(error),
                    {
                        "Content-Type": "application/json",
                        "Content-Disposition": f'form-data; name="error"; filename="{quoted}"',
                    },
                )
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/form-data; boundary={writer.boundary}"}
        )
        await response.prepare(request)
        await writer.write(response)
        await response.write_eof()
        return response

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
        local = self._local(sb, request.query["path"])
        if "mode" in request.query:
            local.chmod(int(request.query["mode"], 8))
        return web.json_response({})
