"""The LangGraph checkpointer: a session's memory and the resume point of a retried execution.

`open_checkpointer` is entered once per process by the composition root, which creates the tables
or indexes, and closes the connections on exit:

- `sqlite` (default): one file under the data directory (`CHECKPOINTER_SQLITE_PATH`); one worker.
  `InlineSqliteSaver` runs each statement on the event loop's own thread: a local write in WAL
  mode with `synchronous=NORMAL` takes tens of microseconds, while LangGraph's `AsyncSqliteSaver`
  hands every statement to a thread and back, which cost about 170 ms of CPU per execution of
  the demo script (hundreds of statements, each a round trip through the loop). `NORMAL` in WAL
  mode keeps every committed checkpoint when the worker process dies (the resume case); only a
  crash of the machine itself can lose the last commits. Deployments that need more run Postgres.
- `postgres`: `CHECKPOINTER_URL`, through a connection pool; shared by several workers.
- `mongodb`: `CHECKPOINTER_URL` (database from the URL path, else `agent_runner`); shared.
  langgraph-checkpoint-mongodb 0.5 has one saver whose async methods run the blocking driver in
  threads, so it never blocks the event loop.
- `memory`: in the process only; tests and throwaway runs.

Every kind masks secrets in the failures it stores: when a node raises, LangGraph saves the
exception as a pending write (its `repr`), and a provider's error may quote a key or a runtime
secret. Everything else a checkpoint holds is what the model saw, masked at its source (tool
results, statuses); see docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, closing
from typing import Any

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.mongodb import MongoDBSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from worker.errors import ConfigurationError, Unavailable
from worker.logs import SECRETS
from worker.settings import CheckpointerKind, Settings

log = structlog.get_logger(__name__)

MONGO_DEFAULT_DB = "agent_runner"
POSTGRES_POOL_SIZE = 10
POSTGRES_SETUP_WAIT_SECONDS = 120.0
# Any constant key will do; it only has to be the same in every worker.
_SETUP_LOCK = 0x5717_6E65_7201


def redacted_writes(writes: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """`writes` with each exception replaced by its masked `repr`, which is what the saver's
    serializer stores for an exception anyway (it never revives one)."""
    return [
        (channel, SECRETS.redact(repr(value)) if isinstance(value, BaseException) else value)
        for channel, value in writes
    ]


class _MaskedFailures(BaseCheckpointSaver[Any]):
    """Mixed in before a saver: pending writes reach it with their exceptions masked."""

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        super().put_writes(config, redacted_writes(writes), task_id, task_path)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await super().aput_writes(config, redacted_writes(writes), task_id, task_path)


class MemorySaver(_MaskedFailures, InMemorySaver):
    """`InMemorySaver` with masked failures."""


class PostgresSaver(_MaskedFailures, AsyncPostgresSaver):
    """`AsyncPostgresSaver` with masked failures."""


class MongoSaver(_MaskedFailures, MongoDBSaver):
    """`MongoDBSaver` with masked failures."""


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The configured checkpointer, set up and ready; closed when the block exits."""
    kind = settings.checkpointer.kind
    if kind is CheckpointerKind.MEMORY:
        log.info("checkpointer_opened", kind=kind.value)
        yield MemorySaver()
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


class InlineSqliteSaver(_MaskedFailures, SqliteSaver):
    """LangGraph's SQLite saver with async methods that run the statements inline.

    Every method takes the saver's lock and returns before the next await, so the lock is never
    held across a suspension (`alist` reads its rows before yielding the first). See the module
    docstring for why this beats a thread per statement. Failures are masked (`_MaskedFailures`).
    """

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in list(self.list(config, filter=filter, before=before, limit=limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self.get_delta_channel_history(config=config, channels=channels)


@asynccontextmanager
async def _sqlite(settings: Settings) -> AsyncIterator[InlineSqliteSaver]:
    path = settings.checkpointer_sqlite_path
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    with closing(conn):
        saver = InlineSqliteSaver(conn)
        saver.setup()  # WAL mode and the tables
        conn.execute("PRAGMA synchronous=NORMAL")
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
        saver = PostgresSaver(pool)
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
        saver = await asyncio.to_thread(MongoSaver, client, db_name=database)
    except PyMongoError as err:
        client.close()
        raise Unavailable(f"cannot reach the MongoDB checkpointer: {type(err).__name__}") from err
    try:
        log.info("checkpointer_opened", kind="mongodb", database=database)
        yield saver
    finally:
        await asyncio.to_thread(client.close)
