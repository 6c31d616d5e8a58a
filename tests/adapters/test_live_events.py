"""Live events on a real Valkey server (the embedded stack), and what happens when it is down."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from devstack import Endpoints
from worker.adapters.live_events import (
    NullLiveEvents,
    RedisLiveEvents,
    live_events_for,
    phase_event,
    stream_key,
    sub_agent_event,
    todo_event,
    token_event,
    tool_end_event,
    tool_start_event,
)
from worker.logs import SECRETS
from worker.settings import RedisSettings


def redis_settings(host: str | None, port: int, **env: str) -> RedisSettings:
    values: dict[str, str] = {"REDIS_PORT": str(port), **env}
    if host is not None:
        values["REDIS_HOST"] = host
    return RedisSettings.model_validate(values)


def new_execution_id() -> str:
    return "aex-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def reader(stack: Endpoints) -> AsyncIterator[Redis]:
    client = Redis(host=stack.redis_host, port=stack.redis_port, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def live(stack: Endpoints) -> AsyncIterator[RedisLiveEvents]:
    events = RedisLiveEvents(redis_settings(stack.redis_host, stack.redis_port))
    yield events
    await events.aclose()


# redis-py's annotations cannot follow `decode_responses=True`: `reader` gets str, not bytes.
StreamEntries = list[tuple[str, dict[str, str]]]


async def read_events(reader: Redis, execution_id: str) -> list[dict[str, Any]]:
    entries = cast(StreamEntries, await reader.xrange(stream_key(execution_id)))
    return [fields for _id, fields in entries]


@pytest.mark.integration
async def test_events_land_in_order_with_the_documented_schema(
    live: RedisLiveEvents, reader: Redis
) -> None:
    eid = new_execution_id()
    await live.publish(eid, phase_event("EXECUTION_IN_PROGRESS"))
    for delta in ["Hel", "lo", " world"]:
        await live.publish(eid, token_event(delta, message_index=1))
    await live.publish(eid, tool_start_event("call-1", "ls", {"path": "/"}, message_index=1))
    await live.publish(eid, tool_end_event("call-1", "ls", "COMPLETED", result="a b"))
    await live.publish(eid, todo_event("todo-1", "plan", "TODO_IN_PROGRESS"))
    await live.publish(eid, sub_agent_event("call-2", "researcher", "SUB_AGENT_COMPLETED"))
    await live.publish(eid, phase_event("EXECUTION_FAILED", error="model refused"))
    await live.close_stream(eid)

    events = await read_events(reader, eid)

    assert [e["type"] for e in events] == [
        "phase",
        "token",
        "tool_start",
        "tool_end",
        "todo",
        "sub_agent",
        "phase",
        "end",
    ]
    assert [e["seq"] for e in events] == [str(n) for n in range(1, 9)]
    for event in events:
        assert event["ts"].endswith("Z")
        assert dt.datetime.fromisoformat(event["ts"]).tzinfo is not None
    body = [{k: v for k, v in e.items() if k not in ("seq", "ts")} for e in events]
    assert body == [
        {"type": "phase", "phase": "EXECUTION_IN_PROGRESS"},
        {"type": "token", "text": "Hello world", "message_index": "1"},
        {
            "type": "tool_start",
            "tool_call_id": "call-1",
            "name": "ls",
            "args": '{"path":"/"}',
            "message_index": "1",
        },
        {
            "type": "tool_end",
            "tool_call_id": "call-1",
            "name": "ls",
            "status": "COMPLETED",
            "result": "a b",
        },
        {"type": "todo", "todo_id": "todo-1", "content": "plan", "status": "TODO_IN_PROGRESS"},
        {
            "type": "sub_agent",
            "sub_agent_id": "call-2",
            "name": "researcher",
            "status": "SUB_AGENT_COMPLETED",
        },
        {"type": "phase", "phase": "EXECUTION_FAILED", "error": "model refused"},
        {"type": "end"},
    ]


@pytest.mark.integration
async def test_token_deltas_are_batched_not_written_one_by_one(
    live: RedisLiveEvents, reader: Redis
) -> None:
    eid = new_execution_id()
    deltas = ["tok" + str(i) + " " for i in range(300)]
    for delta in deltas:
        await live.publish(eid, {"type": "token", "text": delta, "message_index": 0})
    await live.close_stream(eid)

    events = await read_events(reader, eid)
    tokens = [e for e in events if e["type"] == "token"]

    assert len(tokens) <= 3
    assert "".join(e["text"] for e in tokens) == "".join(deltas)
    assert events[-1]["type"] == "end"
    assert live.stats.merged >= 297


@pytest.mark.integration
async def test_token_deltas_of_different_messages_stay_apart(
    live: RedisLiveEvents, reader: Redis
) -> None:
    eid = new_execution_id()
    await live.publish(eid, {"type": "token", "text": "a", "message_index": 1})
    await live.publish(eid, {"type": "token", "text": "b", "message_index": 2})
    await live.close_stream(eid)

    events = await read_events(reader, eid)

    assert [(e["type"], e.get("text"), e.get("message_index")) for e in events] == [
        ("token", "a", "1"),
        ("token", "b", "2"),
        ("end", None, None),
    ]


@pytest.mark.integration
async def test_buffered_tokens_are_written_within_the_flush_interval(
    live: RedisLiveEvents, reader: Redis
) -> None:
    eid = new_execution_id()
    await live.publish(eid, {"type": "token", "text": "streaming", "message_index": 0})

    deadline = time.monotonic() + 2.0
    while not await reader.exists(stream_key(eid)):
        assert time.monotonic() < deadline, "token never written"
        await asyncio.sleep(0.01)
    events = await read_events(reader, eid)
    await live.close_stream(eid)

    assert events == [events[0] | {"type": "token", "text": "streaming", "seq": "1"}]


@pytest.mark.integration
async def test_the_stream_is_capped_and_expires(stack: Endpoints, reader: Redis) -> None:
    settings = redis_settings(
        stack.redis_host,
        stack.redis_port,
        LIVE_EVENTS_MAXLEN="100",
        LIVE_EVENTS_TTL_SECONDS="120",
    )
    live = RedisLiveEvents(settings)
    eid = new_execution_id()
    try:
        for i in range(1000):
            await live.publish(eid, {"type": "todo", "todo_id": str(i), "status": "PENDING"})
            if i % 100 == 0:
                await asyncio.sleep(0)
        await live.close_stream(eid)
    finally:
        await live.aclose()

    length = await reader.xlen(stream_key(eid))
    ttl = await reader.ttl(stream_key(eid))
    last = cast(StreamEntries, await reader.xrevrange(stream_key(eid), count=1))

    # `MAXLEN ~` trims whole radix-tree nodes, so the length lands between the cap and twice it.
    assert 100 <= length <= 200
    assert 0 < ttl <= 120
    assert last[0][1]["type"] == "end"


@pytest.mark.integration
async def test_secrets_are_masked_even_when_split_across_token_deltas(
    live: RedisLiveEvents, reader: Redis
) -> None:
    secret = "sk-live-" + uuid.uuid4().hex
    SECRETS.add([secret])
    eid = new_execution_id()
    for part in ["key is ", secret[:10], secret[10:], "."]:
        await live.publish(eid, {"type": "token", "text": part, "message_index": 0})
    await live.publish(eid, {"type": "tool_end", "tool_call_id": "c", "result": secret})
    await live.close_stream(eid)

    events = await read_events(reader, eid)

    assert events[0]["text"] == "key is ***."
    assert events[1]["result"] == "***"


@pytest.mark.integration
async def test_executions_get_separate_streams(live: RedisLiveEvents, reader: Redis) -> None:
    first, second = new_execution_id(), new_execution_id()
    await live.publish(first, {"type": "phase", "phase": "EXECUTION_IN_PROGRESS"})
    await live.publish(second, {"type": "phase", "phase": "EXECUTION_PENDING"})
    await live.close_stream(first)
    await live.close_stream(second)

    assert [e["phase"] for e in await read_events(reader, first) if e["type"] == "phase"] == [
        "EXECUTION_IN_PROGRESS"
    ]
    assert [e["phase"] for e in await read_events(reader, second) if e["type"] == "phase"] == [
        "EXECUTION_PENDING"
    ]


@pytest.mark.integration
async def test_malformed_events_are_skipped_without_raising(
    live: RedisLiveEvents, reader: Redis
) -> None:
    eid = new_execution_id()
    await live.publish(eid, {"text": "no type"})
    await live.publish(eid, {"type": 42})
    await live.publish(eid, {"type": "phase", "phase": object(), "extra": None})
    await live.close_stream(eid)

    events = await read_events(reader, eid)

    assert [e["type"] for e in events] == ["phase", "end"]
    assert "extra" not in events[0]


async def test_redis_down_costs_nothing_and_warns_once_per_execution() -> None:
    live = RedisLiveEvents(
        redis_settings("127.0.0.1", free_port()), flush_interval_ms=10, cooldown_seconds=60
    )
    first, second = new_execution_id(), new_execution_id()
    started = time.monotonic()
    with capture_logs() as logs:
        for i in range(200):
            await live.publish(first, {"type": "token", "text": "x", "message_index": 0})
            await live.publish(first, {"type": "tool_start", "tool_call_id": str(i)})
            await asyncio.sleep(0)
        await live.close_stream(first)
        await live.publish(second, {"type": "phase", "phase": "EXECUTION_IN_PROGRESS"})
        await live.close_stream(second)
        await live.aclose()
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert live.stats.failures == 1, "the breaker should stop retries after the first failure"
    assert live.stats.written == 0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["execution_id"]) for e in warnings] == [
        ("live_events_unavailable", first),
        ("live_events_unavailable", second),
    ]


async def test_the_breaker_tries_again_after_its_cooldown() -> None:
    live = RedisLiveEvents(
        redis_settings("127.0.0.1", free_port()), flush_interval_ms=10, cooldown_seconds=0.1
    )
    eid = new_execution_id()
    try:
        await live.publish(eid, {"type": "phase", "phase": "EXECUTION_IN_PROGRESS"})
        deadline = time.monotonic() + 2.0
        while live.stats.failures < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert live.breaker_open
        await live.publish(eid, {"type": "phase", "phase": "EXECUTION_COMPLETED"})
        assert live.stats.dropped == 2

        await asyncio.sleep(0.15)
        assert not live.breaker_open
        await live.publish(eid, {"type": "phase", "phase": "EXECUTION_COMPLETED"})
        while live.stats.failures < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        await live.aclose()


async def test_null_live_events_accept_everything() -> None:
    live = live_events_for(redis_settings(None, 6379))

    assert isinstance(live, NullLiveEvents)
    assert not live.enabled, "the run builds no live events for the null object"
    await live.publish("aex-1", {"type": "token", "text": "x"})
    await live.close_stream("aex-1")
    await live.aclose()


async def test_a_configured_host_gives_redis_live_events() -> None:
    live = live_events_for(redis_settings("127.0.0.1", free_port()))

    assert isinstance(live, RedisLiveEvents)
    await live.aclose()


def test_stream_names_follow_the_documented_pattern() -> None:
    assert stream_key("aex-01h") == "stigmer:execution:aex-01h:events"
