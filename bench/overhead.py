"""Benchmark 3: what an ExecuteGraphton run costs beyond the agent's own run.

The same agent (the scripted `demo` script: todos, file tools, a shell command, a sub-agent
delegation, a final answer; 20 ms per streamed token, so the model's own time dominates as it does
with a real LLM) runs two ways, 1, 10 and 50 at a time on one worker process:

- *graph alone*: the worker's own `GraphtonRuntime` streams the run from a plan whose sandbox,
  prompt and tools were prepared beforehand, and the events are dropped. Only the stream is timed:
  the agent built and run exactly as the worker runs it, with no resolution, no preparation, no
  StatusBuilder, no status updates, no heartbeats;
- *ExecuteGraphton*: `GraphtonExecutions.run` composed by the worker's own composition root
  (`worker.app.compose_runner`: metered status sink, sandbox provider and spec preparation, live
  events as configured, heartbeats) in an activity context: resolve Session → AgentInstance →
  Agent over gRPC, prepare the session's sandbox, reduce every event, push status with the default
  policy, push the final status.

The orchestrator is the tests' fake (`tests/adapters/fake_orchestrator.py`), a real gRPC server in
its own process answering from memory. The stub would do as well, but on two cores its own cost
per `updateStatus` (see the pipeline benchmark) competes with the worker for CPU, and that is not
the runner's cost.

Each concurrency level runs in a fresh worker process: a warm-up run of each kind, a batch of
ExecuteGraphton runs for memory, then rounds of one ExecuteGraphton batch and one graph batch, the
order alternating from round to round (so load from elsewhere on a shared machine, or a drift over
the process's life, hits both alike). The overhead is the median over the rounds of (mean
ExecuteGraphton wall time / mean graph wall time) - 1; the table shows the spread of the rounds
too. Memory per concurrent execution is the worker's peak resident memory during the memory batch
over its resident memory before it, divided by the number of executions; that batch is not timed,
since sampling memory wakes the event loop every 20 ms. CPU is the worker process's CPU time per
run of each kind; their difference is the runner's own CPU per execution, which other load on a
shared machine does not inflate the way it inflates wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from temporalio.testing import ActivityEnvironment

from bench import infra
from bench.fake_orchestrator import session_id
from bench.fixtures import load_run
from bench.results import Result, Table, Target
from bench.stats import fmt_bytes, fmt_pct, mean
from worker.adapters.orchestrator import GrpcOrchestrator
from worker.agent import patches
from worker.app import Runner, compose_runner, settle_heap
from worker.domain.agent_events import AgentEvent, ModelTurnEnded, TokenDelta
from worker.domain.status_wire import StatusPayload
from worker.logs import configure
from worker.observability.metrics import Metrics
from worker.observability.tracing import configure_tracing
from worker.run.resolve import resolve
from worker.run.runtime import GraphtonRuntime
from worker.run.service import AgentRuntime, ExecutionPlan, GraphtonExecutions
from worker.sandbox import create_sandbox_provider
from worker.settings import Settings, load_settings

NAME = "overhead"
TITLE = "Overhead of an ExecuteGraphton run"
LEVELS = (1, 10, 50)
QUICK_LEVELS = (1, 10)
ROUNDS = {1: 3, 10: 12, 50: 1}
TOKEN_DELAY_MS = 20.0
SCRIPT = "demo"
INSTRUCTIONS = f"You are a careful engineer.\nscript: {SCRIPT}"
TARGET_PCT = 5.0
TARGET_LEVEL = 10
MESSAGE = "Write a short report on this workspace."
CHILD_SECONDS = 600.0

Job = Callable[[], Awaitable[float]]
"""Runs one execution (or graph) and returns the seconds it measured for itself."""


# -- the measuring process -----------------------------------------------------------------------


async def _rss_peak(stop: asyncio.Event) -> int:
    peak = infra.rss_bytes()
    while not stop.is_set():
        peak = max(peak, infra.rss_bytes())
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except TimeoutError:
            continue
    return max(peak, infra.rss_bytes())


async def _timed_batch(jobs: Sequence[Job]) -> tuple[list[float], float]:
    """Each job's own seconds, run all at once, and the process CPU seconds of the batch."""
    cpu = time.process_time()
    walls = list(await asyncio.gather(*(job() for job in jobs)))
    return walls, time.process_time() - cpu


