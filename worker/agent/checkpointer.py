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
import time
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
POSTGRES_SETUP_WAIT_SECONDS = 120.0
# Any constant key will do; it only has to be the same in every worker.
_SETUP_LOCK = 0x5717_6E65_7201


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
        async with _setup_lock(pool):
            await saver.setup()
        log.info("checkpointer_opened", kind="postgres")
        yield saver
    finally:
        await pool.close()


@asynccontextmanager
async def _setup_lock(pool: AsyncConnectionPool[Any]) -> AsyncIterator[None]:
    """One worker at a time runs the saver's migrations.

    Replicas starting together would race through them (a unique violation on the migrations
    table kills the loser). The lock is polled with `pg_try_advisory_lock` rather than awaited:
    a session blocked in `pg_advisory_lock` is an open transaction, and the migrations'
    `CREATE INDEX CONCURRENTLY` in the holder waits for every open transaction to end, which
    would be a deadlock Postgres does not detect.
    """
    async with pool.connection() as conn:
        deadline = time.monotonic() + POSTGRES_SETUP_WAIT_SECONDS
        while True:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (_SETUP_LOCK,))
            row = await cursor.fetchone()
            if row is not None and row["ok"]:
                break
            if time.monotonic() > deadline:
                raise Unavailable("another worker held the checkpointer's setup lock too long")
            await asyncio.sleep(0.2)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


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
