"""The Daytona backend's session bookkeeping, against the local stand-in of the Daytona API."""

from __future__ import annotations

import asyncio

import pytest

from tests.sandbox.conftest import daytona_provider
from tests.sandbox.daytona_standin import DaytonaStandIn
from worker.errors import PermissionDenied
from worker.sandbox.daytona import SESSION_LABEL, SKILLS_ROOT, sandbox_name


async def test_concurrent_executions_of_a_session_get_one_sandbox(
    standin: DaytonaStandIn,
) -> None:
    provider = daytona_provider(standin)
    standin.create_delay = 0.2
    try:
        boxes = await asyncio.gather(*(provider.acquire("ses-busy") for _ in range(5)))
    finally:
        await provider.aclose()

    assert standin.creates == 1
    assert len({b.id for b in boxes}) == 1


async def test_a_retry_on_another_worker_finds_the_sessions_sandbox(
    standin: DaytonaStandIn,
) -> None:
    first, second = daytona_provider(standin), daytona_provider(standin)
    try:
        original = await first.acquire("ses-retry")
        again = await second.acquire("ses-retry")
    finally:
        await first.aclose()
        await second.aclose()

    assert again.id == original.id
    assert standin.creates == 1
    assert standin.sandboxes[original.id].labels[SESSION_LABEL] == "ses-retry"


async def test_two_workers_racing_for_a_new_session_end_up_sharing(
    standin: DaytonaStandIn,
) -> None:
    one, two = daytona_provider(standin), daytona_provider(standin)
    standin.create_delay = 0.3
    try:
        a, b = await asyncio.gather(one.acquire("ses-race"), two.acquire("ses-race"))
    finally:
        await one.aclose()
        await two.aclose()

    assert a.id == b.id
    assert standin.creates == 1
    assert standin.sandboxes[a.id].name == sandbox_name("ses-race")


async def test_a_destroyed_sandbox_is_replaced(standin: DaytonaStandIn) -> None:
    provider = daytona_provider(standin)
    try:
        old = await provider.acquire("ses-dead")
        standin.sandboxes[old.id].state = "destroyed"
        new = await provider.acquire("ses-dead", sandbox_id=old.id)
    finally:
        await provider.aclose()

    assert new.id != old.id
    assert standin.sandboxes[new.id].state == "started"


async def test_a_stopped_sandbox_is_started_again(standin: DaytonaStandIn) -> None:
    provider = daytona_provider(standin)
    try:
        old = await provider.acquire("ses-stopped")
        await old.exec("echo kept > f.txt")
        standin.sandboxes[old.id].state = "stopped"
        again = await provider.acquire("ses-stopped", sandbox_id=old.id)
        content = await again.read_file("f.txt")
    finally:
        await provider.aclose()

    assert again.id == old.id
    assert content == b"kept\n"


async def test_the_snapshot_is_used_and_the_environment_is_not_stored(
    standin: DaytonaStandIn,
) -> None:
    provider = daytona_provider(standin, snapshot_id="snap-dev-tools")
    try:
        box = await provider.acquire("ses-snap")
        await box.exec("true", env={"TOKEN": "per-execution-only"})
    finally:
        await provider.aclose()

    record = standin.sandboxes[box.id]
    assert record.snapshot == "snap-dev-tools"
    assert "per-execution-only" not in str(record.env)
    assert box.skills_root == SKILLS_ROOT


async def test_a_rejected_api_key_is_a_permission_error(standin: DaytonaStandIn) -> None:
    provider = daytona_provider(standin, api_key="wrong-key")
    try:
        with pytest.raises(PermissionDenied, match="daytona"):
            await provider.acquire("ses-denied")
    finally:
        await provider.aclose()


async def test_cleanup_of_an_unknown_sandbox_reports_nothing_removed(
    standin: DaytonaStandIn,
) -> None:
    provider = daytona_provider(standin)
    try:
        assert await provider.cleanup("sb-never-existed") is False
    finally:
        await provider.aclose()