@dataclass
class CountingSink:
    """Counts `updateStatus` calls on their way to the orchestrator."""

    inner: GrpcOrchestrator
    calls: int = 0

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        self.calls += 1
        await self.inner.update_status(execution_id, status)


class ReplayRuntime:
    """An `AgentRuntime` that plays a recorded run at the scripted model's pace: no graph."""

    def __init__(self, events: Sequence[AgentEvent], token_delay_s: float) -> None:
        self._events = events
        self._delay = token_delay_s

    async def events(self, plan: ExecutionPlan) -> AsyncIterator[AgentEvent]:
        for event in self._events:
            if isinstance(event, TokenDelta):
                await asyncio.sleep(self._delay)
            yield event


def demo_run() -> list[AgentEvent]:
    """The recorded `demo` run: the fixture's events up to the main agent's final answer."""
    events = load_run()
    for index, event in enumerate(events):
        if isinstance(event, ModelTurnEnded) and not event.tool_calls and not event.sub_agent_id:
            return events[: index + 1]
    return events


async def _compose(
    settings: Settings,
    orchestrator: GrpcOrchestrator,
    stack: AsyncExitStack,
    runtime: AgentRuntime | None = None,
    counter: CountingSink | None = None,
) -> Runner:
    """The worker's run service from its own composition root (`worker.app.compose_runner`),
    with the process-wide parts `worker.app.run` sets up around it (minus Temporal itself)."""
    patches.apply()
    sandboxes = create_sandbox_provider(settings)
    stack.push_async_callback(sandboxes.aclose)
    # As `worker.app.run`: a real tracer provider (spans built, none exported without OTLP).
    stack.callback(configure_tracing(settings.observability, set_global=False).shutdown)
    runner = await compose_runner(
        settings,
        stack,
        orchestrator=orchestrator,
        sandboxes=sandboxes,
        metrics=Metrics(),
        runtime=runtime,
        status_sink=counter,
    )
    settle_heap()  # as `worker.app.main` does once the worker is composed
    return runner


def _child_settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        {
            "MODE": "local",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "STIGMER_BACKEND_ENDPOINT": args.orchestrator,
            "STIGMER_AGENT_RUNNER_DATA_DIR": str(Path(args.data_dir)),
            "STIGMER_SCRIPTED_TOKEN_DELAY_MS": str(args.token_delay_ms),
            "HEALTH_PORT": "0",
        }
    )


Batch = Callable[[], Awaitable[tuple[list[float], float]]]


async def _memory_batch(jobs: Sequence[Job]) -> tuple[int, int]:
    """Resident memory before a batch and at its peak. A batch of its own, since the sampler's
    wake-ups would count against its time."""
    rss_before = infra.rss_bytes()
    stop = asyncio.Event()
    sampler = asyncio.create_task(_rss_peak(stop))
    try:
        await _timed_batch(jobs)
    finally:
        stop.set()
        peak = await sampler
    return rss_before, peak


async def _alternating_rounds(rounds: int, full_batch: Batch, graph_batch: Batch) -> list[Any]:
    """`rounds` of one batch of each kind. Which kind goes first alternates, so a drift over the
    process's life (a growing checkpoint database, a warming heap) does not favour either."""
    out: list[dict[str, Any]] = []
    for index in range(rounds):
        if index % 2 == 0:
            full = await full_batch()
            graph = await graph_batch()
        else:
            graph = await graph_batch()
            full = await full_batch()
        out.append(
            {"full_s": full[0], "full_cpu_s": full[1], "graph_s": graph[0], "graph_cpu_s": graph[1]}
        )
    return out


