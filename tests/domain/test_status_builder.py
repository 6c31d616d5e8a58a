"""The StatusBuilder, replaying event streams recorded from real deep-agent runs.

The recordings (`tests/fixtures/events/*.jsonl`, re-recorded by `tests/fixtures/record_events.py`)
come from the Graphton agent driven by the scripted model: `demo` (todos, file tools, a shell
command, a sub-agent), `fail-tool` (a failing call and the recovery), `subagents` (two sub-agents
running at once).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format
from structlog.testing import capture_logs

from worker.domain import agent_events
from worker.domain.agent_events import (
    AgentEvent,
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
    Usage,
)
from worker.domain.status_builder import StatusBuilder, rfc3339

EVENTS = Path(__file__).parent.parent / "fixtures" / "events"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class TickingClock:
    """Each reading is one millisecond after the previous one."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def recording(name: str) -> tuple[str, list[AgentEvent]]:
    lines = (EVENTS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])["recording"]
    return header["message"], [agent_events.loads(line) for line in lines[1:] if line]


def run(name: str, **kwargs: Any) -> tuple[StatusBuilder, list[AgentEvent]]:
    message, events = recording(name)
    builder = StatusBuilder(user_message=message, clock=TickingClock(), **kwargs)
    builder.start()
    for event in events:
        builder.apply(event)
    builder.complete()
    return builder, events


def main_turns(events: Iterable[AgentEvent]) -> list[ModelTurnEnded]:
    return [e for e in events if isinstance(e, ModelTurnEnded) and not e.sub_agent_id]


def tool_by_name(status: api_pb2.AgentExecutionStatus, name: str) -> list[api_pb2.ToolCall]:
    return [t for t in status.tool_calls if t.name == name]


def metadata(message: Any) -> dict[str, Any]:
    return dict(json_format.MessageToDict(message))


# -- transcript -------------------------------------------------------------------------------


def test_user_message_opens_the_transcript_as_human() -> None:
    builder, _ = run("demo")
    first = builder.snapshot().messages[0]
    assert first.type == enum_pb2.MESSAGE_HUMAN
    assert first.content == "Tour the workspace and tell me what you find."


def test_each_model_turn_becomes_its_own_ai_message() -> None:
    builder, events = run("demo")
    status = builder.snapshot()
    turns = main_turns(events)
    ai = [m for m in status.messages if m.type == enum_pb2.MESSAGE_AI]
    assert len(turns) > 5
    assert [m.content for m in ai] == [t.text for t in turns]
    assert len({m.timestamp for m in ai}) == len(ai)


def test_streamed_tokens_show_in_the_open_turn_before_it_ends() -> None:
    message, events = recording("demo")
    builder = StatusBuilder(user_message=message, clock=TickingClock())
    first_turn = main_turns(events)[0]
    deltas = [
        e for e in events if isinstance(e, TokenDelta) and e.message_id == first_turn.message_id
    ]
    for delta in deltas[:3]:
        builder.apply(delta)
    open_turn = builder.snapshot().messages[-1]
    assert open_turn.type == enum_pb2.MESSAGE_AI
    assert open_turn.content == "".join(d.text for d in deltas[:3])
    assert metadata(open_turn.metadata)["streaming"] is True
    for delta in deltas[3:]:
        builder.apply(delta)
    builder.apply(first_turn)
    closed = builder.snapshot().messages[-1]
    assert closed.content == first_turn.text
    assert "streaming" not in metadata(closed.metadata)


def test_sub_agent_text_stays_out_of_the_main_transcript() -> None:
    builder, events = run("demo")
    sub_texts = {e.text for e in events if isinstance(e, ModelTurnEnded) and e.sub_agent_id}
    assert sub_texts
    assert not sub_texts & {m.content for m in builder.snapshot().messages}


