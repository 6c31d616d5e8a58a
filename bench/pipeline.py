"""Benchmark 2: the status pipeline against the real stub and MongoDB-wire server.

The recorded run (1k, 10k and 100k events, as in the builder benchmark) is replayed at a steady
pace through StatusBuilder → StatusPublisher (default update policy) → GrpcOrchestrator →
the stub (a subprocess, storing in the devstack's MongoDB-wire server), into an execution created
through the stub. The same stream is then replayed into a second execution with the naive policy
upstream used: the full status every 10 events, awaited in the agent loop.

Delay: each event is stamped when the builder has applied it; each `updateStatus` carries every
event applied before its snapshot was built, and when the stub acknowledges the call, the events
it carries for the first time get their delay (ack time - applied time). The final update counts.
"In flight" is the most `updateStatus` calls open at once. Agent lag is how late the replay loop
applied events against its schedule: what the pipeline took from the agent.

Pace: 5 ms per streamed token (200 tokens/s, a fast model) and 25 ms per tool call, realistic for
1k and 10k events. 100k events at that pace would take ten minutes, so that stream is replayed ten
times faster, and the naive policy, which would spend hours sending multi-megabyte statuses, is
stopped after a time budget (its totals are then projected and marked so).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io

from bench import infra
from bench.builder import new_builder
from bench.fixtures import USER_MESSAGE, load_run, scaled
from bench.results import Result, Table, Target
from bench.stats import fmt_bytes, fmt_int, fmt_ms, percentile, size_label
from bench.wire_meter import WireMeter, metering
from worker.adapters.orchestrator import GrpcOrchestrator
from worker.domain.agent_events import AgentEvent, TokenDelta, ToolEnded
from worker.domain.fencing import RunAttempt, attempt_bound
from worker.domain.status_builder import StatusBuilder
from worker.domain.status_delta import StatusParts, status_digest
from worker.domain.status_wire import StatusPayload
from worker.ports import StatusSink
from worker.run.status_publisher import StatusPublisher
from worker.settings import BackendSettings, StatusSettings

NAME = "pipeline"
TITLE = "Status pipeline"
SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000,)
TARGET_P95_MS = 300.0
DELTA_P95_MS = 150.0
"""Incremental updates' target (issue 18), at 10k events and more."""
NAIVE_EVERY = 10
NAIVE_BUDGET_SECONDS = 30.0
"""The naive policy stops after this long at 100k events; its totals are projected."""

Policy = Literal["default", "deltas", "whole", "naive"]


def policies() -> tuple[Policy, ...]:
    """The default policy as configured, the same policy with status deltas the other way
    (`STIGMER_STATUS_DELTAS`), and the naive one."""
    other: Policy = "whole" if StatusSettings().deltas else "deltas"
    return ("default", other, "naive")


def uses_deltas(policy: Policy) -> bool:
    return policy == "deltas" or (policy == "default" and StatusSettings().deltas)


@dataclass(frozen=True)
class Pace:
    token_ms: float
    tool_ms: float

    def delay(self, event: AgentEvent) -> float:
        """Seconds between the previous event and this one."""
        if isinstance(event, TokenDelta):
            return self.token_ms / 1000
        if isinstance(event, ToolEnded):
            return self.tool_ms / 1000
        return 0.0

    def nominal(self, events: Sequence[AgentEvent]) -> float:
        return sum(self.delay(e) for e in events)

    @property
    def label(self) -> str:
        return f"{self.token_ms:g} ms/token, {self.tool_ms:g} ms/tool"


REALISTIC = Pace(token_ms=5.0, tool_ms=25.0)
COMPRESSED = Pace(token_ms=0.5, tool_ms=2.5)


def pace_for(size: int) -> Pace:
    return REALISTIC if size <= 10_000 else COMPRESSED


