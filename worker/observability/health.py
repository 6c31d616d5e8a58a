"""The worker's HTTP endpoint: probes, status and metrics on `HEALTH_HOST:HEALTH_PORT`.

- `/livez`: 200 while the event loop answers (a blocked loop times the probe out).
- `/readyz`: 200 only when every registered readiness check passes (Temporal connected,
  orchestrator reachable, worker polling) and the worker is not draining; 503 otherwise, with
  the failing checks named in the JSON body.
- `/status`: JSON with readiness and the in-flight executions (phase, elapsed, last heartbeat).
- `/`: the same as a small HTML page.
- `/metrics`: Prometheus exposition (the worker's series and the Temporal SDK's).

The composition root registers checks, starts the server before connecting to Temporal (so the
liveness probe answers during a slow start) and marks the worker draining on shutdown.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from worker.logs import get_logger
from worker.observability.inflight import InFlightRegistry
from worker.observability.metrics import Metrics
from worker.settings import ObservabilitySettings

log = get_logger(__name__)

Check = Callable[[], bool | Awaitable[bool]]
"""A readiness check: returns (or resolves to) True when healthy; raising counts as unhealthy."""


class ReadinessFlag:
    """A check the app flips itself, e.g. `polling.set()` once the Temporal worker runs."""

    def __init__(self, value: bool = False) -> None:
        self._value = value

    def set(self) -> None:
        self._value = True

    def clear(self) -> None:
        self._value = False

    def __call__(self) -> bool:
        return self._value


class Readiness:
    """Named checks evaluated concurrently, each bounded by `timeout` seconds."""

    def __init__(self, *, timeout: float = 2.0) -> None:
        self._checks: dict[str, Check] = {}
        self._timeout = timeout
        self._draining = False
        self._last: dict[str, bool] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def flag(self, name: str, value: bool = False) -> ReadinessFlag:
        """Registers and returns a settable flag check."""
        flag = ReadinessFlag(value)
        self.add(name, flag)
        return flag

    def mark_draining(self) -> None:
        """Not ready from now on: the worker is shutting down and takes no new tasks."""
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    async def evaluate(self) -> dict[str, bool]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        outcome = dict(zip(names, results, strict=True))
        if self._draining:
            outcome["not_draining"] = False
        for name, ok in outcome.items():
            if self._last.get(name) != ok:
                log.info("readiness_changed", check=name, ok=ok)
        self._last = outcome
        return outcome

    async def _run(self, check: Check) -> bool:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, self._timeout)
            return bool(result)
        except Exception as err:  # a failing check is an answer ("not ready"), not a crash
            log.debug("readiness_check_error", error=repr(err))
            return False


class HealthServer:
    """An aiohttp server; use as `async with HealthServer(...) as server:` or start()/stop()."""

    def __init__(
        self,
        settings: ObservabilitySettings,
        *,
        readiness: Readiness,
        in_flight: InFlightRegistry,
        metrics: Metrics,
        info: Mapping[str, str] | None = None,
        drain_interval: float = 5.0,
    ) -> None:
        self._host = settings.health_host
        self._requested_port = settings.health_port
        self.readiness = readiness
        self.in_flight = in_flight
        self.metrics = metrics
        self._info = dict(info or {})
        self._drain_interval = drain_interval
        self._started = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._page)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        # Port 0 asks the OS for a free one (tests); report what was bound.
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._requested_port
        if self.metrics.temporal is not None:
            self._drain_task = asyncio.create_task(
                self.metrics.temporal.drain_forever(self._drain_interval),
                name="temporal-metrics-drain",
            )
        log.info("health_server_started", host=self._host, port=self.port)

    async def stop(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            await asyncio.gather(self._drain_task, return_exceptions=True)
            self._drain_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # Handlers.

    async def _livez(self, _request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = await self.readiness.evaluate()
        ready = all(checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(await self._status_body())

    async def _metrics(self, _request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(text=_render_page(await self._status_body()), content_type="text/html")

    async def _status_body(self) -> dict[str, Any]:
        checks = await self.readiness.evaluate()
        return {
            **self._info,
            "ready": all(checks.values()),
            "checks": checks,
            "uptime_seconds": round(time.monotonic() - self._started, 1),
            "executions": self.in_flight.snapshot(),
        }


def _render_page(status: Mapping[str, Any]) -> str:
    e = html.escape
    checks = "".join(
        f"<li>{e(name)}: <b>{'ok' if ok else 'FAILING'}</b></li>"
        for name, ok in status["checks"].items()
    )
    columns = ("execution_id", "activity", "phase", "stage", "attempt", "elapsed_seconds")
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{e(str(run[c]))}</td>" for c in columns)
        + f"<td>{e(str(run['last_heartbeat_at'] or '-'))}</td>"
        + f"<td>{e('; '.join(run['last_heartbeat_details']))}</td>"
        + "</tr>"
        for run in status["executions"]
    )
    header = "".join(
        f"<th>{e(c)}</th>" for c in (*columns, "last_heartbeat_at", "heartbeat_details")
    )
    state = "ready" if status["ready"] else "NOT READY"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>agent-runner</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;"
        "text-align:left;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>agent-runner: {e(state)}</h1><ul>{checks}</ul>"
        f"<h2>In flight ({len(status['executions'])})</h2>"
        f"<table><tr>{header}</tr>{rows}</table>"
        "<p><a href='/status'>/status</a> · <a href='/metrics'>/metrics</a> · "
        "<a href='/readyz'>/readyz</a> · <a href='/livez'>/livez</a></p>"
        "</body></html>"
    )