def test_usage_and_model_name_are_in_ai_message_metadata() -> None:
    builder, events = run("demo")
    ai = [m for m in builder.snapshot().messages if m.type == enum_pb2.MESSAGE_AI]
    for message, turn in zip(ai, main_turns(events), strict=True):
        meta = metadata(message.metadata)
        assert meta["model"] == "scripted-demo"
        assert meta["message_id"] == turn.message_id
        assert turn.usage is not None
        # Counts are decimal strings: a Struct number is a double (`98.0` in some JSON).
        assert meta["usage"]["output_tokens"] == str(turn.usage.output_tokens)
        assert int(meta["usage"]["input_tokens"]) > 0


# -- tool calls -------------------------------------------------------------------------------


def test_tool_call_goes_running_then_completed_with_clean_result() -> None:
    message, events = recording("demo")
    builder = StatusBuilder(user_message=message, clock=TickingClock())
    seen: dict[str, list[int]] = {}
    for event in events:
        builder.apply(event)
        if isinstance(event, ToolStarted | ToolEnded) and event.name == "read_file":
            call = next(t for t in builder.snapshot().tool_calls if t.id == event.tool_call_id)
            seen.setdefault(call.id, []).append(call.status)
    (statuses,) = seen.values()
    assert statuses == [enum_pb2.TOOL_CALL_RUNNING, enum_pb2.TOOL_CALL_COMPLETED]
    (read,) = tool_by_name(builder.snapshot(), "read_file")
    assert read.result.startswith("# Notes")
    assert "ToolMessage" not in read.result
    assert read.started_at <= read.completed_at
    assert json_format.MessageToDict(read.args) == {"path": "/notes.md"}


def test_tool_calls_are_keyed_by_the_model_tool_call_id() -> None:
    builder, events = run("demo")
    requested = [c.id for t in main_turns(events) for c in t.tool_calls]
    listed = [t.id for t in builder.snapshot().tool_calls]
    assert set(requested) <= set(listed)
    assert len(listed) == len(set(listed))
    ai = [m for m in builder.snapshot().messages if m.type == enum_pb2.MESSAGE_AI]
    assert [c.id for m in ai for c in m.tool_calls] == requested


def test_every_tool_call_ends_completed_in_a_successful_run() -> None:
    builder, _ = run("demo")
    statuses = {t.name: t.status for t in builder.snapshot().tool_calls}
    assert set(statuses.values()) == {enum_pb2.TOOL_CALL_COMPLETED}
    assert {"write_todos", "ls", "write_file", "read_file", "edit_file", "execute", "task"} <= set(
        statuses
    )


def test_failed_tool_call_is_failed_with_error() -> None:
    builder, _ = run("fail-tool")
    failed, *later = tool_by_name(builder.snapshot(), "read_file")
    assert failed.status == enum_pb2.TOOL_CALL_FAILED
    assert "file_path" in failed.error
    assert failed.result == ""
    assert failed.completed_at
    assert [t.status for t in later] == [enum_pb2.TOOL_CALL_COMPLETED]
    assert builder.snapshot().messages[-1].content.startswith("Recovered")


def test_repeated_identical_calls_are_kept_as_separate_entries() -> None:
    builder, _ = run("subagents")
    listings = tool_by_name(builder.snapshot(), "ls")
    assert len(listings) == 2
    assert listings[0].args == listings[1].args
    assert listings[0].id != listings[1].id


def test_component_metadata_is_inferred_from_tool_names() -> None:
    builder = StatusBuilder(clock=TickingClock(), mcp_tools={"create_issue": "github"})
    calls: dict[str, dict[str, Any]] = {
        "read_file": {"file_path": "/a.txt"},
        "execute": {"command": "ls"},
        "write_todos": {"todos": []},
        "task": {"description": "x", "subagent_type": "general-purpose"},
        "create_issue": {"title": "bug"},
        "my_custom_tool": {},
    }
    for n, (name, args) in enumerate(calls.items()):
        builder.apply(ToolStarted(tool_call_id=f"c{n}", name=name, args=args))
    components = {
        t.name: (
            t.component_metadata.component_type,
            t.component_metadata.component_group,
            metadata(t.component_metadata.metadata),
        )
        for t in builder.snapshot().tool_calls
    }
    assert components == {
        "read_file": ("file", "filesystem", {"path": "/a.txt"}),
        "execute": ("terminal", "shell", {"command": "ls"}),
        "write_todos": ("todo", "planning", {}),
        "task": ("subagent", "delegation", {"subagent_type": "general-purpose"}),
        "create_issue": ("mcp", "github", {"server": "github"}),
        "my_custom_tool": ("tool", "custom", {}),
    }