@dataclass
class Tracker:
    """Wraps the orchestrator: stamps events, counts calls and bytes, measures delays."""

    inner: StatusSink
    builder: StatusBuilder
    applied_at: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    covered: int = 0
    calls: int = 0
    failures: int = 0
    bytes_sent: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    parts: bool = False  # snapshots as `StatusParts`, so updates may go as deltas
    meter: WireMeter | None = None
    written: list[int] = field(default_factory=list)  # bytes into MongoDB after each call
    stub_pid: int | None = None
    stub_cpu: list[float] = field(default_factory=list)  # the stub's CPU s after each call
    _marks: dict[int, int] = field(default_factory=dict)
    _last_mark: int = 0

    def snapshot(self) -> StatusPayload | StatusParts:
        """The builder's status as the worker sends it (encoded, or as parts for deltas),
        remembering how many events it carries."""
        mark = len(self.applied_at)
        self._last_mark = mark
        if self.parts:
            return self.builder.parts()
        status = self.builder.encoded()
        self._marks[id(status)] = mark
        return status

    async def update_status_delta(
        self, execution_id: str, delta: bytes
    ) -> execution_io.StatusDeltaAck | None:
        assert isinstance(self.inner, GrpcOrchestrator)
        mark = self._last_mark
        began = self._began()
        try:
            ack = await self.inner.update_status_delta(execution_id, delta)
        except BaseException:
            self.failures += 1
            raise
        finally:
            self.in_flight -= 1
        self._landed(began, len(delta), mark if ack is not None and not ack.resync else None)
        return ack

    def _began(self) -> float:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return time.perf_counter()

    def _landed(self, began: float, size: int, mark: int | None) -> None:
        """A call returned: its time and bytes; the events it stored (`mark`: how many were
        applied when its snapshot was built; None when it stored nothing) get their delay."""
        acked = time.perf_counter()
        self.calls += 1
        self.latencies.append(acked - began)
        self.bytes_sent += size
        if self.meter is not None:
            self.written.append(self.meter.bytes_in)
        if self.stub_pid is not None:
            self.stub_cpu.append(infra.cpu_seconds(self.stub_pid))
        if mark is not None:
            self.delays.extend(acked - self.applied_at[i] for i in range(self.covered, mark))
            self.covered = max(self.covered, mark)

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        fallback = self._last_mark if self.parts else len(self.applied_at)
        mark = self._marks.pop(id(status), fallback)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        began = time.perf_counter()
        try:
            await self.inner.update_status(execution_id, status)
        except BaseException:
            self.failures += 1
            raise
        finally:
            self.in_flight -= 1
        self._landed(began, status.ByteSize(), mark)


@dataclass
class Replay:
    events: int
    nominal_s: float
    wall_s: float
    lags: list[float]
    complete: bool


async def replay(
    events: Sequence[AgentEvent],
    pace: Pace,
    tracker: Tracker,
    *,
    policy: Policy,
    execution_id: str,
    publisher: StatusPublisher | None,
    budget_s: float | None,
) -> Replay:
    """Apply `events` on schedule, pushing status the way `policy` says."""
    builder = tracker.builder
    lags: list[float] = []
    began = time.perf_counter()
    due = began
    stop_at = None if budget_s is None else began + budget_s
    done = 0
    for index, event in enumerate(events):
        due += pace.delay(event)
        wait = due - time.perf_counter()
        # Yield to the loop on every event, as the agent's stream does between items.
        await asyncio.sleep(max(0.0, wait))
        lags.append(max(0.0, time.perf_counter() - due))
        applied = builder.apply(event)
        tracker.applied_at.append(time.perf_counter())
        done = index + 1
        if policy != "naive":
            assert publisher is not None
            if applied.changed:
                publisher.offer(tracker.snapshot, significant=applied.significant)
        elif done % NAIVE_EVERY == 0:
            whole = tracker.snapshot()
            assert not isinstance(whole, StatusParts)  # the naive policy sends whole statuses
            await tracker.update_status(execution_id, whole)
        if stop_at is not None and time.perf_counter() > stop_at:
            break
    builder.complete()
    if policy != "naive":
        assert publisher is not None
        await publisher.finish(tracker.snapshot)
    else:
        final = tracker.snapshot()
        assert not isinstance(final, StatusParts)
        await tracker.update_status(execution_id, final)
    return Replay(
        events=done,
        nominal_s=pace.nominal(events[:done]),
        wall_s=time.perf_counter() - began,
        lags=lags,
        complete=done == len(events),
    )


