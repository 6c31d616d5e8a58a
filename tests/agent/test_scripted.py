"""The scripted chat model on its own: decisions from the conversation, streaming, tool binding."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableBinding
from langchain_core.tools import tool

from worker.agent.scripted import ScriptedChatModel, parse_script


@tool
def write_todos(todos: list[dict[str, str]]) -> str:
    """Replace the todo list."""
    return "ok"


@tool
def task(description: str, subagent_type: str) -> str:
    """Delegate to a sub-agent."""
    return "ok"


@tool
def ls(path: str) -> str:
    """List files."""
    return ""


@tool
def read_file(file_path: str) -> str:
    """Read a file (deepagents' argument name)."""
    return ""


@tool
def write_file(file_path: str, content: str) -> str:
    """Write a file."""
    return ""


MAIN_TOOLS = [write_todos, task, ls, read_file, write_file]


def tools_of(*tools: Any) -> list[dict[str, Any]]:
    bound = ScriptedChatModel().bind_tools(list(tools))
    assert isinstance(bound, RunnableBinding)
    bound_tools: list[dict[str, Any]] = bound.kwargs["tools"]
    return bound_tools


def answer(step: AIMessage, *results: str) -> list[BaseMessage]:
    return [
        step,
        *(
            ToolMessage(r, tool_call_id=c["id"], name=c["name"])
            for r, c in zip(results, step.tool_calls, strict=False)
        ),
    ]


def decide(model: ScriptedChatModel, messages: list[BaseMessage], tools: Any) -> AIMessage:
    result = model._generate(messages, tools=tools)
    message = result.generations[0].message
    assert isinstance(message, AIMessage)
    return message


def test_next_step_comes_from_the_conversation_not_from_hidden_state() -> None:
    tools = tools_of(*MAIN_TOOLS)
    conversation: list[BaseMessage] = [
        SystemMessage("Be useful.\nscript: demo"),
        HumanMessage("Go"),
    ]
    first = decide(ScriptedChatModel(), conversation, tools)
    assert [c["name"] for c in first.tool_calls] == ["write_todos"]
    conversation += answer(first, "todos set")
    second = decide(ScriptedChatModel(), conversation, tools)
    assert [c["name"] for c in second.tool_calls] == ["ls"]
    again = decide(ScriptedChatModel(), conversation, tools)
    assert [c["name"] for c in again.tool_calls] == ["ls"]
    assert again.tool_calls[0]["id"] != second.tool_calls[0]["id"]


def test_a_new_human_message_starts_the_script_again() -> None:
    tools = tools_of(*MAIN_TOOLS)
    model = ScriptedChatModel(script="long:1")
    conversation: list[BaseMessage] = [HumanMessage("one")]
    step = decide(model, conversation, tools)
    conversation += answer(step, "written")
    final = decide(model, conversation, tools)
    assert not final.tool_calls and final.text.startswith("Finished all 1 steps for: one")
    conversation += [final, HumanMessage("two")]
    assert decide(model, conversation, tools).tool_calls


def test_without_the_task_tool_the_model_plays_the_sub_agent() -> None:
    tools = tools_of(ls, read_file, write_file)
    conversation: list[BaseMessage] = [
        SystemMessage("In order to complete the objective ... script: demo"),
        HumanMessage("Research the workspace"),
    ]
    first = decide(ScriptedChatModel(script="demo"), conversation, tools)
    assert [c["name"] for c in first.tool_calls] == ["ls"]
    assert first.response_metadata["model_name"] == "scripted-subagent"
    conversation += answer(first, "notes.md")
    report = decide(ScriptedChatModel(script="demo"), conversation, tools)
    assert not report.tool_calls
    assert "Research the workspace" in report.text and "notes.md" in report.text


def test_sub_agent_with_its_own_non_delegating_script_plays_it() -> None:
    tools = tools_of(ls)
    conversation: list[BaseMessage] = [SystemMessage("script: quick"), HumanMessage("hi")]
    reply = decide(ScriptedChatModel(), conversation, tools)
    assert reply.response_metadata["model_name"] == "scripted-quick"


def test_fixed_script_wins_over_the_instructions_marker() -> None:
    conversation: list[BaseMessage] = [SystemMessage("script: demo"), HumanMessage("hi")]
    tools = tools_of(*MAIN_TOOLS)
    assert decide(ScriptedChatModel(script="quick"), conversation, tools).text.startswith("Done.")
    assert decide(ScriptedChatModel(), conversation, tools).tool_calls
    unmarked: list[BaseMessage] = [SystemMessage("No marker here."), HumanMessage("hi")]
    default = decide(ScriptedChatModel(), unmarked, tools)
    assert default.response_metadata["model_name"] == "scripted-demo"


def test_memory_script_quotes_the_earlier_human_messages() -> None:
    conversation: list[BaseMessage] = [
        SystemMessage("script: memory"),
        HumanMessage("I live in Lisbon."),
        AIMessage("Noted."),
        HumanMessage("Where do I live?"),
    ]
    reply = decide(ScriptedChatModel(), conversation, tools_of(*MAIN_TOOLS))
    assert "I live in Lisbon." in reply.text and "Where do I live?" in reply.text


def test_file_tool_arguments_follow_the_bound_schema() -> None:
    @tool("write_file")
    def graphton_write(path: str, content: str) -> str:
        """Graphton's sandbox write tool."""
        return ""

    tools = tools_of(write_todos, task, ls, graphton_write)
    conversation: list[BaseMessage] = [SystemMessage("script: long:1"), HumanMessage("x")]
    (call,) = decide(ScriptedChatModel(), conversation, tools).tool_calls
    assert set(call["args"]) == {"path", "content"}
    deep = tools_of(write_todos, task, ls, write_file)
    (call,) = decide(ScriptedChatModel(), conversation, deep).tool_calls
    assert set(call["args"]) == {"file_path", "content"}


async def test_streams_text_token_by_token_with_usage_and_model_name() -> None:
    bound = ScriptedChatModel(script="demo").bind_tools(MAIN_TOOLS)
    chunks = [c async for c in bound.astream([HumanMessage("Plan something")])]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.text]) > 5
    streamed = [c for c in chunks if isinstance(c, AIMessageChunk)]
    whole = streamed[0]
    for chunk in streamed[1:]:
        whole = whole + chunk
    assert whole.text.startswith("I'll break this down")
    assert [c["name"] for c in whole.tool_calls] == ["write_todos"]
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] > 10
    assert whole.response_metadata["model_name"] == "scripted-demo"
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("spec", ["nope", "quick:3", "long:0", "long:x", "long:99999"])
def test_bad_script_names_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="script"):
        parse_script(spec)


