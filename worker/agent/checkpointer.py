"""The LangGraph checkpointer: a session's memory and the resume point of a retried execution.

`open_checkpointer` is entered once per process by the composition root, which creates the tables
or indexes, and closes the connections on exit:

- `sqlite` (default): one file under the data directory (`CHECKPOINTER_SQLITE_PATH`); one worker.
- `postgres`: `CHECKPOINTER_URL`, through a connection pool; shared by several workers.
- `mongodb`: `CHECKPOINTER_URL` (database from the URL path, else `agent_runner`); shared.
  langgraph-checkpoint-mongodb 0.5 has one saver whose async methods run the blocking driver in
  threads, so it never blocks the event loop.
- `memory`: in the process only; tests and throwaway runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.mongodb import MongoDBSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from worker.errors import ConfigurationError, Unavailable
from worker.settings import CheckpointerKind, Settings

log = structlog.get_logger(__name__)

MONGO_DEFAULT_DB = "agent_runner"
POSTGRES_POOL_SIZE = 10


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The configured checkpointer, set up and ready; closed when the block exits."""
    kind = settings.checkpointer.kind
    if kind is CheckpointerKind.MEMORY:
        log.info("checkpointer_opened", kind=kind.value)
        yield InMemorySaver()
        return
    if kind is CheckpointerKind.SQLITE:
        async with _sqlite(settings) as saver:
            yield saver
        return
    url = settings.checkpointer.url
    if url is None:
        raise ConfigurationError(f"CHECKPOINTER={kind.value} needs CHECKPOINTER_URL")
    if kind is CheckpointerKind.POSTGRES:
        async with _postgres(url.get_secret_value()) as pg_saver:
            yield pg_saver
        return
    async with _mongodb(url.get_secret_value()) as mongo_saver:
        yield mongo_saver


@asynccontextmanager
async def _sqlite(settings: Settings) -> AsyncIterator[AsyncSqliteSaver]:
    path = settings.checkpointer_sqlite_path
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        log.info("checkpointer_opened", kind="sqlite", path=str(path))
        yield saver


@asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[AsyncPostgresSaver]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        max_size=POSTGRES_POOL_SIZE,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=30)
    except Exception as err:
        raise Unavailable(f"cannot reach the Postgres checkpointer: {type(err).__name__}") from err
    try:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        log.info("checkpointer_opened", kind="postgres")
        yield saver
    finally:
        await pool.close()


@asynccontextmanager
async def _mongodb(url: str) -> AsyncIterator[MongoDBSaver]:
    client: MongoClient[Any] = MongoClient(url, serverSelectionTimeoutMS=10_000)
    try:
        database = client.get_default_database(default=MONGO_DEFAULT_DB).name
        # The saver creates its indexes in its constructor, with the blocking driver.
        saver = await asyncio.to_thread(MongoDBSaver, client, db_name=database)
    except PyMongoError as err:
        client.close()
        raise Unavailable(f"cannot reach the MongoDB checkpointer: {type(err).__name__}") from err
    try:
        log.info("checkpointer_opened", kind="mongodb", database=database)
        yield saver
    finally:
        await asyncio.to_thread(client.close)
