"""The console's pure parts: its settings, which actions apply, the phase filter, the pages."""

from __future__ import annotations

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from stigmer_stub.console import pages, present
from stigmer_stub.settings import Settings, SettingsError, load_settings

Phase = enum_pb2.ExecutionPhase


def test_the_console_is_on_by_default_from_the_environment_and_off_with_port_0() -> None:
    default = load_settings({})
    assert default.console.port == 8234 and default.console.host == "127.0.0.1"
    assert load_settings({"STIGMER_CONSOLE_PORT": "0"}).console.port == 0
    configured = load_settings(
        {"TEMPORAL_UI_URL": "http://ui.example:8233", "STIGMER_CONSOLE_REDIS_URL": "redis://r/0"}
    )
    assert configured.console.temporal_ui_url == "http://ui.example:8233"
    assert configured.console.redis_url == "redis://r/0"
    with pytest.raises(SettingsError, match="STIGMER_CONSOLE_PORT"):
        load_settings({"STIGMER_CONSOLE_PORT": "70000"})
    # Built in code (the tests' stubs), it stays off unless asked for.
    assert Settings().console.port == 0


def test_actions_apply_only_where_they_can() -> None:
    assert present.actions(Phase.EXECUTION_COMPLETED) == []
    assert present.actions(Phase.EXECUTION_CANCELLED) == []
    assert present.actions(Phase.EXECUTION_TERMINATED) == []
    assert present.actions(Phase.EXECUTION_FAILED) == ["recover"]
    assert set(present.actions(Phase.EXECUTION_IN_PROGRESS)) == {"cancel", "terminate", "pause"}
    assert set(present.actions(Phase.EXECUTION_PAUSED)) == {"cancel", "terminate", "resume"}
    gated = present.actions(Phase.EXECUTION_WAITING_FOR_APPROVAL)
    assert {"approve", "skip", "reject", "approve_all"} <= set(gated)
    assert "pause" not in gated and "resume" not in gated


def test_the_phase_filter_takes_short_and_full_names() -> None:
    assert present.parse_phase("") == Phase.EXECUTION_PHASE_UNSPECIFIED
    assert present.parse_phase("completed") == Phase.EXECUTION_COMPLETED
    assert present.parse_phase("EXECUTION_PAUSED") == Phase.EXECUTION_PAUSED
    with pytest.raises(ValueError, match="unknown phase"):
        present.parse_phase("DONE")


def test_page_shells_escape_what_they_are_given() -> None:
    html = pages.render(
        "execution", {"execution_id": '"><script>alert(1)</script>'}, {"keys": "on"}
    )
    assert "<script>alert(1)</script>" not in html
    assert 'data-execution-id="&quot;&gt;&lt;script&gt;' in html


def test_a_windowed_reply_is_shown_with_its_place_in_the_whole_transcript() -> None:
    from google.protobuf import struct_pb2

    from stigmer_stub.windows import MARKER_KEY

    execution = api_pb2.AgentExecution()
    marker = execution.status.messages.add(type=enum_pb2.MESSAGE_SYSTEM, content="window")
    numbers = {"omitted_messages": 40, "total_messages": 42, "omitted_tool_calls": 7}
    marker.metadata.CopyFrom(struct_pb2.Struct())
    marker.metadata.get_or_create_struct(MARKER_KEY).update(numbers)
    execution.status.messages.add(type=enum_pb2.MESSAGE_AI, content="forty")
    execution.status.messages.add(type=enum_pb2.MESSAGE_AI, content="forty-one")
    execution.status.tool_calls.add(id="t7")

    shown = present.execution(execution)
    assert [m["content"] for m in shown["messages"]] == ["forty", "forty-one"]
    assert shown["message_offset"] == 40 and shown["total_messages"] == 42
    assert shown["tool_call_offset"] == 7 and shown["total_tool_calls"] == 8


def test_todos_keep_the_agents_order() -> None:
    execution = api_pb2.AgentExecution()
    for todo_id, created in (("b", "2026-01-01T00:00:01Z"), ("a", "2026-01-01T00:00:00Z")):
        execution.status.todos[todo_id].CopyFrom(
            api_pb2.TodoItem(id=todo_id, content=todo_id, created_at=created)
        )
    execution.status.todos["c"].CopyFrom(api_pb2.TodoItem(id="c", content="c"))
    call = execution.status.tool_calls.add(id="w", name="write_todos")
    call.component_metadata.metadata.update({"todo_ids": ["b", "a"]})
    assert [t["id"] for t in present.execution(execution)["todos"]] == ["b", "a", "c"]