def _cpu(pids: Sequence[int]) -> float:
    return sum(infra.cpu_seconds(pid) for pid in pids)


async def one_run(
    events: Sequence[AgentEvent],
    *,
    policy: Policy,
    orchestrator: GrpcOrchestrator,
    execution_id: str,
    server_pids: Sequence[int],
    settings: StatusSettings,
    budget_s: float | None,
    meter: WireMeter | None = None,
    stub_pid: int | None = None,
) -> dict[str, Any]:
    builder = new_builder()
    deltas = uses_deltas(policy)
    tracker = Tracker(
        inner=orchestrator, builder=builder, parts=deltas, meter=meter, stub_pid=stub_pid
    )
    pace = pace_for(len(events))
    publisher: StatusPublisher | None = None
    cpu_before = time.process_time()
    server_before = _cpu(server_pids)
    written_before = meter.bytes_in if meter is not None else 0
    stub_before = infra.cpu_seconds(stub_pid) if stub_pid is not None else 0.0
    # Deltas are fenced by attempt (the stub applies them in order within one): the run is
    # one attempt, as a run of the worker is; the publisher's task inherits it.
    attempt = RunAttempt(f"bench-{uuid.uuid4().hex[:8]}", 1) if deltas else None
    bound = attempt_bound(attempt)
    bound.__enter__()
    if policy != "naive":
        publisher = StatusPublisher(
            tracker, execution_id, settings.model_copy(update={"deltas": deltas})
        )
        publisher.start()
        publisher.offer(tracker.snapshot, significant=True)
    else:
        first = tracker.snapshot()
        assert not isinstance(first, StatusParts)
        await tracker.update_status(execution_id, first)
    try:
        outcome = await replay(
            events,
            pace,
            tracker,
            policy=policy,
            execution_id=execution_id,
            publisher=publisher,
            budget_s=budget_s,
        )
    finally:
        if publisher is not None:
            await publisher.aclose()
        bound.__exit__(None, None, None)
    ms = [d * 1000 for d in tracker.delays]
    latency = [d * 1000 for d in tracker.latencies]
    lags = [d * 1000 for d in outcome.lags]
    return {
        "policy": policy,
        "events": len(events),
        "replayed": outcome.events,
        "complete": outcome.complete,
        "pace": pace.label,
        "calls": tracker.calls,
        "failures": tracker.failures,
        "bytes": tracker.bytes_sent,
        "max_in_flight": tracker.max_in_flight,
        "delay_ms": {
            "p50": percentile(ms, 50),
            "p95": percentile(ms, 95),
            "max": max(ms, default=float("nan")),
        },
        "uncovered_events": outcome.events - tracker.covered,
        "call_ms": {"p50": percentile(latency, 50), "p95": percentile(latency, 95)},
        "lag_ms": {"p95": percentile(lags, 95), "max": max(lags, default=0.0)},
        "nominal_s": outcome.nominal_s,
        "wall_s": outcome.wall_s,
        "runner_cpu_s": time.process_time() - cpu_before,
        "orchestrator_cpu_s": _cpu(server_pids) - server_before,
        "final_status": _final_size(builder),
        "final_digest": status_digest(builder.snapshot()),
        "resyncs": publisher.stats.resyncs if publisher is not None else 0,
        "deltas_sent": publisher.stats.deltas_sent if publisher is not None else 0,
        "deltas": deltas,
        "mongo_bytes_per_update": _per_update(tracker.written, written_before),
        "stub_cpu_ms_per_update": {
            k: v * 1000 for k, v in _per_update(tracker.stub_cpu, stub_before).items()
        },
    }