def test_long_script_takes_a_turn_count() -> None:
    assert parse_script("long:7").turns == 7
    assert parse_script(" Demo ").name == "demo"


def test_a_call_without_tools_is_a_helper_and_its_summary_lets_the_script_go_on() -> None:
    from langchain_core.messages import get_buffer_string

    tools = tools_of(*MAIN_TOOLS)
    conversation: list[BaseMessage] = [
        SystemMessage("script: deep"),
        HumanMessage("Plan in two rounds."),
    ]
    for result in ("todos set", "a.md", "written"):
        step = decide(ScriptedChatModel(), conversation, tools)
        conversation += answer(step, result)
    # deepagents summarises the history with a tool-less call over the messages as XML.
    prompt = "Summarise:\n" + get_buffer_string(conversation[1:], format="xml")
    summary = decide(ScriptedChatModel(), [HumanMessage(prompt)], None)
    assert not summary.tool_calls
    assert summary.response_metadata["model_name"] == "scripted-summary"
    assert "[steps so far: 3] [request: Plan in two rounds.]" in summary.text
    summarised = HumanMessage(
        f"<summary>{summary.text}</summary>", additional_kwargs={"lc_source": "summarization"}
    )
    after = decide(ScriptedChatModel(), [conversation[0], summarised], tools)
    expected = decide(ScriptedChatModel(), conversation, tools)
    assert after.text == expected.text == "Reading the findings back to check them."
    # A second summary covers the first one's turns too.
    prompt = "Summarise:\n" + get_buffer_string([summarised, after], format="xml")
    again = decide(ScriptedChatModel(), [HumanMessage(prompt)], None)
    assert "[steps so far: 4] [request: Plan in two rounds.]" in again.text
