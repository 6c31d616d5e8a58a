"""The real Graphton deep agent, driven by the scripted model, end to end into the StatusBuilder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from tests.agent.workspace import Workspace, local_workspace
from worker.agent.checkpointer import open_checkpointer
from worker.agent.factory import AgentGraph, build_agent, plan_run, stream_agent
from worker.agent.scripted import ScriptedChatModel
from worker.domain.agent_events import AgentEvent, ModelTurnEnded, TokenDelta, ToolEnded
from worker.domain.status_builder import StatusBuilder
from worker.settings import load_settings

LIMIT = 200


def agent(
    script: str,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    workspace: Workspace | None = None,
) -> AgentGraph:
    return build_agent(
        instructions=f"You are a test agent.\nscript: {script}",
        model=ScriptedChatModel(),
        checkpointer=checkpointer if checkpointer is not None else InMemorySaver(),
        recursion_limit=LIMIT,
        sandbox_config=workspace.config if workspace else None,
    )


async def run(graph: AgentGraph, message: str, **kwargs: Any) -> list[AgentEvent]:
    return [
        e
        async for e in stream_agent(
            graph, message=message, thread_id="thread-1", recursion_limit=LIMIT, **kwargs
        )
    ]


async def run_until_cancelled(
    graph: AgentGraph, message: str, stop: Callable[[AgentEvent], bool], **kwargs: Any
) -> list[AgentEvent]:
    """Stream until `stop` matches an event, then cancel the consuming task right there.

    The stream is closed the way the activity closes it (`contextlib.aclosing`), which stops
    LangGraph's in-flight work; what the checkpoint holds at that point is what a crash leaves.
    """
    events: list[AgentEvent] = []

    async def consume() -> None:
        stream = stream_agent(
            graph, message=message, thread_id="thread-1", recursion_limit=LIMIT, **kwargs
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                events.append(event)
                if stop(event):
                    task = asyncio.current_task()
                    assert task is not None
                    task.cancel()
                    await asyncio.sleep(0)

    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.create_task(consume())
    return events


def reduce(message: str, events: list[AgentEvent], **kwargs: Any) -> api_pb2.AgentExecutionStatus:
    builder = StatusBuilder(user_message=message, **kwargs)
    builder.start()
    for event in events:
        builder.apply(event)
    builder.complete()
    return builder.snapshot()


async def thread_messages(graph: AgentGraph) -> list[Any]:
    state = await graph.aget_state({"configurable": {"thread_id": "thread-1"}})
    return list(state.values["messages"])


@pytest.fixture
async def sqlite_checkpointer(tmp_path: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    settings = load_settings({"CHECKPOINTER_SQLITE_PATH": str(tmp_path / "checkpoints.sqlite")})
    async with open_checkpointer(settings) as saver:
        yield saver


async def test_demo_run_in_a_workspace_produces_a_complete_status(tmp_path: Path) -> None:
    message = "Tour the workspace."
    workspace = await local_workspace(tmp_path)
    status = reduce(message, await run(agent("demo", workspace=workspace), message))
    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    assert {t.status for t in status.tool_calls} == {enum_pb2.TOOL_CALL_COMPLETED}
    names = {t.name for t in status.tool_calls}
    assert {"write_todos", "ls", "write_file", "read_file", "edit_file", "execute", "task"} <= names
    assert len(status.todos) == 5
    assert {t.status for t in status.todos.values()} == {enum_pb2.TODO_COMPLETED}
    (sub,) = status.sub_agent_executions
    assert sub.status == enum_pb2.SUB_AGENT_COMPLETED and sub.output
    assert "hello from the sandbox" in status.messages[-1].content
    assert (workspace.path / "notes.md").read_text().endswith("Status: reviewed\n")


async def test_demo_without_a_workspace_skips_the_shell_and_still_finishes() -> None:
    message = "Tour the workspace."
    status = reduce(message, await run(agent("demo"), message))
    assert "execute" not in {t.name for t in status.tool_calls}
    assert "no shell" in status.messages[-1].content
    assert {t.status for t in status.tool_calls} == {enum_pb2.TOOL_CALL_COMPLETED}


async def test_fail_tool_run_fails_the_call_and_recovers() -> None:
    message = "Configure it."
    status = reduce(message, await run(agent("fail-tool"), message))
    assert [t.status for t in status.tool_calls] == [
        enum_pb2.TOOL_CALL_FAILED,
        enum_pb2.TOOL_CALL_COMPLETED,
        enum_pb2.TOOL_CALL_COMPLETED,
    ]
    assert status.tool_calls[0].error
    assert status.phase == enum_pb2.EXECUTION_COMPLETED


async def test_second_turn_on_the_same_thread_sees_the_first(
    sqlite_checkpointer: BaseCheckpointSaver[Any],
) -> None:
    graph = agent("memory", sqlite_checkpointer)
    first = await run(graph, "My favourite colour is teal.")
    second = await run(graph, "What did I tell you?")
    first_answer = [e for e in first if isinstance(e, ModelTurnEnded)][-1].text
    second_answer = [e for e in second if isinstance(e, ModelTurnEnded)][-1].text
    assert "nothing earlier" in first_answer
    assert "My favourite colour is teal." in second_answer
    assert "What did I tell you?" in second_answer
    status = reduce("What did I tell you?", second)
    assert [m.type for m in status.messages] == [enum_pb2.MESSAGE_HUMAN, enum_pb2.MESSAGE_AI]


async def test_session_memory_survives_reopening_the_sqlite_checkpointer(tmp_path: Path) -> None:
    settings = load_settings({"CHECKPOINTER_SQLITE_PATH": str(tmp_path / "cp.sqlite")})
    async with open_checkpointer(settings) as saver:
        await run(agent("memory", saver), "Remember the number 42.")
    async with open_checkpointer(settings) as saver:
        answer = [
            e
            for e in await run(agent("memory", saver), "Which number?")
            if isinstance(e, ModelTurnEnded)
        ]
    assert "Remember the number 42." in answer[-1].text


async def test_resume_after_interruption_does_not_rerun_completed_tool_calls(
    tmp_path: Path, sqlite_checkpointer: BaseCheckpointSaver[Any]
) -> None:
    workspace = await local_workspace(tmp_path)
    graph = agent("long:4", sqlite_checkpointer, workspace=workspace)
    message = "Process four items."
    ended: list[str] = []

    def third_turn_started(event: AgentEvent) -> bool:
        if isinstance(event, ToolEnded):
            ended.append(event.tool_call_id)
        return isinstance(event, TokenDelta) and len(ended) == 2

    before = await run_until_cancelled(graph, message, third_turn_started, message_id="aex-1")
    assert (workspace.path / "long-run.log").read_text() == "step 1\nstep 2\n"
    plan = await plan_run(
        graph, {"configurable": {"thread_id": "thread-1"}}, message, message_id="aex-1"
    )
    assert plan.mode == "resume"

    builder = StatusBuilder(user_message=message)
    builder.start()
    for event in before:
        builder.apply(event)
    stored = builder.snapshot()

    after = await run(graph, message, message_id="aex-1")
    assert (workspace.path / "long-run.log").read_text() == "step 1\nstep 2\nstep 3\nstep 4\n"
    replayed = [e for e in after if isinstance(e, ToolEnded)][:2]
    assert [e.tool_call_id for e in replayed] == ended

    messages = await thread_messages(graph)
    assert sum(isinstance(m, HumanMessage) for m in messages) == 1
    assert sum(isinstance(m, AIMessage) for m in messages) == 5
    tool_ids = [m.tool_call_id for m in messages if isinstance(m, ToolMessage)]
    assert len(tool_ids) == len(set(tool_ids)) == 4

    resumed = StatusBuilder(user_message=message, initial=stored)
    resumed.start()
    for event in after:
        resumed.apply(event)
    resumed.complete()
    status = resumed.snapshot()
    assert [m.type for m in status.messages].count(enum_pb2.MESSAGE_HUMAN) == 1
    assert len([m for m in status.messages if m.type == enum_pb2.MESSAGE_AI]) == 5
    assert [t.status for t in status.tool_calls] == [enum_pb2.TOOL_CALL_COMPLETED] * 4
    assert status.messages[-1].content.startswith("Finished all 4 steps")
    fresh = reduce(message, after)
    assert [m.content for m in fresh.messages] == [m.content for m in status.messages]


async def test_completed_turn_is_replayed_not_run_again_on_retry(
    sqlite_checkpointer: BaseCheckpointSaver[Any],
) -> None:
    graph = agent("long:2", sqlite_checkpointer)
    first = await run(graph, "Two items.", message_id="aex-2")
    again = await run(graph, "Two items.", message_id="aex-2")
    assert not [e for e in again if isinstance(e, TokenDelta)]
    assert [e for e in again if isinstance(e, ToolEnded)] == [
        e for e in first if isinstance(e, ToolEnded)
    ]
    assert sum(isinstance(m, AIMessage) for m in await thread_messages(graph)) == 3


async def test_a_new_message_after_an_abandoned_run_starts_a_new_turn(
    sqlite_checkpointer: BaseCheckpointSaver[Any],
) -> None:
    graph = agent("long:3", sqlite_checkpointer)
    await run_until_cancelled(
        graph, "First request.", lambda e: isinstance(e, ToolEnded), message_id="aex-a"
    )
    events = await run(graph, "Second request.", message_id="aex-b")
    final = [e for e in events if isinstance(e, ModelTurnEnded)][-1]
    assert final.text.startswith("Finished all 3 steps for: Second request.")
    messages = await thread_messages(graph)
    assert [m.text for m in messages if isinstance(m, HumanMessage)] == [
        "First request.",
        "Second request.",
    ]


async def test_same_text_without_message_id_resumes_only_an_unfinished_run(
    sqlite_checkpointer: BaseCheckpointSaver[Any],
) -> None:
    graph = agent("long:2", sqlite_checkpointer)
    config: Any = {"configurable": {"thread_id": "thread-1"}}
    await run_until_cancelled(graph, "Again.", lambda e: isinstance(e, ToolEnded))
    assert (await plan_run(graph, config, "Again.", None)).mode == "resume"
    await run(graph, "Again.")
    assert (await plan_run(graph, config, "Again.", None)).mode == "new"


async def test_scripted_token_delay_paces_the_stream() -> None:
    graph = build_agent(
        instructions="You are a test agent.\nscript: quick",
        model=ScriptedChatModel(token_delay_ms=20),
        checkpointer=InMemorySaver(),
        recursion_limit=LIMIT,
    )
    loop = asyncio.get_running_loop()
    stamps = [
        loop.time()
        async for e in stream_agent(graph, message="a b c d", thread_id="t", recursion_limit=LIMIT)
        if isinstance(e, TokenDelta)
    ]
    assert len(stamps) >= 5
    assert stamps[-1] - stamps[0] >= 0.015 * (len(stamps) - 1)
