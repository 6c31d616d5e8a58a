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


async def test_a_killed_worker_s_execution_completes_under_the_go_single_attempt_policy(
    cluster: Cluster,
) -> None:
    """The Go orchestrator gives ExecuteGraphton one attempt: the stub's workflow invokes the
    activity again after the heartbeat timeout, and the run completes on another worker."""
    assert cluster.stub is not None
    cluster.stub.stop()
    await cluster.start_stub(STIGMER_STUB_EXECUTE_ATTEMPTS="1")
    try:
        await cluster.ensure_workers(2)
        agent_id = await cluster.agent()
        execution_id = await cluster.start(
            "Work through the checklist once", agent_id=agent_id, model=f"scripted:long:{STEPS}"
        )
        await cluster.wait_until(
            execution_id, lambda e: completed_tools(e) >= 3 and streaming_a_turn(e), seconds=60
        )
        (victim,) = cluster.worker_of(execution_id)
        victim.kill()
        cluster.spawn_worker()

        final = await cluster.finished(execution_id, seconds=120)

        assert_complete_long_run(cluster, final, STEPS)
        assert victim in cluster.worker_of(execution_id)
        assert cluster.worker_of(execution_id)[-1] is not victim
        events = [HistoryEvent.FromString(b) for b in await cluster.history_bytes(execution_id)]
        scheduled = [
            e.activity_task_scheduled_event_attributes
            for e in events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name == "ExecuteGraphton"
        ]
        # Each invocation allows one attempt; the lost one was invoked again.
        assert len(scheduled) >= 2
        assert all(s.retry_policy.maximum_attempts == 1 for s in scheduled)
        timed_out = [
            e.activity_task_timed_out_event_attributes
            for e in events
            if e.HasField("activity_task_timed_out_event_attributes")
        ]
        assert timed_out
        assert timed_out[0].failure.timeout_failure_info.timeout_type == (
            TimeoutType.TIMEOUT_TYPE_HEARTBEAT
        )
    finally:
        cluster.stub.stop()
        await cluster.start_stub()
