"""The stub's composition root: settings → logging → MongoDB → store → Temporal → gRPC + worker.

`running_stub` opens everything once and closes it in reverse order (the gRPC server first, so
no request arrives at a closed store); `main` adds signal handling for the console script.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from pymongo import AsyncMongoClient
from temporalio.worker import Worker

from stigmer_stub import logs, temporal
from stigmer_stub.activities import StubActivities
from stigmer_stub.console.gateway import loopback_target
from stigmer_stub.console.server import running_console
from stigmer_stub.content import ContentOps
from stigmer_stub.executions import ExecutionOps, Workflows
from stigmer_stub.resources import AgentOps, EnvironmentOps, SessionOps
from stigmer_stub.rpc.server import Operations, build_server
from stigmer_stub.runcontrol import RunControl, RunControlWorkflows
from stigmer_stub.settings import LimitsSettings, Settings, SettingsError, load_settings
from stigmer_stub.skills import SkillOps
from stigmer_stub.store.collection import Document
from stigmer_stub.store.database import Database
from stigmer_stub.workflow import CleanupSessionSandbox, InvokeAgentExecution

log = logs.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RunningStub:
    address: str  # host:port the gRPC server listens on
    port: int
    database: Database
    ops: Operations
    console_url: str | None = None  # the web console's URL; None when it is off


def build_operations(
    database: Database,
    workflows: Workflows,
    run_control: RunControlWorkflows | None = None,
    *,
    run_control_wait_seconds: float = 60.0,
    limits: LimitsSettings | None = None,
) -> Operations:
    limits = limits or LimitsSettings.model_validate({})
    agents = AgentOps(database)
    sessions = SessionOps(database, cleanup_sandbox=workflows.cleanup_sandbox)
    executions = ExecutionOps(
        database,
        workflows,
        agents,
        sessions,
        max_input_bytes=limits.max_execution_input_bytes,
        max_reply_bytes=limits.max_reply_bytes,
        status_deltas=limits.status_deltas,
    )
    return Operations(
        executions=executions,
        sessions=sessions,
        agent_instances=agents.instances,
        agents=agents,
        skills=SkillOps(database),
        environments=EnvironmentOps(database.environments),
        content=ContentOps(database, max_content_bytes=limits.max_content_bytes),
        run_control=(
            RunControl(executions, run_control, wait_seconds=run_control_wait_seconds)
            if run_control is not None
            else None
        ),
    )


@asynccontextmanager
async def running_stub(settings: Settings) -> AsyncIterator[RunningStub]:
    """A started stub; leaving the context stops it gracefully."""
    async with AsyncExitStack() as stack:
        timeout_ms = int(settings.mongo.timeout_seconds * 1000)
        mongo: AsyncMongoClient[Document] = AsyncMongoClient(
            settings.mongo.uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            # Bounds every operation, including each wait of a subscription's change stream
            # (which polls the server once a second).
            socketTimeoutMS=timeout_ms,
            appname="stigmer-stub",
        )
        stack.push_async_callback(mongo.close)
        secrets = settings.security.secret_box()
        if not secrets.enabled:
            log.warning(
                "secrets_stored_in_clear",
                reason="STIGMER_STUB_SECRETS_KEY is not set: secret runtime-env values are "
                "stored unencrypted in MongoDB",
            )
        database = Database(mongo[settings.mongo.database], secrets)
        await database.ensure_indexes()

        client = await temporal.connect(settings.temporal)
        workflows = temporal.TemporalWorkflows(client, settings.temporal, settings.workflow)
        ops = build_operations(
            database,
            workflows,
            workflows,
            run_control_wait_seconds=settings.temporal.cancel_wait_seconds,
            limits=settings.limits,
        )
        stub_activities = StubActivities(ops.executions)
        worker = Worker(
            client,
            task_queue=settings.temporal.workflow_task_queue,
            workflows=[InvokeAgentExecution, CleanupSessionSandbox],
            activities=[stub_activities.finalize, stub_activities.seconds_since_last_event],
            graceful_shutdown_timeout=timedelta(seconds=settings.grpc.shutdown_grace_seconds),
            # Explicit: the SDK's default build id hashes every loaded module, seconds of CPU.
            build_id="stigmer-stub",
        )
        await stack.enter_async_context(worker)

        keys = settings.security.keys()
        server = build_server(settings.grpc, ops, keys)
        await server.start()
        if not keys.enabled:
            log.warning(
                "stub_open_to_anyone",
                reason="STIGMER_STUB_API_KEYS is not set: every caller may call every RPC, "
                "including updateStatus, and reads secret values in clear",
            )
        stack.push_async_callback(server.stop, settings.grpc.shutdown_grace_seconds)
        address = f"{settings.grpc.host}:{server.port}"
        log.info(
            "stub_started",
            address=address,
            database=settings.mongo.database,
            temporal=settings.temporal.address,
            workflow_task_queue=settings.temporal.workflow_task_queue,
            runner_task_queue=settings.temporal.runner_task_queue,
            api_keys=[f"{c.name}:{c.role.value}" for c in keys.by_key.values()],
        )
        console_url = await stack.enter_async_context(
            running_console(
                settings.console,
                keys,
                loopback_target(settings.grpc.host, server.port),
                database,
                settings.temporal.namespace,
            )
        )
        yield RunningStub(address, server.port, database, ops, console_url)
        log.info("stub_stopping")
    log.info("stub_stopped")


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_stub(settings):
        await stop.wait()


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"stigmer-stub: {err}", file=sys.stderr)
        sys.exit(2)
    logs.configure(level=settings.log_level, fmt=settings.log_format)
    try:
        asyncio.run(serve(settings))
    except OSError:
        # A port in use or a server that cannot be reached: say which, without a traceback.
        log.exception("stub_failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
