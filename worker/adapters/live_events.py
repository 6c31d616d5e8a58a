"""Fine-grained live events (token deltas, tool starts and ends, phases) on a Redis stream.

Status updates to the orchestrator are coalesced database writes; followers that want every token
read this cheap side channel instead: one capped stream per execution, named by `stream_key`,
with the schema in `docs/live-events.md`.

Everything here is best effort. `publish` only appends to an in-memory buffer and never touches
the network, so the agent never waits on Redis; a background writer sends buffered events in one
pipelined round trip every `flush_interval_ms` (at once for anything but a token delta), merging
consecutive token deltas of the same message into one entry. Redis calls have short timeouts; a
failure opens a circuit breaker for `cooldown_seconds`, during which events are dropped without a
connection attempt, and is logged once per execution. Nothing is ever raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.typing import EncodableT, FieldT

from worker.domain.update_policy import Clock
from worker.logs import SECRETS, get_logger
from worker.settings import RedisSettings

log = get_logger(__name__)

EVENT_TYPES = frozenset({"token", "tool_start", "tool_end", "phase", "todo", "sub_agent", "end"})
"""The documented event types; others are passed through for forward compatibility."""

_RESERVED = ("type", "seq", "ts")


def stream_key(execution_id: str) -> str:
    """The Redis stream of one execution's live events."""
    return "stigmer:execution:" + execution_id + ":events"


# Constructors for the documented event types, so producers cannot drift from the schema.


def token_event(text: str, message_index: int) -> dict[str, Any]:
    return {"type": "token", "text": text, "message_index": message_index}


def tool_start_event(
    tool_call_id: str,
    name: str,
    args: Mapping[str, Any] | None = None,
    message_index: int | None = None,
) -> dict[str, Any]:
    return {
        "type": "tool_start",
        "tool_call_id": tool_call_id,
        "name": name,
        "args": args,
        "message_index": message_index,
    }


def tool_end_event(
    tool_call_id: str,
    name: str,
    status: str,
    result: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "type": "tool_end",
        "tool_call_id": tool_call_id,
        "name": name,
        "status": status,
        "result": result,
        "error": error,
    }


def phase_event(phase: str, error: str | None = None) -> dict[str, Any]:
    return {"type": "phase", "phase": phase, "error": error or None}


def approval_event(
    tool_call_id: str, name: str, status: str, *, message: str = "", action: str = ""
) -> dict[str, Any]:
    """A gated call waits (`status` WAITING_APPROVAL, with the approver's message) or was
    decided (`action`: an `ApprovalAction` name)."""
    return {
        "type": "approval",
        "tool_call_id": tool_call_id,
        "name": name,
        "status": status,
        "message": message or None,
        "action": action or None,
    }


def todo_event(todo_id: str, content: str, status: str) -> dict[str, Any]:
    return {"type": "todo", "todo_id": todo_id, "content": content, "status": status}


