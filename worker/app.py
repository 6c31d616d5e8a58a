"""The worker's composition root: settings → logging → adapters → activities → Temporal worker.

Nothing else wires things together. SIGTERM/SIGINT start a graceful shutdown (drain): the worker
stops polling; an execution with attempts left is stopped at its next safe point and handed over
(its attempt ends with the retryable `WorkerShuttingDown`, its status stays IN_PROGRESS, and
another worker resumes it from the checkpoint); one on its last attempt gets up to
`WORKER_GRACEFUL_SHUTDOWN_SECONDS` to finish. Whatever still runs when that window ends is
cancelled by the SDK and ends the same way, never as a user's CANCELLED.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import signal
import sys
from contextlib import AsyncExitStack, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client, TLSConfig
from temporalio.worker import Worker

from worker.activities.runner import RunnerActivities, temporal_attempt
from worker.adapters.live_events import live_events_for
from worker.adapters.metered import MeteredStatusSink
from worker.adapters.orchestrator import GrpcOrchestrator
from worker.agent.checkpointer import open_checkpointer
from worker.agent.mcp import McpLimits
from worker.codec import with_codec
from worker.content.offload import OffloadSupport
from worker.converter import DATA_CONVERTER
from worker.errors import ConfigurationError
from worker.logs import configure
from worker.observability.health import HealthServer, Readiness
from worker.observability.inflight import InFlightInterceptor, InFlightRegistry
from worker.observability.metrics import Metrics, TemporalMetricsBridge
from worker.observability.tracing import configure_tracing, tracing_interceptor
from worker.run.prepare import SpecPreparer
from worker.run.runtime import GraphtonRuntime
from worker.run.service import GraphtonExecutions
from worker.run.status_publisher import StatusPublisher
from worker.sandbox import check_isolation, create_sandbox_provider
from worker.settings import Settings, SettingsError, load_settings, secret_values
from worker.skills.cache import SkillCache
from worker.skills.installer import SkillInstaller

log = structlog.get_logger("worker")


async def connect_temporal(settings: Settings, **kwargs: Any) -> Client:
    t = settings.temporal
    tls: TLSConfig | bool = False
    if settings.temporal_tls:
        tls = TLSConfig(
            server_root_ca_cert=_read(t.tls_server_ca_cert_path),
            client_cert=_read(t.tls_client_cert_path),
            client_private_key=_read(t.tls_client_key_path),
        )
    return await Client.connect(
        t.address,
        namespace=t.namespace,
        tls=tls,
        api_key=t.api_key.get_secret_value() if t.api_key else None,
        data_converter=with_codec(DATA_CONVERTER, t.payload_key()),
        **kwargs,
    )


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


YOUNG_GC_THRESHOLD = 7000
"""Allocations (less deallocations) between two young-generation collections; CPython's default
is 700. The agent libraries allocate briskly (a demo execution made about 16 young collections a
second), and each collection stops every execution on the loop; with ten times the room most
young objects are gone before one runs, and garbage-collection time per execution fell from about
12 ms to 3-4 ms (see `docs/benchmarks.md`). The cost is a few hundred kilobytes of young objects."""


def settle_heap() -> int:
    """Collect once, then move every object alive now out of the garbage collector's reach, and
    give the young generation more room (`YOUNG_GC_THRESHOLD`).

    What is alive once the worker is composed (modules, pydantic schemas, the agent libraries,
    clients) stays alive for the whole process, yet every full collection would walk it again:
    about 400,000 objects, 100-200 ms with the event loop stopped. Frozen, a full collection walks
    only what executions allocate. Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)
    return gc.get_freeze_count()