def test_mcp_tool_calls_name_their_server_once_the_servers_are_known() -> None:
    builder = StatusBuilder(clock=TickingClock())
    builder.use_mcp_tools({"get_current_time": "time"})
    builder.apply(ToolStarted(tool_call_id="c1", name="get_current_time", args={}))
    builder.apply(ToolStarted(tool_call_id="c2", name="ls", args={}))

    slugs = {t.name: t.mcp_server_slug for t in builder.snapshot().tool_calls}

    assert slugs == {"get_current_time": "time", "ls": ""}


# -- todos ------------------------------------------------------------------------------------


def test_write_todos_populates_todos_with_stable_ids() -> None:
    message, events = recording("demo")
    builder = StatusBuilder(user_message=message, clock=TickingClock())
    snapshots: list[dict[str, tuple[str, int]]] = []
    for event in events:
        builder.apply(event)
        if isinstance(event, ToolEnded) and event.name == "write_todos":
            todos = builder.snapshot().todos
            snapshots.append({t.content: (t.id, t.status) for t in todos.values()})
    assert len(snapshots) >= 4
    first, last = snapshots[0], snapshots[-1]
    assert len(first) == 5
    assert {content: todo_id for content, (todo_id, _) in first.items()} == {
        content: todo_id for content, (todo_id, _) in last.items()
    }
    assert sorted(status for _, status in first.values()) == [
        enum_pb2.TODO_PENDING,
        enum_pb2.TODO_PENDING,
        enum_pb2.TODO_PENDING,
        enum_pb2.TODO_PENDING,
        enum_pb2.TODO_IN_PROGRESS,
    ]
    assert {status for _, status in last.values()} == {enum_pb2.TODO_COMPLETED}
    final = builder.snapshot().todos
    assert all(key == item.id for key, item in final.items())
    assert all(item.created_at <= item.updated_at for item in final.values())


def _write_todos(builder: StatusBuilder, call_id: str, todos: list[tuple[str, str]]) -> None:
    items = [{"content": c, "status": s} for c, s in todos]
    builder.apply(ToolStarted(tool_call_id=call_id, name="write_todos", args={"todos": items}))
    builder.apply(ToolEnded(tool_call_id=call_id, name="write_todos", result="ok"))


def test_reworded_or_moved_todo_keeps_its_id_and_a_dropped_one_leaves_the_list() -> None:
    builder = StatusBuilder(clock=TickingClock())
    _write_todos(builder, "c1", [("Read the spec", "in_progress"), ("Write the code", "pending")])
    before = {t.content: t.id for t in builder.snapshot().todos.values()}
    _write_todos(
        builder,
        "c2",
        [
            ("Add tests", "pending"),
            ("Read the spec", "completed"),
            ("Write the code carefully", "in_progress"),
        ],
    )
    middle = {t.content: t for t in builder.snapshot().todos.values()}
    assert middle["Write the code carefully"].id == before["Write the code"]
    _write_todos(builder, "c3", [("Add tests", "in_progress"), ("Read the spec", "completed")])
    status = builder.snapshot()
    after = {t.content: t for t in status.todos.values()}
    assert set(after) == {"Add tests", "Read the spec"}  # the current list
    assert after["Read the spec"].id == before["Read the spec"]
    assert after["Add tests"].id not in before.values()
    assert after["Add tests"].status == enum_pb2.TODO_IN_PROGRESS
    # The history: each write_todos call says which ids its items got and which were dropped.
    (last,) = [t for t in status.tool_calls if t.id == "c3"]
    history = metadata(last.component_metadata.metadata)
    assert history["todo_ids"] == [after["Add tests"].id, after["Read the spec"].id]
    assert history["dropped_todo_ids"] == [before["Write the code"]]


