"""The status tells the whole story of a recorded run: checked against the raw stream itself.

The recording (`tests/fixtures/raw/deep.jsonl.gz`, re-recorded by `tests/fixtures/record_raw.py`)
holds the graph's own stream items of a deep run: two rounds of todos, multi-turn `researcher`
sub-agents, and deepagents' summarisation calling the model inside the graph (in the agent and
in the sub-agents). The items go through the real `EventNormalizer` and `StatusBuilder`; every
expectation here is computed from the raw items (messages chunks, task start and result items),
never from the normaliser's events or the builder.
"""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage

from worker.agent.events import EventNormalizer
from worker.domain.agent_events import ModelTurnEnded, TokenDelta, ToolStarted
from worker.domain.status_builder import SUB_AGENT_MESSAGES, StatusBuilder

_CODEC = Path(__file__).parents[1] / "fixtures" / "raw_items.py"


def _load_raw(name: str) -> tuple[dict[str, Any], list[Any]]:
    spec = importlib.util.spec_from_file_location("raw_items", _CODEC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    header, items = module.load_raw(name)
    return header, items


class TickingClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


# -- facts from the raw items -----------------------------------------------------------------


@dataclass
class Call:
    """One model call as the `messages` stream shows it: its pieces' usage added up."""

    who: str  # "agent", "sub_agent" or "helper:<lc_source>"
    sub_agent: str  # the `task` call id of the sub-agent the call ran in, or ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass
class Facts:
    calls: dict[str, Call] = field(default_factory=dict)
    todo_lists: list[list[tuple[str, str]]] = field(default_factory=list)
    todo_call_ids: list[str] = field(default_factory=list)
    sub_texts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    sub_turn_calls: dict[str, list[list[str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    task_ids: dict[str, str] = field(default_factory=dict)  # pregel task id -> tool call id


def _sub_agent_of(namespace: tuple[str, ...], facts: Facts) -> str:
    for segment in namespace:
        task = segment.partition(":")[2]
        if task in facts.task_ids:
            return facts.task_ids[task]
    return ""


def facts_of(items: list[Any]) -> Facts:
    facts = Facts()
    failed_todo_calls: set[str] = set()
    for namespace, mode, data in items:
        if mode == "tasks" and "input" in data and data["name"] == "tools":
            for call in data["input"] if isinstance(data["input"], list) else [data["input"]]:
                if isinstance(call, Mapping) and call.get("name") == "task":
                    facts.task_ids[data["id"]] = call["id"]
                mine = not namespace  # the agent's own plan, not a sub-agent's
                if isinstance(call, Mapping) and call.get("name") == "write_todos" and mine:
                    todos = call["args"]["todos"]
                    facts.todo_lists.append([(t["content"], t["status"]) for t in todos])
                    facts.todo_call_ids.append(call["id"])
        sub = _sub_agent_of(namespace, facts)
        if mode == "messages":
            message, meta = data
            if not isinstance(message, AIMessage) or not message.id:
                continue
            source = meta.get("lc_source") or ("internal" if meta.get("lc_internal_call") else "")
            who = f"helper:{source}" if source else "sub_agent" if sub else "agent"
            call = facts.calls.setdefault(message.id, Call(who=who, sub_agent=sub))
            usage = message.usage_metadata
            if usage:
                call.input_tokens += usage["input_tokens"]
                call.output_tokens += usage["output_tokens"]
                call.total_tokens += usage["total_tokens"]
            call.model = str(message.response_metadata.get("model_name") or call.model)
        elif mode == "tasks" and "result" in data and sub:
            writes = data["result"]
            messages = writes.get("messages", []) if isinstance(writes, Mapping) else []
            for message in messages if isinstance(messages, list) else [messages]:
                if isinstance(message, AIMessage) and not isinstance(message, AIMessageChunk):
                    if message.text:
                        facts.sub_texts[sub].append(message.text)
                    facts.sub_turn_calls[sub].append([c["id"] for c in message.tool_calls])
        elif mode == "tasks" and "result" in data and not namespace:
            writes = data["result"]
            messages = writes.get("messages", []) if isinstance(writes, Mapping) else []
            for message in messages if isinstance(messages, list) else [messages]:
                if isinstance(message, ToolMessage) and message.status == "error":
                    failed_todo_calls.add(message.tool_call_id)
    kept = [
        (i, todos)
        for i, todos in zip(facts.todo_call_ids, facts.todo_lists, strict=True)
        if i not in failed_todo_calls
    ]
    facts.todo_call_ids = [i for i, _ in kept]
    facts.todo_lists = [todos for _, todos in kept]
    return facts


def replay(items: list[Any], message: str) -> StatusBuilder:
    builder = StatusBuilder(user_message=message, clock=TickingClock())
    builder.start()
    normalizer = EventNormalizer()
    for item in items:
        for event in normalizer.normalize(item):
            builder.apply(event)
    builder.complete()
    return builder


@pytest.fixture(scope="module")
def run() -> tuple[Facts, api_pb2.AgentExecutionStatus, StatusBuilder]:
    header, items = _load_raw("deep")
    builder = replay(items, header["message"])
    return facts_of(items), builder.snapshot(), builder


def metadata(struct: Any) -> dict[str, Any]:
    return dict(json_format.MessageToDict(struct))


def _sum(calls: list[Call]) -> tuple[int, int, int, int]:
    return (
        sum(c.input_tokens for c in calls),
        sum(c.output_tokens for c in calls),
        sum(c.total_tokens for c in calls),
        len(calls),
    )


def _tokens(usage: api_pb2.TokenUsage) -> tuple[int, int, int, int]:
    return (usage.input_tokens, usage.output_tokens, usage.total_tokens, usage.model_calls)


# -- 1. usage ----------------------------------------------------------------------------------


def test_the_recording_has_helper_calls_in_the_agent_and_in_sub_agents(run: Any) -> None:
    facts, _, _ = run
    helpers = [c for c in facts.calls.values() if c.who.startswith("helper:")]
    assert any(not c.sub_agent for c in helpers)
    assert any(c.sub_agent for c in helpers)
    assert all(c.total_tokens > 0 for c in facts.calls.values())


def test_usage_counts_every_model_call_attributed_once(run: Any) -> None:
    facts, status, _ = run
    calls = list(facts.calls.values())
    usage = status.usage
    assert _tokens(usage.total) == _sum(calls)
    assert _tokens(usage.agent) == _sum([c for c in calls if c.who == "agent"])
    assert _tokens(usage.sub_agents) == _sum([c for c in calls if c.who == "sub_agent"])
    kinds = {c.who.removeprefix("helper:") for c in calls if c.who.startswith("helper:")}
    assert set(usage.helpers) == kinds == {"summarization"}
    for kind in kinds:
        expected = _sum([c for c in calls if c.who == f"helper:{kind}"])
        assert _tokens(usage.helpers[kind]) == expected
    models = {c.model for c in calls}
    assert set(usage.by_model) == models
    for model in models:
        assert _tokens(usage.by_model[model]) == _sum([c for c in calls if c.model == model])


def test_each_sub_agent_carries_its_own_turns_usage(run: Any) -> None:
    facts, status, _ = run
    assert len(status.sub_agent_executions) == 3
    for sub in status.sub_agent_executions:
        own = [c for c in facts.calls.values() if c.who == "sub_agent" and c.sub_agent == sub.id]
        meta = metadata(sub.metadata)
        inp, out, total, count = _sum(own)
        assert meta["usage"] == {
            "input_tokens": str(inp),
            "output_tokens": str(out),
            "total_tokens": str(total),
            "model_calls": str(count),
        }
        assert meta["model_turns"] == str(count)
        helpers = [
            c for c in facts.calls.values() if c.who.startswith("helper:") and c.sub_agent == sub.id
        ]
        inp, out, total, count = _sum(helpers)
        assert helpers and meta["helper_usage"] == {
            "input_tokens": str(inp),
            "output_tokens": str(out),
            "total_tokens": str(total),
            "model_calls": str(count),
        }


# -- 2. todo identity --------------------------------------------------------------------------


def test_the_status_shows_the_agents_current_todo_list(run: Any) -> None:
    facts, status, _ = run
    assert len(facts.todo_lists) >= 4
    current = facts.todo_lists[-1]
    shown = sorted((t.content, enum_pb2.TodoStatus.Name(t.status)) for t in status.todos.values())
    assert shown == sorted((c, "TODO_" + s.upper()) for c, s in current)
    assert all(key == item.id for key, item in status.todos.items())


def _history(status: api_pb2.AgentExecutionStatus, facts: Facts) -> Iterator[list[str]]:
    calls = {t.id: t for t in status.tool_calls}
    for call_id in facts.todo_call_ids:
        yield list(metadata(calls[call_id].component_metadata.metadata)["todo_ids"])


def test_a_new_todo_gets_a_new_id_and_a_finished_one_never_goes_back(run: Any) -> None:
    facts, status, _ = run
    content_of: dict[str, str] = {}
    id_of: dict[str, str] = {}
    statuses: dict[str, list[str]] = defaultdict(list)
    for todos, ids in zip(facts.todo_lists, _history(status, facts), strict=True):
        assert len(ids) == len(todos) == len(set(ids))
        for (content, state), todo_id in zip(todos, ids, strict=True):
            assert content_of.setdefault(todo_id, content) == content  # one id, one todo
            assert id_of.setdefault(content, todo_id) == todo_id
            statuses[todo_id].append(state)
    distinct = {content for todos in facts.todo_lists for content, _ in todos}
    assert len(content_of) == len(distinct) == 6  # two rounds of three
    for todo_id, seen in statuses.items():
        if "completed" in seen:
            first = seen.index("completed")
            assert set(seen[first:]) == {"completed"}, (todo_id, seen)


# -- 3. sub-agent turns ------------------------------------------------------------------------


def test_every_sub_agent_text_is_kept_in_its_messages(run: Any) -> None:
    facts, status, _ = run
    subs = {s.id: s for s in status.sub_agent_executions}
    assert set(facts.sub_texts) == set(subs)
    for sub_id, texts in facts.sub_texts.items():
        assert len(texts) >= 4
        ai = [m for m in subs[sub_id].messages if m.type == enum_pb2.MESSAGE_AI]
        assert [m.content for m in ai] == texts
        assert [[c.id for c in m.tool_calls] for m in ai] == facts.sub_turn_calls[sub_id]
        assert subs[sub_id].output == texts[-1]
        assert all(not m.is_streaming and "streaming" not in metadata(m.metadata) for m in ai)


def test_the_wire_encoding_carries_the_same_status(run: Any) -> None:
    _, status, builder = run
    assert builder.encoded().message() == status


# -- 5. counts in metadata are integers --------------------------------------------------------


def _struct_leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, Mapping):
        for inner in value.values():
            yield from _struct_leaves(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _struct_leaves(inner)
    else:
        yield value


def _metadata_structs(value: Any) -> Iterator[Any]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if key == "metadata":
                yield inner
            else:
                yield from _metadata_structs(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _metadata_structs(inner)


def test_no_count_in_the_json_status_is_a_float(run: Any) -> None:
    _, status, _ = run
    document = json.loads(json_format.MessageToJson(status))
    structs = list(_metadata_structs(document))
    assert structs
    for struct in structs:
        for leaf in _struct_leaves(struct):
            assert not isinstance(leaf, float | int) or isinstance(leaf, bool), struct
    total = document["usage"]["total"]["totalTokens"]
    assert isinstance(total, str) and total.isdigit()  # ProtoJSON's int64


# -- the bound on a sub-agent's conversation ---------------------------------------------------


def test_a_long_sub_agents_conversation_keeps_its_first_and_latest_turns_and_says_so() -> None:
    builder = StatusBuilder(clock=TickingClock())
    builder.apply(ToolStarted(tool_call_id="t", name="task", args={"description": "dig"}))
    turns = SUB_AGENT_MESSAGES * 2 + 7
    for n in range(turns):
        builder.apply(TokenDelta(message_id=f"m{n}", text=f"turn {n} ", sub_agent_id="t"))
        builder.apply(ModelTurnEnded(message_id=f"m{n}", text=f"turn {n}", sub_agent_id="t"))
    (sub,) = builder.snapshot().sub_agent_executions
    assert len(sub.messages) == SUB_AGENT_MESSAGES + 1
    half = SUB_AGENT_MESSAGES // 2
    texts = [m.content for m in sub.messages]
    assert texts[:half] == [f"turn {n}" for n in range(half)]
    assert texts[half + 1 :] == [f"turn {n}" for n in range(turns - half, turns)]
    marker = sub.messages[half]
    assert marker.type == enum_pb2.MESSAGE_SYSTEM
    omitted = turns - SUB_AGENT_MESSAGES
    assert metadata(marker.metadata) == {"omitted_messages": str(omitted)}
    assert f"{omitted} earlier message(s)" in marker.content
    assert metadata(sub.metadata)["model_turns"] == str(turns)
    assert builder.encoded().message() == builder.snapshot()


def test_resume_keeps_usage_and_sub_agent_messages_without_counting_twice(run: Any) -> None:
    _, status, _ = run
    resumed = StatusBuilder(initial=status, clock=TickingClock())
    again = resumed.snapshot()
    assert again.usage == status.usage
    assert [list(s.messages) for s in again.sub_agent_executions] == [
        list(s.messages) for s in status.sub_agent_executions
    ]
    main_turn = next(c for c in status.messages if c.type == enum_pb2.MESSAGE_AI)
    message_id = metadata(main_turn.metadata)["message_id"]
    resumed.apply(ModelTurnEnded(message_id=message_id, text=main_turn.content))
    assert resumed.snapshot().usage == status.usage


def test_a_sub_agent_turn_cut_off_by_a_failure_stops_streaming() -> None:
    builder = StatusBuilder(clock=TickingClock())
    builder.apply(ToolStarted(tool_call_id="t", name="task", args={"description": "dig"}))
    builder.apply(TokenDelta(message_id="m1", text="half a thou", sub_agent_id="t"))
    (sub,) = builder.snapshot().sub_agent_executions
    assert metadata(sub.messages[0].metadata)["streaming"] is True
    builder.fail("the model provider went away")
    (sub,) = builder.snapshot().sub_agent_executions
    assert sub.messages[0].content == "half a thou"
    assert "streaming" not in metadata(sub.messages[0].metadata)
    assert sub.status == enum_pb2.SUB_AGENT_FAILED
    assert builder.encoded().message() == builder.snapshot()