def _per_update(totals: Sequence[float], before: float) -> dict[str, float]:
    """A running total (bytes the stub sent to MongoDB, the stub's CPU seconds) read after
    each update, as the mean per update over the first and the last tenth of the run's
    updates (flat when an update costs what it changes, not the transcript)."""
    if len(totals) < 20:
        return {}
    tenth = len(totals) // 10
    marks = [before, *totals]
    first = (marks[tenth] - marks[0]) / tenth
    last = (marks[-1] - marks[-1 - tenth]) / tenth
    return {"first_tenth": first, "last_tenth": last, "all": (marks[-1] - marks[0]) / len(totals)}


def _final_size(builder: StatusBuilder) -> dict[str, int]:
    status = builder.snapshot()
    return {"messages": len(status.messages), "bytes": status.ByteSize()}


def _project(run: dict[str, Any]) -> None:
    """Totals a naive run cut short would have reached (calls exact, bytes quadratic)."""
    if run["complete"]:
        return
    share = run["events"] / max(1, run["replayed"])
    run["projected"] = {
        "calls": run["events"] // NAIVE_EVERY + 2,
        # Each status grows linearly with the events in it, so the bytes sent grow with the
        # square of the events replayed.
        "bytes": run["bytes"] * share * share,
    }


async def _check_stored(
    client: Any, execution_id: str, expected_messages: int, digest: str
) -> dict[str, Any]:
    stored: execution_api.AgentExecution = await client.get_execution(execution_id)
    whole = len(stored.status.messages) == expected_messages
    return {
        "phase": enum_pb2.ExecutionPhase.Name(stored.status.phase),
        "messages": len(stored.status.messages),
        "matches_final": whole,
        # Field by field (a digest of the runner-written fields), when the reply holds the
        # whole status (above the reply limit `get` answers a window).
        "equal_final": status_digest(stored.status) == digest if whole else None,
    }


async def _run_all(sizes: Sequence[int]) -> dict[str, dict[str, Any]]:
    base = load_run()
    settings = StatusSettings()
    runs: dict[str, dict[str, Any]] = {}
    async with (
        metering(infra.stack().mongodb_uri) as (meter, metered),
        infra.running_stub("pipeline", mongodb_uri=metered) as (stub, _config, client),
    ):
        agent = await client.create_agent(
            "bench-pipeline", instructions="Replayed by the pipeline benchmark."
        )
        backend = BackendSettings.model_validate({"STIGMER_BACKEND_ENDPOINT": stub.address})
        orchestrator = GrpcOrchestrator(backend, tls=False)
        pids = [stub.pid, *infra.stack_pids().values()]
        try:
            for size in sizes:
                events = scaled(base, size)
                for policy in policies():
                    execution = await client.create_execution(
                        USER_MESSAGE, agent_id=agent.metadata.id
                    )
                    execution_id = execution.metadata.id
                    budget = NAIVE_BUDGET_SECONDS if policy == "naive" and size > 10_000 else None
                    run = await one_run(
                        events,
                        policy=policy,
                        orchestrator=orchestrator,
                        execution_id=execution_id,
                        server_pids=pids,
                        settings=settings,
                        budget_s=budget,
                        meter=meter,
                        stub_pid=stub.pid,
                    )
                    _project(run)
                    run["stored"] = await _check_stored(
                        client, execution_id, run["final_status"]["messages"], run["final_digest"]
                    )
                    runs[f"{size_label(size)}/{policy}"] = run
        finally:
            with contextlib.suppress(Exception):
                await orchestrator.close()
    return runs