async def child(args: argparse.Namespace) -> dict[str, Any]:
    settings = _child_settings(args)
    configure(level="INFO", fmt="json")
    n = args.concurrency
    serial = itertools.count()
    phases: list[str] = []

    def new_execution() -> execution_api.AgentExecution:
        index = next(serial)
        execution = execution_api.AgentExecution()
        execution.metadata.id = f"aex-bench-{index}"
        execution.spec.session_id = session_id(index)
        execution.spec.message = MESSAGE
        return execution

    async with AsyncExitStack() as stack:
        orchestrator = GrpcOrchestrator.from_settings(settings)
        stack.push_async_callback(orchestrator.close)
        worker = await _compose(settings, orchestrator, stack)

        def full_job(executions: GraphtonExecutions | None = None) -> Job:
            execution = new_execution()
            run = (executions or worker.executions).run

            async def job() -> float:
                began = time.perf_counter()
                status = await ActivityEnvironment().run(
                    run, execution, f"thread-{execution.spec.session_id}"
                )
                phases.append(enum_pb2.ExecutionPhase.Name(status.phase))
                return time.perf_counter() - began

            return job

        async def graph_batch(count: int) -> tuple[list[float], float]:
            async with AsyncExitStack() as prepared_runs:
                jobs: list[Job] = []
                for _ in range(count):
                    execution = new_execution()
                    resolved = await resolve(orchestrator, execution)
                    prepared = await prepared_runs.enter_async_context(
                        worker.preparer.prepare(execution, resolved)
                    )
                    plan = ExecutionPlan(
                        execution_id=execution.metadata.id,
                        thread_id=f"thread-{execution.spec.session_id}",
                        message=MESSAGE,
                        agent=resolved.agent,
                        model_override="",
                        prepared=prepared,
                    )
                    jobs.append(_drain(worker.runtime, plan))
                return await _timed_batch(jobs)

        # Warm-up: imports, first graph build, first gRPC calls, the checkpoint database.
        await graph_batch(1)
        await _timed_batch([full_job()])
        rss_before, peak = await _memory_batch([full_job() for _ in range(n)])
        rounds = await _alternating_rounds(
            args.rounds,
            lambda: _timed_batch([full_job() for _ in range(n)]),
            lambda: graph_batch(n),
        )
        replayed = demo_run()
        counter = CountingSink(orchestrator)
        replay = ReplayRuntime(replayed, args.token_delay_ms / 1000)
        alone = await _compose(settings, orchestrator, stack, runtime=replay, counter=counter)
        walls, spent = await _timed_batch([full_job(alone.executions) for _ in range(n)])
    return {
        "concurrency": n,
        "phases": dict(collections.Counter(phases)),
        "runner_alone": {
            "events": len(replayed),
            "nominal_s": sum(isinstance(e, TokenDelta) for e in replayed)
            * args.token_delay_ms
            / 1000,
            "wall_s": mean(walls),
            "cpu_s": spent / n,
            "status_updates": counter.calls / n,
        },
        "rounds": rounds,
        "rss_before_bytes": rss_before,
        "rss_peak_bytes": peak,
    }


def summarize(outcome: dict[str, Any]) -> dict[str, Any]:
    """Per-kind means, the median of the per-round wall ratios and their spread."""
    rounds = outcome["rounds"]
    full = [t for r in rounds for t in r["full_s"]]
    graph = [t for r in rounds for t in r["graph_s"]]
    ratios = [mean(r["full_s"]) / mean(r["graph_s"]) for r in rounds]
    n = outcome["concurrency"]
    return {
        "runs": len(full),
        "full_s": mean(full),
        "graph_s": mean(graph),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "full_cpu_s": sum(r["full_cpu_s"] for r in rounds) / len(full),
        "graph_cpu_s": sum(r["graph_cpu_s"] for r in rounds) / len(graph),
        "memory_per_execution_bytes": (outcome["rss_peak_bytes"] - outcome["rss_before_bytes"]) / n,
        "rss_peak_bytes": outcome["rss_peak_bytes"],
    }


