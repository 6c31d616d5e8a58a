"""The console's HTTP server: pages, a JSON API and live streams (server-sent events).

Pages are shells rendered here (`pages`), filled by `static/console.js` from the API; every
piece of agent-produced text reaches the document as text, never as markup, and a strict
Content-Security-Policy allows no inline script. Each open page holds one live connection: the
executions list is re-read when the store's change stream reports a write (one change stream
for the whole process, not one per page or row); an execution's page relays `subscribe` (and
the runner's live stream when `STIGMER_CONSOLE_REDIS_URL` is set).

Access: with API keys configured, every data request needs a `user` key, given once on the
login page and kept in an HttpOnly, SameSite=Strict cookie; a `runner` key is refused, so the
console never holds a key that reads secret values. Without keys the stub is open and so is the
console (loopback by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_pb2
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from grpc import StatusCode
from grpc import aio as grpc_aio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stigmer_stub import paging
from stigmer_stub.auth import ApiKeys, Role
from stigmer_stub.console import pages, present
from stigmer_stub.console.gateway import CONTROL_TIMEOUT, Gateway, GatewayError
from stigmer_stub.logs import get_logger
from stigmer_stub.settings import ConsoleSettings
from stigmer_stub.store.database import Database

log = get_logger(__name__)

COOKIE = "stigmer_console_key"
STATIC_DIR = Path(__file__).parent / "static"
KEEPALIVE_SECONDS = 15.0
LIST_SETTLE_SECONDS = 0.2
"""After a write, wait this long before re-reading a list, so a burst of writes is one read."""
FALLBACK_TICK_SECONDS = 2.0
"""Without a change stream (a server that has none), lists are re-read this often instead."""

_HTTP_STATUS = {
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.FAILED_PRECONDITION: 409,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.NOT_FOUND: 404,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.RESOURCE_EXHAUSTED: 413,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DEADLINE_EXCEEDED: 504,
}

_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class _SecurityHeaders:
    """Adds the security headers to every response (pure ASGI: streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ChangeSignal:
    """A counter bumped on every write to the executions collection, with a wait for the next
    bump. One change stream serves every open list page."""

    def __init__(self, database: Database | None) -> None:
        self.database = database
        self.version = 0
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_after(self, version: int, seconds: float) -> bool:
        """Whether a write happened after `version` (within `seconds`)."""
        if self.version != version:
            return True
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        return self.version != version

    async def run(self) -> None:
        if self.database is None:
            return
        raw = self.database.executions.raw
        kinds = ["insert", "replace", "update", "delete"]
        while True:
            try:
                stream = await raw.watch(
                    [{"$match": {"operationType": {"$in": kinds}}}], max_await_time_ms=1000
                )
                async with stream:
                    async for _change in stream:
                        self.bump()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("console_change_stream_unavailable", error=str(err))
                # Re-read on a timer until the stream can be opened again.
                for _ in range(15):
                    await asyncio.sleep(FALLBACK_TICK_SECONDS)
                    self.bump()


class Console:
    """The console's state and handlers; `app` is the ASGI application."""

    def __init__(
        self,
        settings: ConsoleSettings,
        keys: ApiKeys,
        gateway: Gateway,
        database: Database | None,
        namespace: str = "default",
    ) -> None:
        self.settings = settings
        self.namespace = namespace
        self.keys = keys
        self.gateway = gateway
        self.database = database
        self.changes = ChangeSignal(database)
        routes = [
            Route("/", self.page("executions")),
            Route("/executions/{execution_id}", self.page("execution")),
            Route("/agents", self.page("agents")),
            Route("/sessions", self.page("sessions")),
            Route("/sessions/{session_id}", self.page("session")),
            Route("/login", self.login_page),
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/logout", self.logout, methods=["POST"]),
            Route("/api/executions", self.api(self.list_executions)),
            Route("/api/executions", self.api(self.create_execution), methods=["POST"]),
            Route("/api/executions/stream", self.api(self.stream_executions)),
            Route("/api/executions/{execution_id}", self.api(self.get_execution)),
            Route("/api/executions/{execution_id}/stream", self.api(self.stream_execution)),
            Route("/api/executions/{execution_id}/content", self.api(self.content)),
            Route(
                "/api/executions/{execution_id}/{action}",
                self.api(self.act),
                methods=["POST"],
            ),
            Route("/api/agents", self.api(self.list_agents)),
            Route("/api/sessions", self.api(self.list_sessions)),
            Route("/api/sessions/{session_id}/executions", self.api(self.session_executions)),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
        self.app: ASGIApp = _SecurityHeaders(Starlette(routes=routes))

    # Access ------------------------------------------------------------------------------------

    def _key(self, request: Request) -> tuple[bool, str | None]:
        """(allowed, the key to call the stub with)."""
        if not self.keys.enabled:
            return True, None
        token = request.cookies.get(COOKIE, "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
        if not token:
            return False, None
        caller = self.keys.identify([("authorization", f"Bearer {token}")])
        if caller is None or caller.role is not Role.USER:
            return False, None
        return True, token

    def page(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            allowed, _ = self._key(request)
            if not allowed:
                return RedirectResponse("/login", status_code=303)
            return Response(
                pages.render(name, dict(request.path_params), self._page_settings()),
                media_type="text/html; charset=utf-8",
            )

        return handler

    def _page_settings(self) -> dict[str, str]:
        return {
            "temporal_ui_url": self.settings.temporal_ui_url.rstrip("/"),
            "temporal_namespace": self.namespace,
            "live_stream": "on" if self.settings.redis_url else "off",
            "keys": "on" if self.keys.enabled else "off",
        }

    async def login_page(self, request: Request) -> Response:
        return Response(
            pages.render("login", {}, self._page_settings()),
            media_type="text/html; charset=utf-8",
        )

    async def login(self, request: Request) -> Response:
        body = await _json_body(request)
        key = str(body.get("key", "")).strip()
        if not self.keys.enabled:
            return JSONResponse({"ok": True, "detail": "this stub has no API keys"})
        caller = self.keys.identify([("authorization", f"Bearer {key}")]) if key else None
        if caller is None:
            return _error(401, "unknown key")
        if caller.role is not Role.USER:
            return _error(403, "the console takes a user key, never a runner key")
        response = JSONResponse({"ok": True, "name": caller.name})
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/")
        log.info("console_login", caller=caller.name)
        return response

    async def logout(self, request: Request) -> Response:
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    def api(
        self, handler: Callable[[Request, str | None], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            allowed, key = self._key(request)
            if not allowed:
                return _error(401, "a user key is required (open /login)")
            if request.method == "POST" and not request.headers.get("content-type", "").startswith(
                "application/json"
            ):
                # Forms from other sites cannot send JSON without a preflight.
                return _error(415, "send application/json")
            try:
                return await handler(request, key)
            except GatewayError as err:
                return _error(
                    _HTTP_STATUS.get(err.code, 502), err.details, code=err.code.name, rpc=err.method
                )
            except ValueError as err:
                return _error(400, str(err))

        return guarded

    # Executions --------------------------------------------------------------------------------

    async def _executions_page(self, request: Request, key: str | None) -> dict[str, Any]:
        phase = present.parse_phase(request.query_params.get("phase", ""))
        size = _size(request.query_params.get("size", ""), default=50)
        token = request.query_params.get("token", "")
        session_id = request.path_params.get("session_id", "")
        if session_id:
            reply: execution_io.AgentExecutionList = await self.gateway.unary(
                "listBySession",
                self.gateway.queries.listBySession,
                execution_io.ListAgentExecutionsBySessionRequest(
                    session_id=session_id, page_size=size, page_token=token
                ),
                key,
            )
        else:
            reply = await self.gateway.unary(
                "list",
                self.gateway.queries.list,
                execution_io.ListAgentExecutionsRequest(
                    page_size=size, page_token=token, phase=phase
                ),
                key,
            )
        rows = [present.summary(e) for e in list(reply.entries)[: present.MAX_ROWS]]
        return {"items": rows, "next_token": reply.next_page_token}

    async def list_executions(self, request: Request, key: str | None) -> Response:
        return JSONResponse(await self._executions_page(request, key))

    async def session_executions(self, request: Request, key: str | None) -> Response:
        return JSONResponse(await self._executions_page(request, key))

    async def stream_executions(self, request: Request, key: str | None) -> Response:
        first = await self._executions_page(request, key)  # errors answer before the stream

        async def events() -> AsyncIterator[str]:
            page, last = first, ""
            while True:
                version = self.changes.version
                encoded = json.dumps(page)
                if encoded != last:
                    last = encoded
                    yield _sse("page", encoded)
                if not await self.changes.wait_after(version, KEEPALIVE_SECONDS):
                    yield ": keepalive\n\n"
                    continue
                await asyncio.sleep(LIST_SETTLE_SECONDS)
                try:
                    page = await self._executions_page(request, key)
                except GatewayError as err:
                    yield _sse("failure", json.dumps({"error": err.details, "code": err.code.name}))
                    return

        return _event_stream(events())

    async def get_execution(self, request: Request, key: str | None) -> Response:
        execution_id = request.path_params["execution_id"]
        reply: execution_pb2.AgentExecution = await self.gateway.unary(
            "get",
            self.gateway.queries.get,
            execution_io.AgentExecutionId(value=execution_id),
            key,
        )
        return JSONResponse(present.execution(reply))

    async def stream_execution(self, request: Request, key: str | None) -> Response:
        execution_id = request.path_params["execution_id"]
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=1000)
        snapshots = self.gateway.subscribe(execution_id, key)
        try:
            first = await anext(snapshots)
        except StopAsyncIteration:
            return _error(404, "the execution ended before any state arrived")

        async def pump_snapshots() -> None:
            try:
                async for execution in snapshots:
                    await queue.put(("execution", json.dumps(present.execution(execution))))
            except GatewayError as err:
                await queue.put(("failure", json.dumps({"error": err.details})))
            finally:
                await queue.put(None)

        async def pump_live() -> None:
            with contextlib.suppress(Exception):  # best effort: the status updates still flow
                async for event in _live_events(self.settings.redis_url, execution_id):
                    await queue.put(("live", json.dumps(dict(event))))

        async def events() -> AsyncIterator[str]:
            tasks: list[asyncio.Task[None]] = []
            try:
                yield _sse("execution", json.dumps(present.execution(first)))
                if first.status.phase in present.TERMINAL_PHASES:
                    yield _sse("end", "{}")
                    return
                tasks.append(asyncio.create_task(pump_snapshots()))
                if self.settings.redis_url:
                    tasks.append(asyncio.create_task(pump_live()))
                async for chunk in _drain(queue):
                    yield chunk
            finally:
                # The pumps end before the subscription closes (it may be mid-read in one).
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await snapshots.aclose()

        return _event_stream(events())

    async def content(self, request: Request, key: str | None) -> Response:
        """A stored content, whole, as text (never rendered as HTML: `nosniff`, `text/plain`
        or an attachment). Only what `getContent` serves: an execution's stored contents."""
        execution_id = request.path_params["execution_id"]
        storage_key = request.query_params.get("key", "")
        if not storage_key:
            raise ValueError("key is required")
        call = await self.gateway.content(execution_id, storage_key, key)
        try:
            first = await call.read()
        except grpc_aio.AioRpcError as err:
            raise GatewayError("getContent", err.code(), err.details() or "") from err
        if first is grpc_aio.EOF:
            first = execution_io.ContentChunk()
        mime = first.mime_type or "application/octet-stream"
        download = request.query_params.get("download") == "1"
        if download:
            media_type = "application/octet-stream"
        elif mime.startswith("image/") and mime in {"image/png", "image/jpeg", "image/gif"}:
            media_type = mime
        else:
            media_type = "text/plain; charset=utf-8"

        async def chunks() -> AsyncIterator[bytes]:
            yield first.data
            try:
                while True:
                    chunk = await call.read()
                    if chunk is grpc_aio.EOF:
                        return
                    yield chunk.data
            finally:
                call.cancel()

        headers = {}
        if download:
            name = storage_key.rsplit("/", 1)[-1] or "content"
            safe = "".join(c for c in name if c.isalnum() or c in "-_.") or "content"
            headers["content-disposition"] = f'attachment; filename="{safe}"'
        return StreamingResponse(chunks(), media_type=media_type, headers=headers)

    async def create_execution(self, request: Request, key: str | None) -> Response:
        body = await _json_body(request)
        execution = execution_pb2.AgentExecution()
        execution.spec.message = str(body.get("message", ""))
        execution.spec.agent_id = str(body.get("agent_id", "")).strip()
        execution.spec.session_id = str(body.get("session_id", "")).strip()
        model = str(body.get("model", "")).strip()
        if model:
            execution.spec.execution_config.model_name = model
        created: execution_pb2.AgentExecution = await self.gateway.unary(
            "create", self.gateway.commands.create, execution, key
        )
        log.info("console_execution_created", execution_id=created.metadata.id)
        return JSONResponse(
            {"id": created.metadata.id, "phase": present.phase_name(created.status.phase)}
        )

    async def act(self, request: Request, key: str | None) -> Response:
        execution_id = request.path_params["execution_id"]
        action = request.path_params["action"]
        body = await _json_body(request)
        reason = str(body.get("reason", ""))
        commands = self.gateway.commands
        method: Any
        message: Any
        approvals = {
            "approve": enum_pb2.APPROVAL_ACTION_APPROVE,
            "skip": enum_pb2.APPROVAL_ACTION_SKIP,
            "reject": enum_pb2.APPROVAL_ACTION_REJECT,
            "approve_all": enum_pb2.APPROVAL_ACTION_APPROVE_ALL,
        }
        if action in approvals:
            method, name = commands.submitApproval, "submitApproval"
            message = execution_io.SubmitApprovalInput(
                agent_execution_id=execution_id,
                tool_call_id=str(body.get("tool_call_id", "")),
                action=approvals[action],
                comment=reason,
            )
        elif action == "cancel":
            method, name = commands.cancel, "cancel"
            message = execution_io.CancelAgentExecutionInput(id=execution_id, reason=reason)
        elif action == "terminate":
            method, name = commands.terminate, "terminate"
            message = execution_io.TerminateAgentExecutionInput(id=execution_id, reason=reason)
        elif action == "pause":
            method, name = commands.pause, "pause"
            message = execution_io.PauseAgentExecutionInput(id=execution_id, reason=reason)
        elif action == "resume":
            method, name = commands.resume, "resume"
            message = execution_io.ResumeAgentExecutionInput(id=execution_id)
        elif action == "recover":
            method, name = commands.recover, "recover"
            message = execution_io.RecoverAgentExecutionInput(id=execution_id)
        else:
            return _error(404, f"unknown action {action!r}")
        result: execution_pb2.AgentExecution = await self.gateway.unary(
            name, method, message, key, deadline=CONTROL_TIMEOUT
        )
        log.info("console_action", execution_id=execution_id, action=action)
        return JSONResponse(
            {"ok": True, "action": action, "phase": present.phase_name(result.status.phase)}
        )

    # Agents and sessions -----------------------------------------------------------------------

    async def list_agents(self, request: Request, key: str | None) -> Response:
        """Agents (no list RPC exists in the contract): read from the store, names only, after
        the same key check as every other request."""
        if self.database is None:
            return JSONResponse({"items": [], "next_token": ""})
        size = _size(request.query_params.get("size", ""), default=100)
        page = await self.database.agents.page(
            {}, paging.cursor(size, request.query_params.get("token", ""))
        )
        rows = [
            {
                "id": agent.metadata.id,
                "name": agent.metadata.name,
                "slug": agent.metadata.slug,
                "description": agent.spec.description,
            }
            for agent in page.items[: present.MAX_ROWS]
        ]
        return JSONResponse({"items": rows, "next_token": page.next_token})

    async def list_sessions(self, request: Request, key: str | None) -> Response:
        size = _size(request.query_params.get("size", ""), default=100)
        reply = await self.gateway.list_sessions(size, request.query_params.get("token", ""), key)
        rows = [
            {
                "id": s.metadata.id,
                "name": s.metadata.name,
                "subject": s.spec.subject,
                "agent_instance_id": s.spec.agent_instance_id,
            }
            for s in list(reply.entries)[: present.MAX_ROWS]
        ]
        return JSONResponse({"items": rows})


def _size(text: str, *, default: int) -> int:
    try:
        size = int(text) if text else default
    except ValueError:
        raise ValueError("size must be a number") from None
    return max(1, min(size, present.MAX_ROWS))


async def _json_body(request: Request) -> Mapping[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")  # noqa: TRY004 (a 400, not a bug)
    return body


def _error(status: int, detail: str, **extra: str) -> JSONResponse:
    return JSONResponse({"error": detail, **extra}, status_code=status)


def _sse(event: str, data: str) -> str:
    # json.dumps never emits a raw newline, so the data is one line.
    return f"event: {event}\ndata: {data}\n\n"


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"x-accel-buffering": "no"}
    )


async def _live_events(redis_url: str, execution_id: str) -> AsyncIterator[Mapping[str, str]]:
    from stigmer_cli.follow import read_live_events  # noqa: PLC0415 (only with a live stream)

    async for event in read_live_events(redis_url, execution_id):
        yield event


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the stub process owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def running_console(
    settings: ConsoleSettings,
    keys: ApiKeys,
    grpc_target: str,
    database: Database | None,
    namespace: str = "default",
) -> AsyncIterator[str | None]:
    """Serve the console until the context ends; yields its URL (None when turned off)."""
    if settings.port == 0:
        yield None
        return
    gateway = Gateway(grpc_target)
    console = Console(settings, keys, gateway, database, namespace)
    config = uvicorn.Config(
        console.app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = _QuietServer(config)
    # Bound here, so a port in use is an OSError of the stub's start (uvicorn would exit).
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    changes = asyncio.create_task(console.changes.run())
    try:
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn's flag)
            await asyncio.sleep(0.02)
        url = f"http://{settings.host}:{settings.port}"
        log.info("console_started", url=url, api_keys=keys.enabled)
        yield url
    finally:
        server.should_exit = True
        changes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await changes
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        sock.close()
        await gateway.close()


async def _drain(queue: asyncio.Queue[tuple[str, str] | None]) -> AsyncIterator[str]:
    """Server-sent events for what the pumps put in `queue` (keepalives while it is quiet),
    ending with `end` once a pump says the subscription is over."""
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
        except TimeoutError:
            yield ": keepalive\n\n"
            continue
        if item is None:
            yield _sse("end", "{}")
            return
        yield _sse(*item)
