"""Faults around a running execution: the orchestrator and the store restarted, Redis gone, the
model provider throttling or failing, a tool that hangs. Each ends in a correct final state, with a
clear error where the run could not finish, and loses no status the orchestrator acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from stigmer_cli.client import RpcFailed
from tests.reliability.cluster import (
    COMMAND_TIMEOUT_SECONDS,
    OPENAI_API_KEY,
    Cluster,
    LlmStandIn,
    Reply,
    ai_messages,
    assert_complete_long_run,
    assert_keeps,
    completed_tools,
)

pytestmark = pytest.mark.integration

STEPS = 6
REDIS_COOLDOWN_SECONDS = 5.0  # RedisLiveEvents' default
Phase = enum_pb2.ExecutionPhase


async def test_the_orchestrator_restarted_mid_run_gets_every_update_after_it_is_back(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    agent_id = await cluster.agent()
    execution_id = await cluster.start(
        "Survive the orchestrator", agent_id=agent_id, model=f"scripted:long:{STEPS}"
    )
    await cluster.wait_until(execution_id, lambda e: completed_tools(e) >= 2, seconds=60)
    acknowledged = (await cluster.client.get_execution(execution_id)).status
    assert cluster.stub is not None
    cluster.stub.kill()
    await asyncio.sleep(3)  # the run goes on; its updates fail meanwhile
    await cluster.start_stub()

    final = await cluster.finished(execution_id, seconds=90)

    assert_complete_long_run(cluster, final, STEPS)
    assert_keeps(acknowledged, final.status)
    (worker,) = cluster.worker_of(execution_id)
    failed = worker.events("status_update_failed", execution_id=execution_id)
    assert failed, "updates were attempted while the orchestrator was down"
    assert all(e["retry_in_ms"] is not None for e in failed), "and each was retried"
    # Logged once the final update's reply is in, which can be after the test saw it stored.
    assert await worker.logged("status_update_sent", execution_id=execution_id, final=True)


async def test_the_store_restarted_mid_run_is_unavailable_meanwhile_and_the_run_completes(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    agent_id = await cluster.agent()
    execution_id = await cluster.start(
        "Survive the database", agent_id=agent_id, model=f"scripted:long:{STEPS}"
    )
    await cluster.wait_until(execution_id, lambda e: completed_tools(e) >= 2, seconds=60)
    acknowledged = (await cluster.client.get_execution(execution_id)).status
    await asyncio.to_thread(cluster.stack.stop_service, "mongo", graceful=False)
    try:
        with pytest.raises(RpcFailed) as outage:
            await cluster.client.get_execution(execution_id)
        assert outage.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await asyncio.to_thread(cluster.stack.start_service, "mongo")

    final = await cluster.finished(execution_id, seconds=90)

    assert_complete_long_run(cluster, final, STEPS)
    assert_keeps(acknowledged, final.status)
    (worker,) = cluster.worker_of(execution_id)
    failed = worker.events("status_update_failed", execution_id=execution_id)
    assert any("UNAVAILABLE" in e["error"] for e in failed), failed


async def test_without_redis_live_events_are_dropped_and_the_run_completes(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    agent_id = await cluster.agent()
    await asyncio.to_thread(cluster.stack.stop_service, "redis")
    try:
        dark = await cluster.start("Run without Redis", agent_id=agent_id, model="scripted:long:2")
        dark_final = await cluster.finished(dark)
    finally:
        await asyncio.to_thread(cluster.stack.start_service, "redis")
    # The worker's circuit breaker tries Redis again once its cooldown after the last failure
    # has passed; until then events are dropped without a connection attempt.
    await asyncio.sleep(REDIS_COOLDOWN_SECONDS + 0.5)
    lit = await cluster.start("Run with Redis back", agent_id=agent_id, model="scripted:long:2")
    lit_final = await cluster.finished(lit)

    assert_complete_long_run(cluster, dark_final, 2)
    (worker,) = cluster.worker_of(dark)
    assert worker.events("live_events_unavailable", execution_id=dark)
    assert_complete_long_run(cluster, lit_final, 2)
    kinds = [fields[b"type"].decode() for fields in await cluster.live_events(lit)]
    assert "tool_start" in kinds and kinds[-1] == "end", "live events flow again"


async def test_a_throttled_provider_is_retried_after_its_retry_after_and_the_run_completes(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    cluster.llm.script(
        Reply(429, {"retry-after": "1"}, "Rate limit reached, retry after 1s"),
        Reply(503, {"retry-after": "1"}, "The engine is currently overloaded"),
    )
    agent_id = await cluster.agent()
    began = time.monotonic()
    execution_id = await cluster.start("Answer through the real provider", agent_id=agent_id)

    final = await cluster.finished(execution_id, seconds=60)

    assert final.status.phase == Phase.EXECUTION_COMPLETED, final.status.error
    assert ai_messages(final.status)[-1].content == LlmStandIn.answer
    assert len(cluster.llm.requests) >= 3, "two refusals, then the answer"
    assert time.monotonic() - began >= 2, "the client waited as told by retry-after"
    keys = {r.headers["authorization"] for r in cluster.llm.requests}
    assert keys == {f"Bearer {OPENAI_API_KEY}"}


async def test_a_provider_failing_for_good_fails_the_run_with_a_clear_error(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    # The provider's error text quotes the key, as some gateways do; it must not leak.
    cluster.llm.script(
        always=Reply(503, {"retry-after-ms": "10"}, f"upstream overloaded for key {OPENAI_API_KEY}")
    )
    agent_id = await cluster.agent()
    try:
        execution_id = await cluster.start("This cannot be answered", agent_id=agent_id)
        final = await cluster.finished(execution_id, seconds=90)
    finally:
        cluster.llm.script()

    status = final.status
    assert status.phase == Phase.EXECUTION_FAILED
    assert "503" in status.error and "upstream overloaded" in status.error, status.error
    assert OPENAI_API_KEY not in status.error
    assert status.messages[0].content == "This cannot be answered", "the transcript is kept"
    attempts = [w for w in cluster.workers if w.ran(execution_id)]
    started = sum(len(w.events("execution_started", execution_id=execution_id)) for w in attempts)
    assert started > 1, "Temporal retried the attempt: the failure is retryable"


async def test_a_provider_refusing_the_key_fails_at_once_without_a_retry(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    cluster.llm.script(always=Reply(401, {}, "Incorrect API key provided"))
    agent_id = await cluster.agent()
    try:
        execution_id = await cluster.start("Try with a bad key", agent_id=agent_id)
        final = await cluster.finished(execution_id, seconds=60)
    finally:
        requests = len(cluster.llm.requests)
        cluster.llm.script()

    status = final.status
    assert status.phase == Phase.EXECUTION_FAILED
    assert "HTTP 401" in status.error and "Incorrect API key provided" in status.error
    started = sum(
        len(w.events("execution_started", execution_id=execution_id)) for w in cluster.workers
    )
    assert started == 1, "no retry can fix a refused key"
    assert requests == 1


async def test_a_tool_hanging_past_its_timeout_fails_that_call_and_the_run_goes_on(
    cluster: Cluster,
) -> None:
    await cluster.ensure_workers(2)
    agent_id = await cluster.agent()
    session_id = await cluster.new_session(agent_id)
    workspace = cluster.workspace(session_id)
    workspace.mkdir(parents=True)
    # The `long` script appends to long-run.log; as a FIFO nobody reads, each append blocks.
    os.mkfifo(workspace / "long-run.log")
    try:
        execution_id = await cluster.start(
            "Append to the log",
            agent_id="",
            session_id=session_id,
            model="scripted:long:2",
        )
        final = await cluster.finished(execution_id, seconds=60)
    finally:
        with contextlib.suppress(OSError):
            (workspace / "long-run.log").unlink()

    status = final.status
    assert status.phase == Phase.EXECUTION_COMPLETED, status.error
    assert [c.status for c in status.tool_calls] == [enum_pb2.TOOL_CALL_FAILED] * 2
    for call in status.tool_calls:
        assert f"timed out after {COMMAND_TIMEOUT_SECONDS}" in call.error, call.error
    assert ai_messages(status)[-1].content.startswith("Finished all 2 steps")
