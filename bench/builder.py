"""Benchmark 1: StatusBuilder throughput on the recorded run at 1k, 10k and 100k events.

The events are decoded before timing starts; what is timed is `StatusBuilder.apply` alone, the
reduction the worker does for every event of a run, with a redactor holding three secrets as in
production. Each stream is reduced several times with a fresh builder; the fastest pass counts.
The pass is timed per tenth of the stream, so the cost per event in the first and the last tenth
can be compared: it must not grow with the length of the run. Peak memory comes from a separate
pass under `tracemalloc` (which slows Python down, so it is never timed). The cost of one full
`snapshot()` at the end of the run, cold (every entry encoded) and warm (entries' encodings
cached, the proto parsed from them), is reported too: the encoding is what status updates pay
over the run, the proto what the run's end pays. Times are the thread's CPU time (the reduction
is single-threaded and CPU-bound), so other load on a shared machine does not count as its cost.

Status-side memory (`bench/memory.py`, a fresh process per size): what the runner holds for the
execution's status, the builder's state, its per-entry caches and the encoded update in flight,
then (the update sent) the final snapshot, by `tracemalloc` (Python's allocations only:
protobuf's upb backend allocates outside it) and by the growth of the resident set (everything),
against the size of the serialized status; the target is on the largest stage.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from bench import machine
from bench.fixtures import USER_MESSAGE, composition, load_meta, load_run, scaled
from bench.results import Result, Table, Target
from bench.stats import fmt_bytes, fmt_int, fmt_ratio, size_label
from worker.content.limits import ContentLimits
from worker.domain.agent_events import AgentEvent
from worker.domain.status_builder import StatusBuilder
from worker.logs import SecretRegistry

NAME = "builder"
TITLE = "StatusBuilder throughput"
SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
TARGET_EVENTS_PER_S = 50_000
GROWTH_LIMIT = 1.25
"""Cost per event in the last tenth over the first tenth above which cost counts as growing."""
TENTHS = 10
MEMORY_LIMIT = 3.0
"""Status-side memory (resident set growth, the largest of the stages) over the status's size."""


def _redactor() -> SecretRegistry:
    secrets = SecretRegistry()
    secrets.add(["sk-ant-bench-0123456789abcdef", "stigmer-token-bench-0123", "hunter2-db-pass"])
    return secrets


def new_builder() -> StatusBuilder:
    # The worker's default size bounds, as every run has them.
    builder = StatusBuilder(
        user_message=USER_MESSAGE, redact=_redactor().redact, limits=ContentLimits()
    )
    builder.start()
    return builder


