"""LangGraph stream items → agent events, on hand-made items shaped like the real ones."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langgraph.types import Overwrite

from worker.agent.events import EventNormalizer, replay
from worker.domain import agent_events
from worker.domain.agent_events import (
    HelperModelCall,
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
    Usage,
)

CALL = {
    "name": "task",
    "args": {"description": "d", "subagent_type": "general-purpose"},
    "id": "call_task",
    "type": "tool_call",
}
INNER = {"name": "ls", "args": {"path": "/"}, "id": "call_ls", "type": "tool_call"}


def started(task_id: str, call: dict[str, Any], ns: tuple[str, ...] = ()) -> Any:
    return (ns, "tasks", {"id": task_id, "name": "tools", "input": [call], "triggers": ()})


def finished(task_id: str, result: Any, ns: tuple[str, ...] = (), error: Any = None) -> Any:
    data = {"id": task_id, "name": "tools", "error": error, "interrupts": [], "result": result}
    return (ns, "tasks", data)


def test_token_chunks_become_deltas_keyed_by_their_turn() -> None:
    normalizer = EventNormalizer()
    item = (
        (),
        "messages",
        (AIMessageChunk(content="Hel", id="run-1"), {"langgraph_node": "model"}),
    )
    assert normalizer.normalize(item) == [TokenDelta(message_id="run-1", text="Hel")]
    blocks = AIMessageChunk(content=[{"type": "text", "text": "lo", "index": 0}], id="run-1")
    assert normalizer.normalize(((), "messages", (blocks, {}))) == [TokenDelta("run-1", "lo")]
    empty = AIMessageChunk(content="", id="run-1")
    assert normalizer.normalize(((), "messages", (empty, {}))) == []
    tool_msg = ToolMessage("x", tool_call_id="c")
    assert normalizer.normalize(((), "messages", (tool_msg, {}))) == []


def test_side_model_calls_are_not_streamed_as_turns() -> None:
    from langchain.agents.middleware.internal_call_transformer import internal_call_metadata

    normalizer = EventNormalizer()
    chunk = AIMessageChunk(content="summary of the history", id="run-s")
    for meta in (
        {"langgraph_node": "model", **internal_call_metadata()},
        {"langgraph_node": "model", "lc_source": "summarization"},
        {"langgraph_node": "tools"},
    ):
        assert normalizer.normalize(((), "messages", (chunk, meta))) == []
    own = {"langgraph_node": "model"}
    assert normalizer.normalize(((), "messages", (chunk, own))) == [
        TokenDelta("run-s", "summary of the history")
    ]


def test_side_model_calls_report_their_usage_piece_by_piece() -> None:
    from langchain.agents.middleware.internal_call_transformer import internal_call_metadata

    normalizer = EventNormalizer()
    normalizer.normalize(started("outer", CALL))
    first = AIMessageChunk(
        content="", id="run-h", usage_metadata=_usage(40, 0), response_metadata={}
    )
    last = AIMessageChunk(
        content="",
        id="run-h",
        usage_metadata=_usage(0, 9),
        response_metadata={"model_name": "haiku"},
    )
    summarising = {"langgraph_node": "model", "lc_source": "summarization"}
    assert normalizer.normalize(((), "messages", (first, summarising))) == [
        HelperModelCall("run-h", Usage(40, 0, 40), "summarization")
    ]
    assert normalizer.normalize((("tools:outer",), "messages", (last, summarising))) == [
        HelperModelCall("run-h", Usage(0, 9, 9), "summarization", "haiku", "call_task")
    ]
    internal = {"langgraph_node": "model", **internal_call_metadata()}
    in_tool = {"langgraph_node": "tools"}
    for meta, kind in ((internal, "middleware"), (in_tool, "tool")):
        (event,) = normalizer.normalize(((), "messages", (last, meta)))
        assert isinstance(event, HelperModelCall) and event.helper == kind
    # A piece without usage says nothing; a whole message (a call that did not stream) counts.
    silent = AIMessageChunk(content="text", id="run-h")
    assert normalizer.normalize(((), "messages", (silent, summarising))) == []
    whole = AIMessage(content="s", id="run-w", usage_metadata=_usage(3, 1))
    assert normalizer.normalize(((), "messages", (whole, summarising))) == [
        HelperModelCall("run-w", Usage(3, 1, 4), "summarization")
    ]
    event = HelperModelCall("run-h", Usage(1, 2, 3), "summarization", "haiku", "call_task")
    assert agent_events.loads(agent_events.dumps(event)) == event


def _usage(inputs: int, outputs: int) -> Any:
    return {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}


def test_model_task_result_ends_the_turn_with_calls_usage_and_model() -> None:
    message = AIMessage(
        content="Listing.",
        id="run-2",
        tool_calls=[INNER],
        usage_metadata={"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
        response_metadata={"model_name": "claude-x"},
    )
    item = (
        (),
        "tasks",
        {"id": "t", "name": "model", "error": None, "result": {"messages": [message]}},
    )
    assert EventNormalizer().normalize(item) == [
        ModelTurnEnded(
            message_id="run-2",
            text="Listing.",
            tool_calls=(ToolCallRequest("call_ls", "ls", {"path": "/"}),),
            usage=Usage(5, 2, 7),
            model_name="claude-x",
        )
    ]


def test_tool_task_start_and_result_become_tool_events() -> None:
    normalizer = EventNormalizer()
    assert normalizer.normalize(started("t1", INNER)) == [
        ToolStarted("call_ls", "ls", {"path": "/"})
    ]
    result = {"messages": [ToolMessage("a.txt", tool_call_id="call_ls", name="ls")]}
    assert normalizer.normalize(finished("t1", result)) == [ToolEnded("call_ls", "ls", "a.txt")]


def test_sub_agent_items_carry_the_task_call_id() -> None:
    normalizer = EventNormalizer()
    normalizer.normalize(started("outer", CALL))
    ns = ("tools:outer",)
    chunk = AIMessageChunk(content="Looking", id="run-sub")
    assert normalizer.normalize((ns, "messages", (chunk, {}))) == [
        TokenDelta("run-sub", "Looking", sub_agent_id="call_task")
    ]
    assert normalizer.normalize(started("inner", INNER, ns)) == [
        ToolStarted("call_ls", "ls", {"path": "/"}, sub_agent_id="call_task")
    ]
    nested = ("tools:outer", "tools:inner")
    assert normalizer.normalize((nested, "messages", (chunk, {})))[0].sub_agent_id == "call_ls"


def test_history_overwrite_is_not_replayed_as_new_output() -> None:
    history = [HumanMessage("old"), AIMessage("old answer", id="run-old")]
    item = (
        (),
        "tasks",
        {
            "id": "p",
            "name": "PatchToolCallsMiddleware.before_agent",
            "error": None,
            "result": {"messages": Overwrite(history)},
        },
    )
    assert EventNormalizer().normalize(item) == []


def test_a_task_that_raised_fails_its_tool_calls() -> None:
    normalizer = EventNormalizer()
    normalizer.normalize(started("t1", INNER))
    (event,) = normalizer.normalize(finished("t1", None, error=RuntimeError("disk gone")))
    assert event == ToolEnded("call_ls", "tools", "", error="RuntimeError: disk gone")


def test_error_results_of_file_tools_and_failed_commands_count_as_failures() -> None:
    normalizer = EventNormalizer()
    results = [
        ToolMessage("Error: File '/x' not found", tool_call_id="a", name="read_file"),
        ToolMessage(
            "Command failed (exit code 2)\nls: no such file", tool_call_id="b", name="execute"
        ),
        ToolMessage("Error: the API said no", tool_call_id="c", name="my_api"),
        ToolMessage("bad args", tool_call_id="d", name="ls", status="error"),
    ]
    events = normalizer.normalize(finished("t", {"messages": results}))
    assert [bool(e.error) for e in events if isinstance(e, ToolEnded)] == [True, True, False, True]


def test_unknown_items_are_ignored() -> None:
    normalizer = EventNormalizer()
    items: list[Any] = [
        None,
        "x",
        (),
        ((), "updates", {"model": {}}),
        ((), "tasks", "odd"),
        ((), "messages", None),
    ]
    for item in items:
        assert normalizer.normalize(item) == []


def test_replay_turns_checkpointed_messages_into_events() -> None:
    messages = [
        AIMessage("Listing.", id="run-1", tool_calls=[INNER]),
        ToolMessage("a.txt", tool_call_id="call_ls", name="ls"),
    ]
    events = list(replay(messages))
    assert [type(e) for e in events] == [ModelTurnEnded, ToolEnded]