async def run(
    settings: Settings, *, stop: asyncio.Event | None = None, freeze_heap: bool = False
) -> None:
    """Run the worker until `stop` is set (or SIGTERM/SIGINT when `stop` is None).

    `freeze_heap` calls `settle_heap()` once the worker is composed; the process entry point
    does, tests that start several workers in one process do not.
    """
    stop = stop or _stop_on_signals()
    async with AsyncExitStack() as stack:
        # First: a worker that must isolate commands and cannot refuses to start (exit 2).
        sandboxes = create_sandbox_provider(settings)
        stack.push_async_callback(sandboxes.aclose)
        await check_isolation(sandboxes)
        in_flight = InFlightRegistry()
        bridge = TemporalMetricsBridge()
        metrics = Metrics(in_flight=in_flight.count, temporal=bridge)
        tracer_provider = configure_tracing(settings.observability, set_global=_first_tracing())
        stack.callback(tracer_provider.shutdown)
        readiness = Readiness()
        # Every check exists before the health server answers, so /readyz cannot say ready
        # while the worker is still connecting.
        clients: list[Client] = []
        polling = readiness.flag("polling")
        readiness.add("temporal", lambda: _temporal_healthy(clients))
        health = HealthServer(
            settings.observability,
            readiness=readiness,
            in_flight=in_flight,
            metrics=metrics,
            info={"task_queue": settings.temporal.task_queue},
        )
        await stack.enter_async_context(health)

        orchestrator = GrpcOrchestrator.from_settings(settings)
        stack.push_async_callback(orchestrator.close)
        if await orchestrator.probe():
            log.info("orchestrator_reachable", endpoint=orchestrator.endpoint)
        else:
            log.warning("orchestrator_unreachable", endpoint=orchestrator.endpoint)
        readiness.add("orchestrator", lambda: orchestrator.probe(1.0))

        checkpointer = await stack.enter_async_context(open_checkpointer(settings))
        live = live_events_for(settings.redis)
        stack.push_async_callback(live.aclose)
        preparer = SpecPreparer(
            orchestrator,
            sandboxes,
            SkillInstaller(orchestrator, SkillCache(settings.data_dir / "skills-cache")),
            metrics=metrics,
            mcp_limits=McpLimits(
                start_timeout=settings.mcp.start_timeout_seconds,
                call_timeout=settings.mcp.call_timeout_seconds,
            ),
        )
        status_sink = MeteredStatusSink(orchestrator, metrics)
        executions = GraphtonExecutions(
            settings,
            orchestrator,
            GraphtonRuntime(settings, checkpointer),
            lambda execution_id: StatusPublisher(status_sink, execution_id, settings.status),
            live,
            attempt=temporal_attempt(),
            metrics=metrics,
            preparer=preparer,
            content=OffloadSupport(
                orchestrator.content_store(), settings.content, meter=metrics.content_upload
            ),
            run_control=orchestrator,
        )
        activities = RunnerActivities(
            orchestrator,
            executions,
            sandboxes,
            source=orchestrator,
            result_max_bytes=settings.content.result_max_bytes,
        )

        client = await connect_temporal(
            settings, runtime=bridge.runtime(), interceptors=[tracing_interceptor()]
        )
        log.info(
            "temporal_connected",
            address=settings.temporal.address,
            namespace=settings.temporal.namespace,
        )
        clients.append(client)
        worker = Worker(
            client,
            task_queue=settings.temporal.task_queue,
            activities=activities.all(),
            max_concurrent_activities=settings.temporal.max_concurrency,
            graceful_shutdown_timeout=timedelta(
                seconds=settings.temporal.graceful_shutdown_seconds
            ),
            interceptors=[InFlightInterceptor(in_flight, metrics)],
            # The SDK sends at most one heartbeat per 80 % of the heartbeat timeout (24 s at the
            # orchestrator's 30 s) unless capped: a cancel or pause is only seen on a heartbeat.
            max_heartbeat_throttle_interval=timedelta(
                seconds=settings.temporal.heartbeat_throttle_seconds
            ),
            default_heartbeat_throttle_interval=timedelta(
                seconds=settings.temporal.heartbeat_throttle_seconds
            ),
            # Explicit: the SDK's default build id hashes every loaded module, seconds of CPU.
            build_id=f"agent-runner-{_version()}",
        )
        if freeze_heap:
            log.info("heap_settled", frozen_objects=settle_heap())
        run_task = asyncio.create_task(worker.run(), name="temporal-worker")
        polling.set()
        log.info(
            "worker_started",
            task_queue=settings.temporal.task_queue,
            max_concurrency=settings.temporal.max_concurrency,
            provider=settings.provider.value,
            checkpointer=settings.checkpointer.kind.value,
            live_events=settings.redis.host is not None,
        )
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if stop_task in done:
            readiness.mark_draining()
            log.info(
                "worker_draining",
                in_flight=in_flight.count(),
                graceful_seconds=settings.temporal.graceful_shutdown_seconds,
            )
            await worker.shutdown()
        stop_task.cancel()
        await run_task
        log.info("worker_stopped")


async def _temporal_healthy(clients: list[Client]) -> bool:
    return bool(clients) and await clients[0].service_client.check_health()


def _version() -> str:
    try:
        return importlib.metadata.version("agent-runner")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


_tracing_installed = False


def _first_tracing() -> bool:
    """OpenTelemetry takes one global provider per process; tests start several workers."""
    global _tracing_installed  # noqa: PLW0603 - process-wide fact, set once
    first = not _tracing_installed
    _tracing_installed = True
    return first


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"agent-runner: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    configure(level=settings.log_level, fmt=settings.log_format, secrets=secret_values(settings))
    try:
        with suppress(KeyboardInterrupt):
            asyncio.run(run(settings, freeze_heap=True))
    except ConfigurationError as err:
        # What the environment cannot provide (isolation required but impossible): a clear
        # line and the settings error's exit code, not a traceback.
        print(f"agent-runner: {err}", file=sys.stderr)
        raise SystemExit(2) from None
