"""Benchmark 4: executions per second end to end, through the stub, Temporal and the workers.

The stub (a subprocess on the devstack's Temporal and MongoDB-wire servers) and one, then two,
worker processes (`main.py`, as deployed: scripted model, SQLite checkpointer, INFO logs, default
concurrency) on one runner queue. A burst of short executions (the scripted `quick` script: one
streamed answer) is created through the stub's gRPC API at once; an execution is done when its
invoke workflow has completed (the stub has stored the final status). Latency is creation to
completion, so under a burst it includes the time an execution waited in the queue; the idle
latency (one execution at a time, before the burst) is the floor. Everything shares two cores
here, so the second worker adds a process, not a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from temporalio.client import Client, WorkflowFailureError

from bench import infra
from bench.results import Result, Table, Target
from bench.stats import fmt_bytes, fmt_ms, percentile
from stigmer_cli.client import StigmerClient
from stigmer_stub.workflow import workflow_id

NAME = "throughput"
TITLE = "Throughput end to end"
EXECUTIONS = 60
QUICK_EXECUTIONS = 12
IDLE_RUNS = 3
WORKER_COUNTS = (1, 2)
MESSAGE = "Say hello and stop."


async def one_execution(
    client: StigmerClient, temporal: Client, agent_id: str
) -> tuple[float, float, bool, str]:
    began = time.perf_counter()
    execution = await client.create_execution(MESSAGE, agent_id=agent_id)
    execution_id = execution.metadata.id
    handle = temporal.get_workflow_handle(workflow_id(execution_id))
    try:
        await handle.result()
        ok = True
    except WorkflowFailureError:
        ok = False
    return began, time.perf_counter(), ok, execution_id


async def _sample_rss(pids: Sequence[int], peaks: dict[int, int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for pid in pids:
            peaks[pid] = max(peaks.get(pid, 0), infra.rss_bytes(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def burst(
    client: StigmerClient,
    temporal: Client,
    agent_id: str,
    count: int,
    workers: Sequence[infra.Child],
    server_pids: Sequence[int],
) -> dict[str, Any]:
    worker_pids = [w.pid for w in workers]
    cpu_before = {pid: infra.cpu_seconds(pid) for pid in (*worker_pids, *server_pids)}
    peaks: dict[int, int] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(worker_pids, peaks, stop))
    try:
        outcomes = await asyncio.gather(
            *(one_execution(client, temporal, agent_id) for _ in range(count))
        )
    finally:
        stop.set()
        await sampler
    first = min(o[0] for o in outcomes)
    last = max(o[1] for o in outcomes)
    latencies = [(o[1] - o[0]) * 1000 for o in outcomes]
    stored = await asyncio.gather(*(client.get_execution(o[3]) for o in outcomes))
    completed = sum(1 for s in stored if s.status.phase == enum_pb2.EXECUTION_COMPLETED)
    cpu = {pid: infra.cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    return {
        "executions": count,
        "workflows_failed": sum(1 for o in outcomes if not o[2]),
        "completed": completed,
        "seconds": last - first,
        "per_s": count / (last - first),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies),
        },
        "worker_cpu_s": sum(cpu[pid] for pid in worker_pids),
        "server_cpu_s": sum(cpu[pid] for pid in server_pids),
        "worker_rss_peak_bytes": [peaks.get(pid, 0) for pid in worker_pids],
    }


async def idle_latency(client: StigmerClient, temporal: Client, agent_id: str) -> list[float]:
    out = []
    for _ in range(IDLE_RUNS):
        began, ended, _ok, _id = await one_execution(client, temporal, agent_id)
        out.append((ended - began) * 1000)
    return out


async def _run_all(count: int) -> dict[str, Any]:
    endpoints = infra.stack()
    runs: dict[str, Any] = {}
    workers: list[infra.Child] = []
    async with infra.running_stub("throughput") as (stub, config, client):
        temporal = await Client.connect(
            endpoints.temporal_address, namespace=endpoints.temporal_namespace
        )
        agent = await client.create_agent(
            "bench-quick", instructions="You answer in one short message.\nscript: quick"
        )
        agent_id = agent.metadata.id
        server_pids = [stub.pid, *infra.stack_pids().values()]
        try:
            for n in WORKER_COUNTS:
                while len(workers) < n:
                    workers.append(await infra.start_worker(config, stub.address, len(workers)))
                # Warms every worker up (imports, first graph build) and measures the floor.
                idle = await idle_latency(client, temporal, agent_id)
                run = await burst(client, temporal, agent_id, count, workers, server_pids)
                run["idle_latency_ms"] = {"p50": percentile(idle, 50), "max": max(idle)}
                runs[f"{n}w"] = run
        finally:
            for worker in workers:
                worker.stop()
    return runs


def run(*, quick: bool = False) -> Result:
    count = QUICK_EXECUTIONS if quick else EXECUTIONS
    result = Result(
        name=NAME,
        title=TITLE,
        about=__doc__ or "",
        settings={"executions": count, "script": "quick", "workers": list(WORKER_COUNTS)},
    )
    runs = asyncio.run(_run_all(count))
    result.data["runs"] = runs
    rows = []
    for key, r in runs.items():
        rows.append(
            [
                key.removesuffix("w"),
                str(r["executions"]),
                f"{r['completed']} / {r['workflows_failed']}",
                f"{r['seconds']:.1f}",
                f"{r['per_s']:.2f}",
                fmt_ms(r["latency_ms"]["p50"]),
                fmt_ms(r["latency_ms"]["p95"]),
                fmt_ms(r["latency_ms"]["max"]),
                fmt_ms(r["idle_latency_ms"]["p50"]),
                f"{r['worker_cpu_s']:.1f} / {r['server_cpu_s']:.1f}",
                fmt_ms(r["worker_cpu_s"] * 1000 / r["executions"]),
                ", ".join(fmt_bytes(b) for b in r["worker_rss_peak_bytes"]),
            ]
        )
        result.metric(f"executions_per_s@{key}", r["per_s"], "executions/s", "higher")
        result.metric(f"latency_p95_ms@{key}", r["latency_ms"]["p95"], "ms", "lower")
        result.metric(f"idle_latency_ms@{key}", r["idle_latency_ms"]["p50"], "ms", "lower")
        cpu_ms = r["worker_cpu_s"] * 1000 / r["executions"]
        result.metric(f"worker_cpu_ms_per_execution@{key}", cpu_ms, "ms", "lower")
    result.tables.append(
        Table(
            title=f"A burst of {count} `quick` executions",
            columns=[
                "workers",
                "executions",
                "completed / failed",
                "burst s",
                "executions/s",
                "latency p50 ms",
                "latency p95 ms",
                "latency max ms",
                "idle latency p50 ms",
                "CPU s workers / servers",
                "worker CPU ms per execution",
                "worker RSS peak",
            ],
            rows=rows,
            note="Servers: the stub, Temporal and the MongoDB-wire server.",
        )
    )
    all_done = all(r["completed"] == r["executions"] for r in runs.values())
    result.targets.append(
        Target(
            goal="every execution completes (reported, no throughput target)",
            measured=", ".join(f"{k}: {r['completed']}/{r['executions']}" for k, r in runs.items()),
            met=all_done,
        )
    )
    return result