def _slices(count: int) -> list[tuple[int, int]]:
    bounds = [round(count * i / TENTHS) for i in range(TENTHS + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(TENTHS)]


def timed_pass(events: Sequence[AgentEvent]) -> tuple[list[int], StatusBuilder]:
    """Nanoseconds spent in each tenth of the stream, and the builder that reduced it."""
    builder = new_builder()
    apply = builder.apply
    spent: list[int] = []
    # CPU time of this thread, not wall time: the machine is shared, and time spent descheduled
    # is not the builder's cost.
    clock = time.thread_time_ns
    for start, end in _slices(len(events)):
        chunk = events[start:end]
        began = clock()
        for event in chunk:
            apply(event)
        spent.append(clock() - began)
    return spent, builder


def peak_memory(events: Sequence[AgentEvent]) -> tuple[int, int]:
    """Peak and retained bytes allocated while reducing `events` (the builder's own state)."""
    tracemalloc.start()
    try:
        builder = new_builder()
        for event in events:
            builder.apply(event)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del builder
    return peak, current


def snapshot_cost(builder: StatusBuilder) -> dict[str, float]:
    began = time.thread_time()
    status = builder.snapshot()
    cold = time.thread_time() - began
    began = time.thread_time()
    builder.snapshot()
    warm = time.thread_time() - began
    return {"cold_ms": cold * 1000, "warm_ms": warm * 1000, "bytes": float(status.ByteSize())}


def status_memory(count: int) -> dict[str, Any]:
    """`bench.memory` for `count` events: RSS growth and tracemalloc, each in its own process.

    `stages[stage]` = {"traced_bytes", "rss_bytes"}."""
    runs: dict[bool, dict[str, Any]] = {}
    for traced in (False, True):
        command = [sys.executable, "-m", "bench.memory", "--events", str(count)]
        done = subprocess.run(
            command + (["--traced"] if traced else []),
            check=True,
            capture_output=True,
            text=True,
            cwd=machine.ROOT,
        )
        runs[traced] = json.loads(done.stdout.strip().splitlines()[-1])
    stages = {
        stage: {"traced_bytes": runs[True]["stages"][stage], "rss_bytes": rss}
        for stage, rss in runs[False]["stages"].items()
    }
    return {"events": count, "status_bytes": runs[False]["status_bytes"], "stages": stages}


def _peak(stages: dict[str, dict[str, int]], kind: str) -> int:
    """The largest of the stages by one measure: what the runner needs at its worst."""
    return max(stage[kind] for stage in stages.values())


def profile(events: Sequence[AgentEvent], top: int = 15) -> str:
    """cProfile of one pass, the `top` functions by own time."""
    profiler = cProfile.Profile()
    builder = new_builder()
    profiler.enable()
    for event in events:
        builder.apply(event)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def measure(events: Sequence[AgentEvent], repeats: int) -> dict[str, Any]:
    best: list[int] | None = None
    per_tenth: list[int] = [0] * TENTHS
    builder: StatusBuilder | None = None
    for _ in range(max(1, repeats)):
        spent, builder = timed_pass(events)
        if best is None or sum(spent) < sum(best):
            best = spent
        per_tenth = [min(a, b) if a else b for a, b in zip(per_tenth, spent, strict=True)]
    assert best is not None and builder is not None
    slices = _slices(len(events))
    tenth_ns = [
        ns / max(1, end - start) for ns, (start, end) in zip(per_tenth, slices, strict=True)
    ]
    counts = builder.counts
    snap = snapshot_cost(builder)
    peak, retained = peak_memory(events)
    total_s = sum(best) / 1e9
    return {
        "events": len(events),
        "repeats": repeats,
        "seconds": total_s,
        "events_per_s": len(events) / total_s if total_s else 0.0,
        "ns_per_event": sum(best) / len(events),
        "ns_per_event_by_tenth": tenth_ns,
        "first_tenth_ns": tenth_ns[0],
        "last_tenth_ns": tenth_ns[-1],
        "growth": tenth_ns[-1] / tenth_ns[0] if tenth_ns[0] else 0.0,
        "peak_bytes": peak,
        "retained_bytes": retained,
        "snapshot": snap,
        "status": {
            "messages": counts.messages,
            "tool_calls": counts.tool_calls,
            "todos": counts.todos,
            "sub_agents": counts.sub_agents,
        },
    }


def run(*, quick: bool = False, sizes: Sequence[int] | None = None) -> Result:
    chosen = tuple(sizes) if sizes else (QUICK_SIZES if quick else SIZES)
    result = Result(
        name=NAME,
        title=TITLE,
        about=__doc__ or "",
        settings={"sizes": list(chosen), "target_events_per_s": TARGET_EVENTS_PER_S},
    )
    base = load_run()
    meta = load_meta()
    result.data["fixture"] = {"scripts": meta.get("scripts"), "composition": composition(base)}
    rows: list[list[str]] = []
    tenth_rows: list[list[str]] = []
    memory_rows: list[list[str]] = []
    runs: dict[str, dict[str, Any]] = {}
    for size in chosen:
        events = scaled(base, size)
        repeats = 2 if quick else (5 if size <= 10_000 else 3)
        m = measure(events, repeats)
        label = size_label(size)
        runs[label] = m
        status = m["status"]
        rows.append(
            [
                label,
                fmt_int(m["events_per_s"]),
                f"{m['ns_per_event'] / 1000:.2f}",
                f"{m['first_tenth_ns'] / 1000:.2f}",
                f"{m['last_tenth_ns'] / 1000:.2f}",
                fmt_ratio(m["growth"]),
                fmt_bytes(m["peak_bytes"]),
                f"{m['peak_bytes'] / size:,.0f}",
                f"{status['messages']:,} / {status['tool_calls']:,} / {status['todos']}"
                f" / {status['sub_agents']}",
                f"{m['snapshot']['cold_ms']:.1f} / {m['snapshot']['warm_ms']:.1f}",
                fmt_bytes(m["snapshot"]["bytes"]),
            ]
        )
        tenth_rows.append([label, *(f"{ns / 1000:.2f}" for ns in m["ns_per_event_by_tenth"])])
        memory = m["memory"] = status_memory(size)
        stages = memory["stages"]
        status_size = memory["status_bytes"]
        cells = [
            f"{fmt_bytes(stages[stage][kind])} ({stages[stage][kind] / status_size:.1f}×)"
            for stage in ("builder", "in flight", "final")
            for kind in ("traced_bytes", "rss_bytes")
        ]
        memory_rows.append([label, fmt_bytes(status_size), *cells])
        result.metric(
            f"status_memory_ratio@{label}",
            _peak(stages, "rss_bytes") / status_size,
            "x",
            "lower",
        )
        result.metric(f"events_per_s@{label}", m["events_per_s"], "events/s", "higher")
        result.metric(f"growth@{label}", m["growth"], "x", "lower")
        result.metric(f"peak_bytes@{label}", m["peak_bytes"], "B", "lower")
        result.metric(f"snapshot_warm_ms@{label}", m["snapshot"]["warm_ms"], "ms", "lower")
    result.data["runs"] = runs
    result.tables.append(
        Table(
            title="Reduction of the recorded run (apply only)",
            columns=[
                "events",
                "events/s",
                "µs/event",
                "µs/event first 10%",
                "µs/event last 10%",
                "last/first",
                "peak memory",
                "peak B/event",
                "messages / tool calls / todos / sub-agents",
                "snapshot ms cold / warm",
                "status size",
            ],
            rows=rows,
        )
    )
    result.tables.append(
        Table(
            title="µs per event by tenth of the run",
            columns=["events", *(f"{10 * i}-{10 * (i + 1)}%" for i in range(TENTHS))],
            rows=tenth_rows,
        )
    )
    result.tables.append(
        Table(
            title="Status-side memory (tracemalloc / resident set growth, × the status's size)",
            columns=[
                "events",
                "status size",
                "builder (traced)",
                "builder (RSS)",
                "+ update in flight (traced)",
                "+ update in flight (RSS)",
                "update sent, + final snapshot (traced)",
                "update sent, + final snapshot (RSS)",
            ],
            rows=memory_rows,
        )
    )
    slowest = min(m["events_per_s"] for m in runs.values())
    result.targets.append(
        Target(
            goal=f"≥ {TARGET_EVENTS_PER_S:,} events/s at every size",
            measured=f"slowest {fmt_int(slowest)} events/s",
            met=slowest >= TARGET_EVENTS_PER_S,
        )
    )
    longest = size_label(max(chosen))
    growth = runs[longest]["growth"]
    result.targets.append(
        Target(
            goal=f"cost per event does not grow with run length (last/first 10% ≤ {GROWTH_LIMIT})",
            measured=f"{fmt_ratio(growth)} at {longest} events",
            met=growth <= GROWTH_LIMIT,
        )
    )
    final = runs[longest]["memory"]
    ratio = _peak(final["stages"], "rss_bytes") / final["status_bytes"]
    traced = _peak(final["stages"], "traced_bytes") / final["status_bytes"]
    result.targets.append(
        Target(
            goal=f"status-side memory ≤ {MEMORY_LIMIT:g}× the serialized status",
            measured=f"{ratio:.1f}× by RSS growth, {traced:.1f}× by tracemalloc (largest "
            f"stage), at {longest} events",
            met=ratio <= MEMORY_LIMIT,
        )
    )
    if slowest < TARGET_EVENTS_PER_S:
        report = profile(scaled(base, max(chosen)))
        result.data["profile"] = report
        result.findings.append("Target missed; cProfile of the longest stream:\n\n" + report)
    return result