def test_a_finished_todo_never_goes_back_and_a_new_round_gets_new_ids() -> None:
    survey1, write1 = "Round 1: survey the workspace", "Round 1: write the findings file"
    survey2 = "Round 2: survey the workspace"
    builder = StatusBuilder(clock=TickingClock())
    _write_todos(builder, "c1", [(survey1, "completed"), (write1, "pending")])
    first = {t.content: t.id for t in builder.snapshot().todos.values()}
    # A new round in similar words; the same words as a finished todo, opened again.
    _write_todos(builder, "c2", [(survey2, "in_progress"), (survey1, "pending")])
    second = {t.content: t for t in builder.snapshot().todos.values()}
    assert second[survey2].id not in first.values()
    assert second[survey1].id not in first.values()
    assert set(second) == {survey2, survey1}
    # An open todo reworded keeps its id; a finished one restated as finished keeps it too.
    reworded = "Round 2: survey the whole workspace"
    _write_todos(builder, "c3", [(reworded, "completed"), (survey1, "completed")])
    third = {t.content: t.id for t in builder.snapshot().todos.values()}
    assert third[reworded] == second[survey2].id
    assert third[survey1] == second[survey1].id
    _write_todos(builder, "c4", [(reworded, "completed"), (survey1, "completed")])
    assert {t.content: t.id for t in builder.snapshot().todos.values()} == third


def test_emptied_todo_list_keeps_the_last_items_with_unfinished_ones_cancelled() -> None:
    builder = StatusBuilder(clock=TickingClock())
    _write_todos(builder, "c1", [("one", "completed"), ("two", "in_progress")])
    _write_todos(builder, "c2", [])
    todos = {t.content: t.status for t in builder.snapshot().todos.values()}
    assert todos == {"one": enum_pb2.TODO_COMPLETED, "two": enum_pb2.TODO_CANCELLED}


def test_a_sub_agents_todo_list_is_not_the_agents_plan() -> None:
    builder = StatusBuilder(clock=TickingClock())
    _write_todos(builder, "c1", [("the agent's step", "in_progress")])
    items = [{"content": "the sub-agent's step", "status": "pending"}]
    builder.apply(ToolStarted(tool_call_id="t", name="task", args={"description": "d"}))
    builder.apply(
        ToolStarted(tool_call_id="s1", name="write_todos", args={"todos": items}, sub_agent_id="t")
    )
    builder.apply(ToolEnded(tool_call_id="s1", name="write_todos", result="ok", sub_agent_id="t"))
    assert [t.content for t in builder.snapshot().todos.values()] == ["the agent's step"]


def test_failed_write_todos_leaves_todos_unchanged() -> None:
    builder = StatusBuilder(clock=TickingClock())
    _write_todos(builder, "c1", [("Step one", "pending")])
    builder.apply(ToolStarted(tool_call_id="c2", name="write_todos", args={"todos": []}))
    builder.apply(ToolEnded(tool_call_id="c2", name="write_todos", result="", error="parallel"))
    (todo,) = builder.snapshot().todos.values()
    assert todo.status == enum_pb2.TODO_PENDING


# -- sub-agents -------------------------------------------------------------------------------


def test_task_tool_becomes_sub_agent_execution() -> None:
    builder, _ = run("demo")
    status = builder.snapshot()
    (task,) = tool_by_name(status, "task")
    (sub,) = status.sub_agent_executions
    assert sub.id == task.id
    assert sub.name == "general-purpose"
    assert sub.input.startswith("Research the workspace")
    assert sub.output == task.result
    assert sub.output.startswith("Research summary")
    assert sub.status == enum_pb2.SUB_AGENT_COMPLETED
    assert sub.started_at and sub.completed_at and sub.started_at <= sub.completed_at
    meta = metadata(sub.metadata)
    assert meta["model_turns"] == "2"
    assert meta["tool_calls"] == "1"
    assert meta["model"] == "scripted-subagent"
    inner = [
        t
        for t in status.tool_calls
        if metadata(t.component_metadata.metadata).get("sub_agent_id") == sub.id
    ]
    assert [t.name for t in inner] == ["ls"]
    assert metadata(inner[0].component_metadata.metadata)["sub_agent_name"] == "general-purpose"


