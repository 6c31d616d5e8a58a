"""Drain: SIGTERM to a worker with executions in flight. They stop at a safe point, their
checkpoint saved, and finish on another worker; the stopping worker exits well inside its
graceful window, and no observer ever sees FAILED or CANCELLED."""

from __future__ import annotations

import asyncio
import time

import pytest
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from temporalio.api.history.v1 import HistoryEvent

from tests.reliability.cluster import (
    GRACEFUL_SECONDS,
    Cluster,
    assert_complete_long_run,
    completed_tools,
)

pytestmark = pytest.mark.integration

STEPS = 8
Phase = enum_pb2.ExecutionPhase


async def phases_seen(cluster: Cluster, execution_id: str) -> list[int]:
    """Every phase a subscriber sees, from the first state to the terminal one."""
    return [e.status.phase async for e in cluster.client.subscribe(execution_id)]


async def test_sigterm_hands_in_flight_runs_over_and_nothing_is_reported_failed(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    agent_id = await cluster.agent()
    ids = [
        await cluster.start(f"Checklist {n}", agent_id=agent_id, model=f"scripted:long:{STEPS}")
        for n in range(2)
    ]
    watchers = [asyncio.create_task(phases_seen(cluster, eid)) for eid in ids]
    for eid in ids:
        await cluster.wait_until(eid, lambda e: completed_tools(e) >= 2, seconds=60)
    victim = max(cluster.live_workers(), key=lambda w: sum(w.ran(e) for e in ids))
    handed_over = [e for e in ids if victim.ran(e)]
    assert handed_over

    began = time.monotonic()
    victim.terminate()
    code = await victim.wait_exit(GRACEFUL_SECONDS + 10)
    stopped_in = time.monotonic() - began
    cluster.spawn_worker()  # a replacement for later tests; the other worker takes over now

    finals = [await cluster.finished(eid, seconds=90) for eid in ids]
    seen = await asyncio.gather(*watchers)

    assert code == 0, victim.tail()
    assert stopped_in < GRACEFUL_SECONDS / 2, "it handed over at once, not at the window's end"
    assert victim.events("worker_stopped")
    for final in finals:
        assert_complete_long_run(cluster, final, STEPS)
    for phases in seen:
        assert set(phases) <= {
            Phase.EXECUTION_PENDING,
            Phase.EXECUTION_IN_PROGRESS,
            Phase.EXECUTION_COMPLETED,
        }
        assert phases[-1] == Phase.EXECUTION_COMPLETED
    for eid in handed_over:
        (draining,) = victim.events("execution_draining", execution_id=eid)
        assert draining["handover"] is True
        (ended,) = victim.events("execution_attempt_ended", execution_id=eid)
        assert ended["error_type"] == "WorkerShuttingDown"
        assert ended["will_retry"] is True
        first, second = cluster.worker_of(eid)
        assert first is victim and second is not victim
        (planned,) = second.events("agent_run_planned", execution_id=eid)
        assert planned["mode"] == "resume" and planned["replayed"] >= 4
        started = [
            e.activity_task_started_event_attributes
            for e in map(HistoryEvent.FromString, await cluster.history_bytes(eid))
            if e.HasField("activity_task_started_event_attributes")
        ]
        failure = started[-1].last_failure
        assert failure.application_failure_info.type == "WorkerShuttingDown", failure
        assert not failure.application_failure_info.non_retryable
