"""Benchmark 5: how fast a cancel lands, under the Go orchestrator's activity options.

The worker runs in this process (as composed by `worker.app`) against the tests' fake
orchestrator (a real gRPC server) and the devstack's Temporal. A workflow calls ExecuteGraphton
with the Go orchestrator's options (one attempt, 30 s heartbeat timeout, start-to-close 10 min);
the agent plays the scripted `long` script, one shell step after another. Once a few steps are
done the workflow is cancelled; latency is from the cancel request to the CANCELLED status
landing at the orchestrator (the runner's own push), and "steps after cancel" counts the tool
calls that completed after the request. The same is measured with the SDK's default heartbeat
throttling (what the worker did before `WORKER_HEARTBEAT_THROTTLE_SECONDS`) for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta
from typing import Any, TypeVar

from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench import infra
from bench.fake_orchestrator import seeded, session_id
from bench.results import Result, Table, Target
from bench.stats import fmt_ms, percentile
from tests.adapters.fake_orchestrator import start_fake_orchestrator
from worker import app
from worker.converter import DATA_CONVERTER
from worker.settings import load_settings

M = TypeVar("M", bound=Message)


def _msg(cls: type[M], **fields: Any) -> M:
    """A proto message from plain values (ProtoJSON rules), typed as the message."""
    return json_format.ParseDict(fields, cls())


NAME = "cancel"
TITLE = "Cancel latency"
ROUNDS = 8
QUICK_ROUNDS = 3
BEFORE_ROUNDS = 2
STEPS_BEFORE_CANCEL = 3
TARGET_SECONDS = 5.0
TOKEN_DELAY_MS = 5
LONG_TURNS = 400
INSTRUCTIONS = f"You work through a long list.\nscript: long:{LONG_TURNS}"
CONFIGS: dict[str, dict[str, str]] = {
    "now": {},
    # The SDK's defaults (max 60 s, default 30 s): it sends a heartbeat at most every 80 % of
    # the 30 s timeout, 24 s; and the worker's former 5 s beat.
    "SDK default throttling": {
        "WORKER_HEARTBEAT_THROTTLE_SECONDS": "60",
        "WORKER_HEARTBEAT_INTERVAL_SECONDS": "5",
    },
}


@workflow.defn(name="bench/cancel-latency")
class GoOptionsInvoke:
    """ExecuteGraphton with the Go orchestrator's options (contract §1)."""

    @workflow.run
    async def run(self, execution: execution_api.AgentExecution, queue: str) -> None:
        await workflow.execute_activity(
            "ExecuteGraphton",
            args=[execution, "thread-" + execution.metadata.id],
            task_queue=queue,
            result_type=execution_api.AgentExecutionStatus,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=30),
            schedule_to_start_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


def _completed(status: execution_api.AgentExecutionStatus) -> int:
    return sum(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in status.tool_calls)


async def _one(client: Client, fake: Any, queue: str, index: int) -> dict[str, float]:
    execution_id = f"aex-cancel-{uuid.uuid4().hex[:10]}"
    execution = _msg(
        execution_api.AgentExecution,
        metadata={"id": execution_id},
        spec={"session_id": session_id(index), "message": "Work through the list."},
    )
    handle = await client.start_workflow(
        GoOptionsInvoke.run,
        args=[execution, queue],
        id=f"bench/cancel/{execution_id}",
        task_queue=queue + "-workflows",
    )

    def stored() -> execution_api.AgentExecutionStatus | None:
        found = fake.executions.get(execution_id)
        return found.status if found is not None else None

    # The fake orchestrator is polled: it has no change notification to wait on.
    while True:
        status = stored()
        if status is not None and _completed(status) >= STEPS_BEFORE_CANCEL:
            break
        await asyncio.sleep(0.02)
    steps_at_cancel = _completed(status)
    began = time.perf_counter()
    await handle.cancel()
    while (status := stored()) is None or status.phase != enum_pb2.EXECUTION_CANCELLED:
        await asyncio.sleep(0.02)
        if time.perf_counter() - began > 90:
            raise RuntimeError(f"{execution_id} was not cancelled within 90 s")
    landed = time.perf_counter() - began
    steps_after = _completed(status) - steps_at_cancel
    with contextlib.suppress(Exception):
        await handle.result()
    return {"seconds": landed, "steps_after": float(steps_after)}