def test_sub_agent_shows_its_latest_text_while_it_runs() -> None:
    message, events = recording("demo")
    builder = StatusBuilder(user_message=message, clock=TickingClock())
    outputs = []
    for event in events:
        builder.apply(event)
        if isinstance(event, TokenDelta) and event.sub_agent_id:
            (sub,) = builder.snapshot().sub_agent_executions
            assert sub.status == enum_pb2.SUB_AGENT_IN_PROGRESS
            outputs.append(sub.output)
    assert outputs
    assert outputs[0] and outputs[-1].startswith("Research summary")


def test_concurrent_sub_agents_are_attributed_to_their_own_task_call() -> None:
    builder, _ = run("subagents")
    status = builder.snapshot()
    subs = {s.id: s for s in status.sub_agent_executions}
    assert len(subs) == 2
    for sub in subs.values():
        assert sub.status == enum_pb2.SUB_AGENT_COMPLETED
        topic = sub.input.split(" and report")[0].removeprefix("Look into ")
        assert topic in sub.output
    owners = [
        metadata(t.component_metadata.metadata)["sub_agent_id"] for t in tool_by_name(status, "ls")
    ]
    assert sorted(owners) == sorted(subs)


def test_failed_task_fails_its_sub_agent() -> None:
    builder = StatusBuilder(clock=TickingClock())
    args = {"description": "dig", "subagent_type": "researcher"}
    builder.apply(ToolStarted(tool_call_id="t1", name="task", args=args))
    builder.apply(ToolEnded(tool_call_id="t1", name="task", result="", error="boom"))
    (sub,) = builder.snapshot().sub_agent_executions
    assert (sub.name, sub.status, sub.error) == ("researcher", enum_pb2.SUB_AGENT_FAILED, "boom")


# -- robustness -------------------------------------------------------------------------------


def test_malformed_event_is_skipped() -> None:
    message, events = recording("fail-tool")
    builder = StatusBuilder(user_message=message, clock=TickingClock())
    # Ill-typed on purpose (hence the ignores): what a buggy normaliser could hand the builder.
    garbage: list[object] = [
        "not an event",
        {"type": "ToolEnded"},
        None,
        TokenDelta(message_id="", text="x"),
        TokenDelta(message_id="m", text=None),  # type: ignore[arg-type]
        ToolStarted(tool_call_id="", name="ls"),
        ToolEnded(tool_call_id="c", name="ls", result=42),  # type: ignore[arg-type]
        ModelTurnEnded(message_id="m", text="t", tool_calls=("x",)),  # type: ignore[arg-type]
        ToolStarted(tool_call_id="c", name="ls", args=["no"]),  # type: ignore[arg-type]
    ]
    with capture_logs() as logs:
        for index, event in enumerate(events):
            builder.apply(garbage[index % len(garbage)])
            builder.apply(event)
    assert [r["event"] for r in logs] == ["malformed_event_skipped"] * len(events)
    assert all(r["log_level"] == "warning" and r["reason"] for r in logs)
    clean, _ = run("fail-tool")
    assert builder.counts == clean.counts


def test_bad_todo_list_is_skipped_without_failing_the_tool() -> None:
    builder = StatusBuilder(clock=TickingClock())
    builder.apply(ToolStarted(tool_call_id="c", name="write_todos", args={"todos": "oops"}))
    with capture_logs() as logs:
        builder.apply(ToolEnded(tool_call_id="c", name="write_todos", result="ok"))
    assert logs[0]["event"] == "malformed_event_skipped"
    assert builder.snapshot().tool_calls[0].status == enum_pb2.TOOL_CALL_COMPLETED


def test_replayed_events_update_entries_in_place() -> None:
    once, events = run("demo")
    message, _ = recording("demo")
    twice = StatusBuilder(user_message=message, clock=TickingClock())
    for event in events + [e for e in events if not isinstance(e, TokenDelta)]:
        twice.apply(event)
    assert twice.counts == once.counts
    assert [m.content for m in twice.snapshot().messages] == [
        m.content for m in once.snapshot().messages
    ]


