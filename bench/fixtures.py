"""The recorded agent run the benchmarks replay, and longer runs made from it.

`bench/fixtures/run.jsonl.gz` holds the events (JSON lines of `worker.domain.agent_events`) of a
real Graphton deep-agent run driven by the scripted model, recorded once by `python -m
bench.record`; `run.meta.json` says how. Longer streams repeat the recording with fresh ids (every
message, tool-call and sub-agent id gets a suffix per copy), so each copy continues the run with new
model turns, tool calls and a new sub-agent delegation, exactly as a longer run would, rather than
re-applying events the builder has already seen.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from worker.domain import agent_events
from worker.domain.agent_events import (
    AgentEvent,
    ModelTurnEnded,
    TokenDelta,
    ToolEnded,
    ToolStarted,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN = FIXTURES / "run.jsonl.gz"
USER_MESSAGE = (
    "Plan the work, look around the workspace, delegate the research, then work through it."
)
"""The human message the recorded run answered (the StatusBuilder's `user_message`)."""


class FixtureMissing(RuntimeError):
    """The recorded run is not there; `python -m bench.record` makes it."""


def load_run(path: Path = RUN) -> list[AgentEvent]:
    if not path.exists():
        raise FixtureMissing(f"{path} is missing; record it with `python -m bench.record`")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [agent_events.loads(line) for line in lines if line.strip()]


def save_run(events: Sequence[AgentEvent], meta: dict[str, Any], path: Path = RUN) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the file byte-identical when the same events are written again.
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed,
    ):
        for event in events:
            packed.write((agent_events.dumps(event) + "\n").encode("utf-8"))
    meta_path(path).write_text(json.dumps(meta, indent=1) + "\n")


def meta_path(run: Path) -> Path:
    """`run.meta.json` beside `run.jsonl.gz`."""
    return run.with_name(run.name.removesuffix(".gz").removesuffix(".jsonl") + ".meta.json")


def load_meta(path: Path = RUN) -> dict[str, Any]:
    meta = meta_path(path)
    return dict(json.loads(meta.read_text())) if meta.exists() else {}


def _suffixed(value: str, suffix: str) -> str:
    return value + suffix if value else value


def with_fresh_ids(event: AgentEvent, suffix: str) -> AgentEvent:
    """The same event as if a later part of the run had produced it: every id gets `suffix`."""
    sub = _suffixed(event.sub_agent_id, suffix)
    if isinstance(event, TokenDelta):
        return dataclasses.replace(event, message_id=event.message_id + suffix, sub_agent_id=sub)
    if isinstance(event, ModelTurnEnded):
        calls = tuple(dataclasses.replace(c, id=c.id + suffix) for c in event.tool_calls)
        return dataclasses.replace(
            event, message_id=event.message_id + suffix, tool_calls=calls, sub_agent_id=sub
        )
    if isinstance(event, ToolStarted | ToolEnded):
        return dataclasses.replace(
            event, tool_call_id=event.tool_call_id + suffix, sub_agent_id=sub
        )
    raise TypeError(f"not an agent event: {event!r}")


def copies(base: Sequence[AgentEvent]) -> Iterator[AgentEvent]:
    """The recording, then endless continuations of it with fresh ids."""
    yield from base
    n = 1
    while True:
        suffix = f"~{n}"
        for event in base:
            yield with_fresh_ids(event, suffix)
        n += 1


def scaled(base: Sequence[AgentEvent], count: int) -> list[AgentEvent]:
    """The first `count` events of the recording and its continuations."""
    if not base:
        raise ValueError("the recorded run has no events")
    out: list[AgentEvent] = []
    for event in copies(base):
        if len(out) >= count:
            break
        out.append(event)
    return out


def composition(events: Sequence[AgentEvent]) -> dict[str, int]:
    """How many events of each kind, and the tools and sub-agents they involve."""
    kinds = Counter(type(e).__name__ for e in events)
    tools = Counter(e.name for e in events if isinstance(e, ToolStarted))
    return {
        "events": len(events),
        **{f"events.{k}": v for k, v in sorted(kinds.items())},
        **{f"tool_calls.{k}": v for k, v in sorted(tools.items())},
        "sub_agent_events": sum(1 for e in events if e.sub_agent_id),
    }
