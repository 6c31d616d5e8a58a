"""The reliability tests share one cluster (see `cluster.py`): real servers, the stub and worker
processes. Starting workers is the expensive part (seconds of imports each), so the cluster lives
for the whole package and tests that kill a worker leave `ensure_workers` to replace it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from devstack import Stack, StackConfig
from tests.postgres import throwaway_postgres
from tests.reliability.cluster import CHECKPOINTER, Cluster, running_cluster


@pytest.fixture(scope="package")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("reliability")
    # MongoDB keeps its data on disk here, so a test may restart it without losing the store.
    stack = Stack(StackConfig(data_dir=root / "stack"))
    # The stack starts in a thread while PostgreSQL starts here.
    stack_started = asyncio.create_task(asyncio.to_thread(stack.start))
    try:
        with contextlib.ExitStack() as servers:
            url = servers.enter_context(throwaway_postgres()) if CHECKPOINTER == "postgres" else ""
            await stack_started
            url = url or stack.endpoints.mongodb_uri.replace("/?", "/checkpoints?")
            async with running_cluster(root, stack, url) as running:
                yield running
    finally:
        await asyncio.gather(stack_started, return_exceptions=True)
        stack.stop()