def test_recorded_events_round_trip_through_json() -> None:
    for name in ("demo", "fail-tool", "subagents"):
        _, events = recording(name)
        assert [agent_events.loads(agent_events.dumps(e)) for e in events] == events


# -- phases, resume, redaction ----------------------------------------------------------------


def test_phases_set_timestamps_from_the_injected_clock() -> None:
    clock = TickingClock()
    builder = StatusBuilder(user_message="hi", clock=clock)
    assert builder.snapshot().phase == enum_pb2.EXECUTION_PENDING
    started = builder.start()
    assert started.significant
    status = builder.snapshot()
    assert status.phase == enum_pb2.EXECUTION_IN_PROGRESS
    assert RFC3339_UTC.match(status.started_at)
    assert builder.complete().significant
    status = builder.snapshot()
    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert status.completed_at == rfc3339(clock.now)
    assert status.started_at < status.completed_at


def test_every_timestamp_is_rfc3339_utc() -> None:
    builder, _ = run("demo")
    data = json_format.MessageToDict(builder.snapshot(), preserving_proto_field_name=True)
    stamps: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"timestamp", "started_at", "completed_at", "created_at", "updated_at"}:
                    stamps.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    assert len(stamps) > 50
    assert all(RFC3339_UTC.match(s) for s in stamps)


def test_fail_keeps_the_transcript_and_fails_unfinished_work() -> None:
    message, events = recording("demo")
    builder = StatusBuilder(user_message=message, clock=TickingClock())
    builder.start()
    cut = next(i for i, e in enumerate(events) if isinstance(e, ToolStarted) and e.name == "task")
    for event in events[: cut + 3]:
        builder.apply(event)
    before = builder.counts
    builder.fail("model provider unavailable")
    status = builder.snapshot()
    assert status.phase == enum_pb2.EXECUTION_FAILED
    assert status.error == "model provider unavailable"
    assert status.completed_at
    assert builder.counts == before
    assert not [
        t
        for t in status.tool_calls
        if t.status in (enum_pb2.TOOL_CALL_RUNNING, enum_pb2.TOOL_CALL_PENDING)
    ]
    (sub,) = status.sub_agent_executions
    assert sub.status == enum_pb2.SUB_AGENT_FAILED


def test_cancel_marks_the_status_cancelled() -> None:
    builder = StatusBuilder(user_message="hi", clock=TickingClock())
    builder.start()
    builder.apply(ToolStarted(tool_call_id="c", name="execute", args={"command": "sleep 9"}))
    builder.cancel()
    status = builder.snapshot()
    assert status.phase == enum_pb2.EXECUTION_CANCELLED
    assert status.tool_calls[0].status == enum_pb2.TOOL_CALL_FAILED
    assert status.tool_calls[0].error == "execution cancelled"


def test_resume_continues_transcript_without_duplicating_human_message() -> None:
    message, events = recording("demo")
    full, _ = run("demo")
    first = StatusBuilder(user_message=message, clock=TickingClock())
    first.start()
    cut = len(events) // 2
    for event in events[:cut]:
        first.apply(event)
    stored = first.snapshot()

    resumed = StatusBuilder(user_message=message, initial=stored, clock=TickingClock())
    resumed.start()
    for event in events[cut:]:
        resumed.apply(event)
    resumed.complete()
    status = resumed.snapshot()
    assert [m.type for m in status.messages].count(enum_pb2.MESSAGE_HUMAN) == 1
    assert status.started_at == stored.started_at
    assert [m.content for m in status.messages] == [m.content for m in full.snapshot().messages]
    assert resumed.counts == full.counts
    assert {t.id for t in status.todos.values()} == {t.id for t in full.snapshot().todos.values()}