def sub_agent_event(sub_agent_id: str, name: str, status: str) -> dict[str, Any]:
    return {"type": "sub_agent", "sub_agent_id": sub_agent_id, "name": name, "status": status}


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(value: Any) -> str | None:
    """A stream field value: strings as they are, scalars as text, structures as JSON."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


@dataclass
class LiveEventStats:
    """Counters for metrics."""

    published: int = 0
    merged: int = 0
    written: int = 0
    dropped: int = 0
    failures: int = 0


@dataclass
class _Entry:
    type: str
    seq: int
    ts: str
    fields: dict[str, Any]
    text: list[str] = field(default_factory=list)  # token deltas merged into this entry

    def encoded(self) -> dict[FieldT, EncodableT]:
        out: dict[FieldT, EncodableT] = {"type": self.type, "seq": str(self.seq), "ts": self.ts}
        if self.type == "token":
            # Redacting the merged text also catches a secret split across deltas of one batch.
            out["text"] = SECRETS.redact("".join(self.text))
        for name, value in self.fields.items():
            text = _encode(value)
            if text is not None:
                out[name] = SECRETS.redact(text)
        return out


@dataclass
class _Stream:
    seq: int = 0
    buffer: list[_Entry] = field(default_factory=list)
    warned: bool = False
    closing: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class NullLiveEvents:
    """Live events switched off (no `REDIS_HOST`): every call is a no-op."""

    enabled = False

    async def publish(self, execution_id: str, event: Mapping[str, Any]) -> None:
        return None

    async def close_stream(self, execution_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisLiveEvents:
    """LiveEvents on Redis streams: `XADD ... MAXLEN ~ n` plus `EXPIRE` on every write.

    Construct once per process and `await aclose()` at shutdown. Call `close_stream` when an
    execution ends: it appends the `end` event and waits briefly for the buffer to drain.
    """

    enabled = True

    def __init__(
        self,
        settings: RedisSettings,
        *,
        client: Redis | None = None,
        flush_interval_ms: int = 50,
        timeout_seconds: float = 0.5,
        cooldown_seconds: float = 5.0,
        max_buffered: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self._maxlen = settings.stream_maxlen
        self._ttl = settings.stream_ttl_seconds
        self._interval = flush_interval_ms / 1000.0
        self._timeout = timeout_seconds
        self._cooldown = cooldown_seconds
        self._max_buffered = max_buffered
        self._clock = clock
        self._client = client if client is not None else self._connect(settings, timeout_seconds)
        self._streams: dict[str, _Stream] = {}
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._open_until: float | None = None
        self._closed = False
        self.stats = LiveEventStats()

    @staticmethod
    def _connect(settings: RedisSettings, timeout: float) -> Redis:
        password = settings.password.get_secret_value() if settings.password else None
        return Redis(
            host=settings.host or "localhost",
            port=settings.port,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # The breaker decides when to try again, so timeouts are not retried. A broken
            # connection is, once and at once: after a Redis restart the pooled connection is
            # dead, and the first write would otherwise open the breaker although Redis is back.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            client_name="stigmer-agent-runner",
        )

    @property
    def breaker_open(self) -> bool:
        return self._open_until is not None and self._clock() < self._open_until

    async def publish(self, execution_id: str, event: Mapping[str, Any]) -> None:
        """Buffer one event; returns at once and never raises."""
        try:
            self._append(execution_id, event)
        except Exception as err:  # best effort: a malformed event must not hurt the run
            log.debug("live_event_skipped", execution_id=execution_id, error=repr(err))

    async def close_stream(self, execution_id: str) -> None:
        """Append the `end` event and wait (briefly) until this execution's events are written."""
        try:
            self._append(execution_id, {"type": "end"})
        except Exception as err:  # pragma: no cover - _append of a fixed event cannot fail
            log.debug("live_event_skipped", execution_id=execution_id, error=repr(err))
        stream = self._streams.get(execution_id)
        if stream is None:
            return
        stream.closing = True
        self._wake_writer(urgent=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.drained.wait(), self._timeout + self._interval + 0.5)
        self._streams.pop(execution_id, None)

    async def aclose(self) -> None:
        """Write what is buffered (bounded by the timeout), stop the writer, close the client."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if any(s.buffer for s in self._streams.values()):
            await self._flush()
        with contextlib.suppress(Exception):
            await self._client.aclose()

    def _append(self, execution_id: str, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str) or not kind or self._closed:
            return
        stream = self._streams.get(execution_id)
        if stream is None:
            stream = self._streams[execution_id] = _Stream()
        elif stream.closing:
            return
        self.stats.published += 1
        if self.breaker_open:
            self._drop(execution_id, stream, 1, "circuit open after a recent failure")
            return
        fields = {k: v for k, v in event.items() if k not in _RESERVED}
        if kind == "token":
            text = fields.pop("text", "")
            last = stream.buffer[-1] if stream.buffer else None
            if last is not None and last.type == "token" and last.fields == fields:
                last.text.append(str(text))
                self.stats.merged += 1
                self._wake_writer(urgent=False)
                return
        if len(stream.buffer) >= self._max_buffered:
            self._drop(execution_id, stream, 1, "buffer full")
            return
        stream.seq += 1
        entry = _Entry(kind, stream.seq, _now_rfc3339(), fields)
        if kind == "token":
            entry.text.append(str(text))
        stream.buffer.append(entry)
        self._wake_writer(urgent=kind != "token")

    def _wake_writer(self, *, urgent: bool) -> None:
        if self._writer is None or self._writer.done():
            # A fresh context: the writer serves every execution, so it must not log with the
            # execution id bound by whichever run happened to start it.
            self._writer = asyncio.create_task(
                self._write_loop(), name="live-events-writer", context=contextvars.Context()
            )
        self._wake.set()
        if urgent:
            self._urgent.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                # Let token deltas gather for one interval; a tool or phase event cuts it short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._interval)
            self._wake.clear()
            self._urgent.clear()
            await self._flush()

    async def _flush(self) -> None:
        batch = {eid: s for eid, s in self._streams.items() if s.buffer}
        entries = {eid: s.buffer for eid, s in batch.items()}
        for stream in batch.values():
            stream.buffer = []
        if entries:
            if self.breaker_open:
                for eid, stream in batch.items():
                    self._drop(eid, stream, len(entries[eid]), "circuit open after a failure")
            else:
                await self._write(batch, entries)
        for stream in self._streams.values():
            if stream.closing and not stream.buffer:
                stream.drained.set()

    async def _write(self, batch: dict[str, _Stream], entries: dict[str, list[_Entry]]) -> None:
        count = sum(len(e) for e in entries.values())
        try:
            async with asyncio.timeout(self._timeout):
                pipe = self._client.pipeline(transaction=False)
                for eid, items in entries.items():
                    key = stream_key(eid)
                    for entry in items:
                        pipe.xadd(key, entry.encoded(), maxlen=self._maxlen, approximate=True)
                    pipe.expire(key, self._ttl)
                await pipe.execute()
        except Exception as err:
            self.stats.failures += 1
            recovering = self._open_until is not None
            self._open_until = self._clock() + self._cooldown
            reason = SECRETS.redact(repr(err) if isinstance(err, TimeoutError) else str(err))
            for eid, stream in batch.items():
                self._drop(eid, stream, len(entries[eid]), reason or type(err).__name__)
            if not recovering:
                log.debug("live_events_breaker_open", cooldown_s=self._cooldown)
            return
        if self._open_until is not None:
            log.info("live_events_recovered")
            self._open_until = None
        self.stats.written += count

    def _drop(self, execution_id: str, stream: _Stream, count: int, reason: str) -> None:
        self.stats.dropped += count
        if not stream.warned:
            stream.warned = True
            log.warning(
                "live_events_unavailable",
                execution_id=execution_id,
                error=reason,
                dropped=count,
            )


def live_events_for(settings: RedisSettings) -> RedisLiveEvents | NullLiveEvents:
    """Redis live events when `REDIS_HOST` is set, otherwise the no-op."""
    if not settings.host:
        return NullLiveEvents()
    return RedisLiveEvents(settings)


if TYPE_CHECKING:
    from worker import ports

    _REDIS: type[ports.LiveEvents] = RedisLiveEvents
    _NULL: type[ports.LiveEvents] = NullLiveEvents
