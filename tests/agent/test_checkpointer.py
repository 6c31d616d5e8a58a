"""`open_checkpointer`: each configured kind opens, keeps a thread's memory, and closes."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.mongodb import MongoDBSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from devstack import Stack
from tests.postgres import throwaway_postgres
from worker.agent.checkpointer import InlineSqliteSaver, open_checkpointer
from worker.agent.factory import build_agent, stream_agent
from worker.agent.scripted import ScriptedChatModel
from worker.domain.agent_events import ModelTurnEnded
from worker.logs import MASK, SECRETS
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
        assert isinstance(saver, InlineSqliteSaver)
        await memory_answer(saver, "The password hint is 'blue'.")
    assert path.is_file()


async def test_sqlite_saver_keeps_a_thread_across_reopening(tmp_path: Path) -> None:
    settings = load_settings({"CHECKPOINTER_SQLITE_PATH": str(tmp_path / "c.sqlite")})
    async with open_checkpointer(settings) as saver:
        await memory_answer(saver, "The password hint is 'blue'.")
    async with open_checkpointer(settings) as saver:
        assert isinstance(saver, InlineSqliteSaver)
        mode = saver.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
        assert (mode, sync) == ("wal", 1)  # 1 = NORMAL
        config: RunnableConfig = {"configurable": {"thread_id": "t"}}
        checkpoints = [c async for c in saver.alist(config)]
        assert checkpoints
        latest = await saver.aget_tuple(config)
        assert latest is not None
        assert latest.config == checkpoints[0].config


async def test_sqlite_saver_can_write_while_a_listing_is_open(tmp_path: Path) -> None:
    """`alist` must not hold the saver's lock across a yield, or this would deadlock."""
    settings = load_settings({"CHECKPOINTER_SQLITE_PATH": str(tmp_path / "c.sqlite")})
    async with open_checkpointer(settings) as saver:
        await memory_answer(saver, "The password hint is 'blue'.")
        config: RunnableConfig = {"configurable": {"thread_id": "t"}}
        copied = 0
        async for item in saver.alist(config, limit=2):
            target: RunnableConfig = {"configurable": {"thread_id": "copy", "checkpoint_ns": ""}}
            await asyncio.wait_for(
                saver.aput(target, item.checkpoint, item.metadata, {}), timeout=5
            )
            copied += 1
        assert copied == 2
        assert len([c async for c in saver.alist({"configurable": {"thread_id": "copy"}})]) == 2


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_failure_stored_as_a_pending_write_is_masked(tmp_path: Path, kind: str) -> None:
    # LangGraph stores a failed node's exception; a provider error may quote a secret.
    secret = "sk-provider-" + uuid.uuid4().hex
    SECRETS.add([secret])
    path = tmp_path / "c.sqlite"
    settings = load_settings({"CHECKPOINTER": kind, "CHECKPOINTER_SQLITE_PATH": str(path)})
    async with open_checkpointer(settings) as saver:
        config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        stored = await saver.aput(config, empty_checkpoint(), {}, {})
        failure = RuntimeError(f"gateway error: key {secret} refused")
        await saver.aput_writes(stored, [("__error__", failure)], "task-1")
        saved = await saver.aget_tuple(stored)

    assert saved is not None and saved.pending_writes
    (_task, channel, value) = saved.pending_writes[0]
    assert channel == "__error__"
    assert value == f"RuntimeError('gateway error: key {MASK} refused')"
    if kind == "sqlite":
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT * FROM writes").fetchall()
        assert rows and secret not in repr(rows)


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
async def test_postgres_kind_keeps_a_thread_on_a_real_postgres() -> None:
    with throwaway_postgres() as url:
        settings = load_settings({"CHECKPOINTER": "postgres", "CHECKPOINTER_URL": url})
        async with open_checkpointer(settings) as saver:
            assert isinstance(saver, AsyncPostgresSaver)
            await memory_answer(saver, "The build number is 1234.")
        async with open_checkpointer(settings) as saver:
            answer = await memory_answer(saver, "What was the build number?")
    assert "The build number is 1234." in answer