def test_resume_drops_a_turn_cut_off_mid_stream() -> None:
    first = StatusBuilder(user_message="go", clock=TickingClock())
    first.apply(ModelTurnEnded(message_id="m1", text="Planning."))
    first.apply(TokenDelta(message_id="m2", text="Half a sen"))
    resumed = StatusBuilder(user_message="go", initial=first.snapshot(), clock=TickingClock())
    resumed.apply(TokenDelta(message_id="m3", text="A whole sentence."))
    resumed.apply(ModelTurnEnded(message_id="m3", text="A whole sentence."))
    assert [m.content for m in resumed.snapshot().messages] == [
        "go",
        "Planning.",
        "A whole sentence.",
    ]


def test_resume_continues_todo_ids_without_reusing_them() -> None:
    first = StatusBuilder(clock=TickingClock())
    _write_todos(first, "c1", [("one", "pending"), ("two", "pending")])
    resumed = StatusBuilder(initial=first.snapshot(), clock=TickingClock())
    _write_todos(resumed, "c2", [("one", "completed"), ("two", "pending"), ("three", "pending")])
    ids = {t.content: t.id for t in resumed.snapshot().todos.values()}
    before = {t.content: t.id for t in first.snapshot().todos.values()}
    assert ids["one"] == before["one"] and ids["two"] == before["two"]
    assert ids["three"] not in before.values()


def test_secrets_are_redacted_from_text_results_errors_and_args() -> None:
    def redact(text: str) -> str:
        return text.replace("s3cr3t-key", "***")

    builder = StatusBuilder(user_message="use s3cr3t-key", redact=redact, clock=TickingClock())
    builder.apply(TokenDelta(message_id="m", text="the key is s3cr"))
    builder.apply(TokenDelta(message_id="m", text="3t-key"))
    builder.apply(ToolStarted(tool_call_id="c", name="execute", args={"command": "x s3cr3t-key"}))
    builder.apply(ToolEnded(tool_call_id="c", name="execute", result="", error="bad s3cr3t-key"))
    builder.apply(ToolStarted(tool_call_id="d", name="read_file", args={"file_path": "/f"}))
    builder.apply(ToolEnded(tool_call_id="d", name="read_file", result="s3cr3t-key"))
    builder.fail("crashed with s3cr3t-key")
    assert "s3cr3t-key" not in str(builder.snapshot())


# -- the contract with the update policy ------------------------------------------------------


def test_apply_reports_which_changes_are_significant() -> None:
    builder = StatusBuilder(clock=TickingClock())
    delta = builder.apply(TokenDelta(message_id="m", text="Hi"))
    assert (delta.changed, delta.significant) == (True, False)
    no_op = builder.apply(TokenDelta(message_id="m", text=""))
    assert not no_op.changed
    turn = builder.apply(
        ModelTurnEnded(message_id="m", text="Hi", tool_calls=(ToolCallRequest("c", "ls", {}),))
    )
    assert turn.significant
    assert builder.apply(ToolStarted(tool_call_id="c", name="ls")).significant
    assert not builder.apply(ToolStarted(tool_call_id="c", name="ls")).changed
    assert builder.apply(ToolEnded(tool_call_id="c", name="ls", result="a")).significant
    assert not builder.apply(ToolEnded(tool_call_id="c", name="ls", result="a")).changed
    plain = builder.apply(ModelTurnEnded(message_id="m2", text="Done.", usage=Usage(1, 2, 3)))
    assert (plain.changed, plain.significant) == (True, False)


def test_counts_follow_the_state() -> None:
    builder, _ = run("demo")
    status = builder.snapshot()
    counts = builder.counts
    assert counts.messages == len(status.messages)
    assert counts.tool_calls == len(status.tool_calls)
    assert counts.todos == len(status.todos) == 5
    assert counts.sub_agents == len(status.sub_agent_executions) == 1


def test_snapshot_is_a_fresh_proto_each_time() -> None:
    builder, _ = run("demo")
    one = builder.snapshot()
    one.messages[0].content = "changed"
    one.tool_calls[0].status = enum_pb2.TOOL_CALL_FAILED
    two = builder.snapshot()
    assert two.messages[0].content != "changed"
    assert two.tool_calls[0].status == enum_pb2.TOOL_CALL_COMPLETED


