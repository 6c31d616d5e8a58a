"""Resume: a worker SIGKILLed mid-execution; the retried ExecuteGraphton continues on another
worker from the thread's last checkpoint in the shared Postgres checkpointer."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.history.v1 import HistoryEvent

from tests.reliability.cluster import (
    Cluster,
    assert_complete_long_run,
    assert_keeps,
    completed_tools,
    step_lines,
    streaming_a_turn,
)

pytestmark = pytest.mark.integration

STEPS = 8


async def test_a_killed_worker_s_execution_resumes_elsewhere_without_repeating_tools(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    agent_id = await cluster.agent()
    execution_id = await cluster.start(
        "Work through the checklist", agent_id=agent_id, model=f"scripted:long:{STEPS}"
    )
    # Mid-run: three tools done and checkpointed, the model streaming its fourth turn.
    await cluster.wait_until(
        execution_id, lambda e: completed_tools(e) >= 3 and streaming_a_turn(e), seconds=60
    )
    (victim,) = cluster.worker_of(execution_id)
    victim.kill()
    acknowledged = (await cluster.client.get_execution(execution_id)).status
    session_id = (await cluster.client.get_execution(execution_id)).spec.session_id
    ran_before_kill = len(step_lines(cluster, session_id))
    cluster.spawn_worker()  # the replacement starts now; the surviving worker takes over

    final = await cluster.finished(execution_id, seconds=90)

    assert_complete_long_run(cluster, final, STEPS)
    assert_keeps(acknowledged, final.status)
    assert 3 <= ran_before_kill < STEPS, "the kill happened mid-run"
    first, second = cluster.worker_of(execution_id)
    assert first is victim and second is not victim
    (planned,) = second.events("agent_run_planned", execution_id=execution_id)
    assert planned["mode"] == "resume"
    assert planned["replayed"] >= 2 * ran_before_kill, "the checkpointed turns were replayed"
    # Temporal's record: a later attempt completed, after the one on the dead worker timed out.
    # (It may be the third: Temporal can hand the retry to a poll the killed process left open,
    # which costs one more heartbeat timeout.)
    started = [
        e
        for e in map(HistoryEvent.FromString, await cluster.history_bytes(execution_id))
        if e.HasField("activity_task_started_event_attributes")
    ]
    execute = started[-1].activity_task_started_event_attributes
    assert execute.attempt >= 2
    assert (
        execute.last_failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
    )