def _drain(runtime: GraphtonRuntime, plan: ExecutionPlan) -> Job:
    async def job() -> float:
        began = time.perf_counter()
        async for _ in runtime.events(plan):
            pass
        return time.perf_counter() - began

    return job


def child_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead")
    parser.add_argument("--orchestrator", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--token-delay-ms", type=float, default=TOKEN_DELAY_MS)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    outcome: dict[str, Any] = asyncio.run(child(args))
    Path(args.out).write_text(json.dumps(outcome))


# -- the benchmark -------------------------------------------------------------------------------


def runs_needed(n: int, rounds: int) -> int:
    """Sessions one level uses: a warm-up of each kind, the memory batch, `rounds` batches of
    each kind, the replay."""
    return 2 + n + 2 * n * rounds + n


async def _level(orchestrator: infra.Child, n: int, rounds: int) -> dict[str, Any]:
    data_dir = infra.scratch() / f"overhead-{n}"
    out = data_dir / "result.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    args = ["-m", "bench.overhead", "--orchestrator", orchestrator.address]
    args += ["--concurrency", str(n), "--rounds", str(rounds)]
    args += ["--data-dir", str(data_dir), "--out", str(out)]
    process = infra.spawn(f"overhead-{n}", args, {})
    try:
        code = await asyncio.wait_for(asyncio.to_thread(process.process.wait), CHILD_SECONDS)
    finally:
        process.stop()
    if code != 0 or not out.exists():
        raise RuntimeError(f"the overhead run at {n} failed (exit {code}):\n{process.tail(30)}")
    outcome: dict[str, Any] = json.loads(out.read_text())
    if set(outcome["phases"]) != {"EXECUTION_COMPLETED"}:
        raise RuntimeError(f"not every run at {n} completed: {outcome['phases']}")
    return outcome


async def _run_all(levels: Sequence[int], quick: bool) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for n in levels:
        rounds = 1 if quick else ROUNDS.get(n, 1)
        # A fresh orchestrator per level: its sessions are numbered from 0 in every worker.
        async with infra.running_fake(INSTRUCTIONS, runs_needed(n, rounds)) as orchestrator:
            runs[str(n)] = await _level(orchestrator, n, rounds)
    return runs


def run(*, quick: bool = False) -> Result:
    levels = QUICK_LEVELS if quick else LEVELS
    result = Result(
        name=NAME,
        title=TITLE,
        about=__doc__ or "",
        settings={
            "orchestrator": "tests/adapters/fake_orchestrator.py",
            "script": SCRIPT,
            "token_delay_ms": TOKEN_DELAY_MS,
            "concurrency": list(levels),
            "cores": os.cpu_count(),
        },
    )
    runs = asyncio.run(_run_all(levels, quick))
    result.data["runs"] = runs
    rows = []
    summaries: dict[str, dict[str, Any]] = {}
    for key, outcome in runs.items():
        m = summaries[key] = outcome["summary"] = summarize(outcome)
        pct = (m["ratio"] - 1) * 100
        extra_cpu_ms = (m["full_cpu_s"] - m["graph_cpu_s"]) * 1000
        rows.append(
            [
                key,
                str(m["runs"]),
                f"{m['graph_s']:.2f}",
                f"{m['full_s']:.2f}",
                f"{m['ratio']:.3f} ({m['ratio_min']:.2f}-{m['ratio_max']:.2f})",
                fmt_pct(pct),
                f"{m['graph_cpu_s']:.2f} / {m['full_cpu_s']:.2f}",
                f"{extra_cpu_ms:+,.0f}",
                fmt_bytes(m["memory_per_execution_bytes"]),
                fmt_bytes(m["rss_peak_bytes"]),
            ]
        )
        result.metric(f"overhead_pct@{key}", pct, "%", "lower")
        result.metric(f"runner_cpu_ms@{key}", extra_cpu_ms, "ms", "lower")
        result.metric(f"memory_per_execution@{key}", m["memory_per_execution_bytes"], "B", "lower")
        result.metric(f"execution_s@{key}", m["full_s"], "s", "lower")
    result.tables.append(
        Table(
            title="Wall time per run, graph alone vs ExecuteGraphton",
            columns=[
                "concurrent",
                "runs of each",
                "graph alone s",
                "ExecuteGraphton s",
                "ratio: median of rounds (min-max)",
                "overhead",
                "CPU s per run graph / ExecuteGraphton",
                "runner CPU ms per execution",
                "memory per execution",
                "worker peak RSS",
            ],
            rows=rows,
        )
    )
    alone_rows = []
    for key, outcome in runs.items():
        alone = outcome["runner_alone"]
        alone_rows.append(
            [
                key,
                str(alone["events"]),
                f"{alone['status_updates']:.0f}",
                f"{alone['cpu_s'] * 1000:,.0f}",
                f"{alone['cpu_s'] * 1e6 / alone['events']:,.0f}",
                f"{alone['wall_s']:.2f} / {alone['nominal_s']:.2f}",
            ]
        )
        result.metric(f"runner_alone_cpu_ms@{key}", alone["cpu_s"] * 1000, "ms", "lower")
    result.tables.append(
        Table(
            title="The runner alone: the recorded demo run replayed through the same composition",
            columns=[
                "concurrent",
                "events per run",
                "updateStatus per run",
                "CPU ms per execution",
                "CPU µs per event",
                "wall s / model time s",
            ],
            rows=alone_rows,
            note="No graph: the recorded events are played at the scripted model's pace, so all "
            "CPU here is the runner's (resolution, preparation, StatusBuilder, publisher, gRPC, "
            "logs, metrics, heartbeats).",
        )
    )
    target = summaries.get(str(TARGET_LEVEL))
    if target is not None:
        pct = (target["ratio"] - 1) * 100
        extra_cpu = target["full_cpu_s"] - target["graph_cpu_s"]
        cpu_pct = extra_cpu / target["graph_cpu_s"] * 100
        result.targets.append(
            Target(
                goal=f"overhead ≤ {TARGET_PCT:.0f}% at {TARGET_LEVEL} concurrent (wall time)",
                measured=f"{fmt_pct(pct)} wall (rounds {fmt_pct((target['ratio_min'] - 1) * 100)}"
                f" to {fmt_pct((target['ratio_max'] - 1) * 100)}); runner CPU "
                f"{fmt_pct(cpu_pct)} of the graph's own",
                met=pct <= TARGET_PCT,
            )
        )
        alone = runs[str(TARGET_LEVEL)]["runner_alone"]
        gap_s = target["full_s"] - target["graph_s"]
        result.findings.append(
            f"At {TARGET_LEVEL} concurrent an ExecuteGraphton run took {gap_s:.2f} s longer than "
            f"the graph alone but used only {extra_cpu * 1000:,.0f} ms more CPU "
            f"({fmt_pct(cpu_pct)} of the graph's {target['graph_cpu_s'] * 1000:,.0f} ms); the "
            f"runner alone costs {alone['cpu_s'] * 1000:,.0f} ms of CPU for "
            f"{alone['status_updates']:.0f} status updates per run. The rest of the gap is time "
            "the worker waited rather than computed, with its event loop already saturated by the "
            "graph runs. Round ratios ranged from "
            f"{target['ratio_min']:.2f} to {target['ratio_max']:.2f} on this shared machine."
        )
    return result


if __name__ == "__main__":
    child_main(sys.argv[1:])