# -- performance ------------------------------------------------------------------------------


def synthetic_run(turns: int, tokens_per_turn: int = 40) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    for n in range(turns):
        message_id = f"m{n}"
        events += [TokenDelta(message_id=message_id, text="word ") for _ in range(tokens_per_turn)]
        call = ToolCallRequest(f"c{n}", "write_file", {"file_path": f"/f{n}", "content": "x"})
        events.append(
            ModelTurnEnded(message_id, "word " * tokens_per_turn, (call,), Usage(10, 40, 50), "m")
        )
        events.append(ToolStarted(tool_call_id=call.id, name=call.name, args=call.args))
        events.append(ToolEnded(tool_call_id=call.id, name=call.name, result="ok"))
    return events


def test_a_new_event_rebuilds_only_the_entry_it_touches() -> None:
    """Why the cost per event stays flat however long the run (the rate itself is measured by
    `make bench`, not asserted here): after an update, a token for the open turn drops only that
    turn's cached encoding; every earlier entry's bytes are reused as they are."""
    builder = StatusBuilder(user_message="long run")
    for event in synthetic_run(200):
        builder.apply(event)
    builder.apply(TokenDelta(message_id="open", text="still "))
    before = builder.parts()

    builder.apply(TokenDelta(message_id="open", text="going"))
    after = builder.parts()

    pairs = zip(before.messages, after.messages, strict=True)
    changed = [i for i, (b, a) in enumerate(pairs) if b is not a]
    assert changed == [len(after.messages) - 1], "only the open turn was encoded again"
    assert all(b is a for b, a in zip(before.tool_calls, after.tool_calls, strict=True))
    assert after.encoded().message().messages[-1].content == "still going"


def test_a_finished_entry_lives_in_its_encoding_and_is_read_back_when_it_changes() -> None:
    """A turn and its call, once ended and sent, keep their text only as bytes; the call ending
    later (which re-encodes the turn that embeds it) and a turn replayed on resume read the
    rest back from those bytes, losing nothing."""
    builder = StatusBuilder(user_message="go")
    builder.start()
    call = ToolCallRequest("c1", "write_file", {"file_path": "/f", "content": "x", "n": 3})
    builder.apply(TokenDelta(message_id="m1", text="Writing the file."))
    builder.apply(ModelTurnEnded("m1", "Writing the file.", (call,), Usage(10, 5, 15), "model-a"))
    builder.apply(ToolStarted(tool_call_id="c1", name="write_file", args=call.args))
    builder.apply(ToolEnded(tool_call_id="c1", name="write_file", result="ok"))
    builder.parts()
    builder.apply(TokenDelta(message_id="m2", text="Done."))
    builder.apply(ModelTurnEnded("m2", "Done.", (), Usage(1, 1, 2), "model-a"))
    before = builder.snapshot()
    builder.parts()

    # A replay (as on resume) of the first turn and of its call's end changes nothing.
    builder.apply(ModelTurnEnded("m1", "Writing the file.", (call,), Usage(10, 5, 15), "model-a"))
    assert not builder.apply(ToolEnded(tool_call_id="c1", name="write_file", result="ok")).changed
    after = builder.snapshot()
    assert after == before
    assert after == builder.encoded(fresh=True).message()
    first = after.messages[1]
    assert first.content == "Writing the file."
    assert first.tool_calls[0].status == enum_pb2.TOOL_CALL_COMPLETED
    assert json_format.MessageToDict(first.metadata)["model"] == "model-a"
    assert json_format.MessageToDict(after.tool_calls[0].args)["file_path"] == "/f"


def test_runner_notes_become_system_messages_once() -> None:
    from worker.domain.status_builder import StatusBuilder as _Builder

    builder = _Builder(user_message="hi")
    assert builder.note("skill greeter degraded: artifact missing").significant
    assert not builder.note("skill greeter degraded: artifact missing").changed
    kinds = [m.type for m in builder.snapshot().messages]
    assert kinds == [enum_pb2.MESSAGE_HUMAN, enum_pb2.MESSAGE_SYSTEM]