def _row(label: str, run: dict[str, Any]) -> list[str]:
    projected = run.get("projected")
    calls = fmt_int(run["calls"])
    sent = fmt_bytes(run["bytes"])
    if projected:
        calls += f" (stopped; ~{fmt_int(projected['calls'])} projected)"
        sent += f" (~{fmt_bytes(projected['bytes'])} projected)"
    replayed = "" if run["complete"] else f" ({fmt_int(run['replayed'])} replayed)"
    return [
        label + replayed,
        run["policy"],
        run["pace"],
        calls,
        sent,
        fmt_ms(run["delay_ms"]["p50"]),
        fmt_ms(run["delay_ms"]["p95"]),
        fmt_ms(run["delay_ms"]["max"]),
        str(run["max_in_flight"]),
        f"{fmt_ms(run['call_ms']['p50'])} / {fmt_ms(run['call_ms']['p95'])}",
        f"{run['wall_s']:.1f} / {run['nominal_s']:.1f}",
        f"{fmt_ms(run['lag_ms']['p95'])} / {fmt_ms(run['lag_ms']['max'])}",
        f"{run['runner_cpu_s']:.1f} / {run['orchestrator_cpu_s']:.1f}",
        fmt_ms(run["orchestrator_cpu_s"] * 1000 / max(1, run["calls"])),
        fmt_bytes(run["final_status"]["bytes"]),
        "yes" if run["stored"]["matches_final"] else "NO",
    ]


def _delta_row(label: str, run: dict[str, Any]) -> list[str]:
    written = run["mongo_bytes_per_update"]
    per_update = (
        " / ".join(fmt_bytes(written[k]) for k in ("first_tenth", "last_tenth", "all"))
        if written
        else "n/a"
    )
    cpu = run.get("stub_cpu_ms_per_update") or {}
    cpu_per_update = (
        " / ".join(f"{cpu[k]:.2f}" for k in ("first_tenth", "last_tenth", "all")) if cpu else "n/a"
    )
    equal = run["stored"]["equal_final"]
    return [
        label,
        run["policy"],
        f"{run['bytes'] / max(1, run['final_status']['bytes']):.1f}×",
        per_update,
        cpu_per_update,
        f"{fmt_int(run['deltas_sent'])} / {fmt_int(run['resyncs'])}",
        "windowed reply" if equal is None else ("yes" if equal else "NO"),
    ]


def run(*, quick: bool = False, sizes: Sequence[int] | None = None) -> Result:
    chosen = tuple(sizes) if sizes else (QUICK_SIZES if quick else SIZES)
    settings = StatusSettings()
    result = Result(
        name=NAME,
        title=TITLE,
        about=__doc__ or "",
        settings={
            "sizes": list(chosen),
            "events_per_update": settings.events_per_update,
            "interval_ms": settings.interval_ms,
            "naive_every": NAIVE_EVERY,
        },
    )
    runs = asyncio.run(_run_all(chosen))
    result.data["runs"] = runs
    rows = [_row(key.partition("/")[0], r) for key, r in runs.items()]
    result.tables.append(
        Table(
            title="updateStatus traffic and event-to-orchestrator delay",
            columns=[
                "events",
                "policy",
                "pace",
                "updateStatus calls",
                "bytes sent",
                "delay p50 ms",
                "delay p95 ms",
                "delay max ms",
                "max in flight",
                "call ms p50 / p95",
                "replay s wall / nominal",
                "agent lag ms p95 / max",
                "CPU s runner / orchestrator",
                "orchestrator CPU ms per call",
                "final status size",
                "stored = final",
            ],
            rows=rows,
            note="CPU: the replaying process (builder, publisher, gRPC client) and the stub plus "
            "the Temporal and MongoDB-wire servers, during the run.",
        )
    )
    result.tables.append(
        Table(
            title="Status deltas: bytes sent and MongoDB writes per update",
            columns=[
                "events",
                "policy",
                "bytes sent / final status",
                "MongoDB bytes per update: first tenth / last tenth / all",
                "stub CPU ms per update: first tenth / last tenth / all",
                "deltas / resyncs",
                "stored = final, field by field",
            ],
            rows=[_delta_row(key.partition("/")[0], r) for key, r in runs.items()],
            note="MongoDB bytes: what the stub sent to the database (a relay counts them), "
            "per update, early and late in the run. Stub CPU: the stub process's user + system "
            "time (/proc, 10 ms ticks) read after each update, per update over the same tenths.",
        )
    )
    for key, r in runs.items():
        result.metric(f"calls@{key}", r["calls"], "calls", "lower")
        result.metric(f"bytes@{key}", r["bytes"], "B", "lower")
        result.metric(f"delay_p95_ms@{key}", r["delay_ms"]["p95"], "ms", "lower")
        result.metric(f"lag_max_ms@{key}", r["lag_ms"]["max"], "ms", "lower")
    _judge(result, runs, chosen)
    return result


