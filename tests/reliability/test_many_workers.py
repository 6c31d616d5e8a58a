"""Many workers: processes polling one task queue share the executions and all of them complete."""

from __future__ import annotations

import asyncio

import pytest

from tests.reliability.cluster import (
    CHECKPOINTER,
    WORKER_CONCURRENCY,
    Cluster,
    assert_complete_long_run,
)

pytestmark = pytest.mark.integration

STEPS = 2


async def test_workers_on_one_queue_share_the_load_and_every_execution_completes(
    cluster: Cluster,
) -> None:
    workers = await cluster.ensure_workers(2)
    agent_id = await cluster.agent()
    count = 3 * WORKER_CONCURRENCY  # more than one worker may run at once
    ids = await asyncio.gather(
        *(
            cluster.start(f"Batch item {n}", agent_id=agent_id, model=f"scripted:long:{STEPS}")
            for n in range(count)
        )
    )

    finals = await asyncio.gather(*(cluster.finished(eid, seconds=120) for eid in ids))

    for final in finals:
        assert_complete_long_run(cluster, final, STEPS)
    ran_by = {eid: [w.name for w in cluster.worker_of(eid)] for eid in ids}
    assert all(len(names) == 1 for names in ran_by.values()), ran_by
    used = {names[0] for names in ran_by.values()}
    assert len(used) >= 2, f"the executions spread across the workers: {ran_by}"
    assert used <= {w.name for w in workers}
    for worker in workers:
        # Every worker opened the shared checkpointer, though they started together.
        assert worker.events("checkpointer_opened", kind=CHECKPOINTER)