async def _config(name: str, extra: dict[str, str], rounds: int) -> list[dict[str, float]]:
    endpoints = infra.stack()
    fake = seeded(INSTRUCTIONS, rounds)
    server, port = await start_fake_orchestrator(fake)
    queue = "bench-cancel-" + uuid.uuid4().hex[:6]
    settings = load_settings(
        {
            "MODE": "local",
            "LOG_LEVEL": "WARNING",
            "TEMPORAL_SERVICE_ADDRESS": endpoints.temporal_address,
            "TEMPORAL_NAMESPACE": endpoints.temporal_namespace,
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": queue,
            "STIGMER_BACKEND_ENDPOINT": f"{infra.LOOPBACK}:{port}",
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(infra.scratch() / queue),
            "STIGMER_SCRIPTED_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
            # `long:<turns>` needs about 7 graph steps per turn.
            "STIGMER_AGENT_RECURSION_LIMIT": str(7 * LONG_TURNS + 20),
            "HEALTH_PORT": "0",
            "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "5",
            **extra,
        }
    )
    stop = asyncio.Event()
    worker_task = asyncio.create_task(app.run(settings, stop=stop))
    client = await Client.connect(
        endpoints.temporal_address,
        namespace=endpoints.temporal_namespace,
        data_converter=DATA_CONVERTER,
    )
    try:
        async with Worker(
            client,
            task_queue=queue + "-workflows",
            workflows=[GoOptionsInvoke],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            return [await _one(client, fake, queue, i) for i in range(rounds)]
    finally:
        stop.set()
        await asyncio.wait_for(worker_task, 60)
        await server.stop(None)


def run(*, quick: bool = False) -> Result:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    plan = {"now": rounds}
    if not quick:
        plan["SDK default throttling"] = BEFORE_ROUNDS
    result = Result(
        name=NAME,
        title=TITLE,
        about=__doc__ or "",
        settings={
            "rounds": plan,
            "script": f"long:{LONG_TURNS}",
            "token_delay_ms": TOKEN_DELAY_MS,
            "heartbeat_timeout_s": 30,
            "attempts": 1,
        },
    )
    runs = {name: asyncio.run(_config(name, CONFIGS[name], n)) for name, n in plan.items()}
    result.data["runs"] = runs
    rows = []
    for name, samples in runs.items():
        seconds = [s["seconds"] * 1000 for s in samples]
        after = [s["steps_after"] for s in samples]
        rows.append(
            [
                name,
                str(len(samples)),
                fmt_ms(percentile(seconds, 50)),
                fmt_ms(max(seconds)),
                f"{percentile(after, 50):.0f} / {max(after):.0f}",
            ]
        )
        key = "now" if name == "now" else "sdk_default"
        result.metric(f"cancel_p50_ms@{key}", percentile(seconds, 50), "ms", "lower")
        result.metric(f"cancel_max_ms@{key}", max(seconds), "ms", "lower")
    result.tables.append(
        Table(
            title="From the cancel request to CANCELLED at the orchestrator",
            columns=["heartbeats", "runs", "p50", "max", "tool calls after the cancel p50 / max"],
            rows=rows,
        )
    )
    worst = max(s["seconds"] for s in runs["now"])
    result.targets.append(
        Target(
            goal=f"CANCELLED within {TARGET_SECONDS:.0f} s of the request (30 s heartbeat "
            "timeout, 1 attempt)",
            measured=f"max {worst:.2f} s over {len(runs['now'])} runs",
            met=worst <= TARGET_SECONDS,
        )
    )
    return result