def _judge(result: Result, runs: dict[str, dict[str, Any]], sizes: Sequence[int]) -> None:
    for size in sizes:
        label = size_label(size)
        default = runs[f"{label}/default"]
        naive = runs[f"{label}/naive"]
        p95 = default["delay_ms"]["p95"]
        naive_p95 = f"naive {fmt_ms(naive['delay_ms']['p95'])} ms"
        if not naive["complete"]:
            naive_p95 += f" over the {fmt_int(naive['replayed'])} events it got through"
        result.targets.append(
            Target(
                goal=f"p95 delay ≤ {TARGET_P95_MS:.0f} ms with the default policy, {label} events",
                measured=f"{fmt_ms(p95)} ms ({naive_p95})",
                met=p95 <= TARGET_P95_MS,
            )
        )
        deltas = next(r for k, r in runs.items() if k.startswith(f"{label}/") and r["deltas"])
        ratio = deltas["bytes"] / max(1, deltas["final_status"]["bytes"])
        result.targets.append(
            Target(
                goal=f"deltas: bytes sent ≤ 3× the final status, {label} events",
                measured=f"{ratio:.1f}× ({fmt_bytes(deltas['bytes'])} for "
                f"{fmt_bytes(deltas['final_status']['bytes'])})",
                met=ratio <= 3,
            )
        )
        written = deltas["mongo_bytes_per_update"]
        if written:
            result.targets.append(
                Target(
                    goal=f"deltas: MongoDB bytes per update flat (last tenth ≤ 2× first), {label}",
                    measured=f"{fmt_bytes(written['first_tenth'])} → "
                    f"{fmt_bytes(written['last_tenth'])}",
                    met=written["last_tenth"] <= 2 * written["first_tenth"],
                )
            )
        if size >= 10_000:
            result.targets.append(
                Target(
                    goal=f"deltas: p95 delay ≤ {DELTA_P95_MS:.0f} ms, {label} events",
                    measured=f"{fmt_ms(deltas['delay_ms']['p95'])} ms ({deltas['policy']})",
                    met=deltas["delay_ms"]["p95"] <= DELTA_P95_MS,
                )
            )
        cpu = deltas.get("stub_cpu_ms_per_update") or {}
        if cpu:
            result.targets.append(
                Target(
                    goal=f"deltas: stub CPU per update flat (last tenth ≤ 2× first), {label}",
                    measured=f"{cpu['first_tenth']:.2f} → {cpu['last_tenth']:.2f} ms",
                    met=cpu["last_tenth"] <= 2 * cpu["first_tenth"],
                )
            )
        naive_calls = naive.get("projected", {}).get("calls", naive["calls"])
        result.targets.append(
            Target(
                goal=f"at most one call in flight and no more calls than naive, {label} events",
                measured=f"{default['max_in_flight']} in flight; {fmt_int(default['calls'])} "
                f"calls vs naive {fmt_int(naive_calls)}",
                met=default["max_in_flight"] <= 1 and default["calls"] <= naive_calls,
            )
        )
