"""The Daytona backend's session bookkeeping, against the local stand-in of the Daytona API."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from tests.sandbox.conftest import daytona_provider
from tests.sandbox.daytona_standin import DaytonaStandIn
from worker.errors import ConfigurationError, PermissionDenied, Unavailable
from worker.sandbox import FileWrite, WriteRefused
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
        standin.set_state(standin.sandboxes[old.id], "destroyed")
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
        standin.set_state(standin.sandboxes[old.id], "stopped")
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


# -- the service as documented: eventual consistency, states, errors (issue #16) ---------------


async def test_racing_workers_share_one_sandbox_while_the_list_lags(
    standin: DaytonaStandIn,
) -> None:
    # The label list trails reality by seconds (daytona issue #5138); the loser of the name race
    # must find the winner by name, not by listing.
    standin.list_lag = 1.5
    standin.create_delay = 0.3
    one, two = daytona_provider(standin), daytona_provider(standin)
    try:
        a, b = await asyncio.gather(one.acquire("ses-lag"), two.acquire("ses-lag"))
    finally:
        await one.aclose()
        await two.aclose()

    assert a.id == b.id
    assert standin.creates == 1


async def test_a_destroyed_sandbox_still_listed_as_started_is_not_adopted(
    standin: DaytonaStandIn,
) -> None:
    provider = daytona_provider(standin)
    try:
        old = await provider.acquire("ses-stale")
        await asyncio.sleep(0.6)
        standin.list_lag = 0.5  # the list still shows it started
        standin.set_state(standin.sandboxes[old.id], "destroyed")
        new = await provider.acquire("ses-stale")
        result = await new.exec("echo alive")
    finally:
        await provider.aclose()

    assert new.id != old.id
    assert result.output == "alive\n"


async def test_a_stopping_sandbox_is_started_once_it_has_stopped(standin: DaytonaStandIn) -> None:
    provider = daytona_provider(standin, operation_timeout=3.0)
    try:
        old = await provider.acquire("ses-stopping")
        await old.exec("echo kept > f.txt")
        standin.stop_sandbox(old.id, delay=0.5)
        with capture_logs() as logs:
            again = await provider.acquire("ses-stopping", sandbox_id=old.id)
        content = await again.read_file("f.txt")
    finally:
        await provider.aclose()

    # Not by waiting for a start nobody asked for until the operation timeout gave up.
    assert [e for e in logs if e["event"] == "sandbox_start_failed"] == []
    assert again.id == old.id
    assert content == b"kept\n"
    assert standin.creates == 1


async def test_an_archiving_sandbox_is_started_without_waiting_for_the_archive(
    standin: DaytonaStandIn,
) -> None:
    provider = daytona_provider(standin, operation_timeout=3.0)
    try:
        old = await provider.acquire("ses-archiving")
        await old.exec("echo kept > f.txt")
        standin.set_state(standin.sandboxes[old.id], "stopped")
        standin.archive_sandbox(old.id, delay=60.0)  # an archive outlasting any wait
        again = await provider.acquire("ses-archiving", sandbox_id=old.id)
        content = await again.read_file("f.txt")
    finally:
        await provider.aclose()

    assert again.id == old.id
    assert content == b"kept\n"


@pytest.mark.parametrize("status", [400, 403])
async def test_a_used_up_quota_is_temporary(standin: DaytonaStandIn, status: int) -> None:
    standin.quota_exceeded = status
    provider = daytona_provider(standin)
    try:
        with pytest.raises(Unavailable, match="quota") as raised:
            await provider.acquire("ses-quota")
    finally:
        await provider.aclose()

    assert raised.value.retryable
    assert "Total CPU limit exceeded" in str(raised.value)


async def test_an_unknown_snapshot_is_a_configuration_error_that_names_the_setting(
    standin: DaytonaStandIn,
) -> None:
    standin.snapshots = {"snap-dev-tools"}
    provider = daytona_provider(standin, snapshot_id="snap-typo")
    try:
        with pytest.raises(ConfigurationError, match="DAYTONA_DEV_TOOLS_SNAPSHOT_ID") as raised:
            await provider.acquire("ses-snapshot")
    finally:
        await provider.aclose()

    assert not raised.value.retryable
    assert "snap-typo" in str(raised.value)
    assert standin.creates == 0


@pytest.mark.parametrize("refusal", ["upload", "chmod-403", "chmod-400"])
async def test_a_refused_write_is_a_permission_error_no_retry_fixes(
    standin: DaytonaStandIn, refusal: str
) -> None:
    if refusal == "upload":
        standin.read_only = ["/bin"]
    else:
        standin.chmod_refused = ["/bin"]
        standin.chmod_refusal_status = int(refusal.removeprefix("chmod-"))
    provider = daytona_provider(standin)
    try:
        box = await provider.acquire("ses-readonly")
        with pytest.raises(WriteRefused) as raised:
            await box.write_files([FileWrite("/bin/tool.sh", b"#!/bin/sh\n", 0o755)])
        await box.write_files([FileWrite("ok.sh", b"#!/bin/sh\n", 0o755)])  # elsewhere: fine
    finally:
        await provider.aclose()

    assert isinstance(raised.value, PermissionError)
    assert not raised.value.retryable


async def test_the_environment_reaches_commands_on_a_daemon_that_ignores_envs(
    standin: DaytonaStandIn,
) -> None:
    standin.honours_envs = False
    provider = daytona_provider(standin)
    try:
        box = await provider.acquire("ses-old-daemon")
        first = await box.exec("echo $GREETING", env={"GREETING": "it's here"})
        second = await box.exec('printf %s "$WEIRD"', env={"WEIRD": "a b; c"})
    finally:
        await provider.aclose()

    assert first.output == "it's here\n"
    assert second.output == "a b; c"
    probes = [e for e in standin.executed if "STIGMER_ENV_PROBE" in e["command"]]
    assert len(probes) == 1, "one probe per sandbox handle"


async def test_a_current_daemon_gets_the_environment_in_envs(standin: DaytonaStandIn) -> None:
    provider = daytona_provider(standin)
    try:
        box = await provider.acquire("ses-new-daemon")
        result = await box.exec("echo $GREETING", env={"GREETING": "hello"})
    finally:
        await provider.aclose()

    assert result.output == "hello\n"
    (command,) = [e for e in standin.executed if "echo $GREETING" in e["command"]]
    assert command["envs"] == {"GREETING": "hello"}


async def test_states_arrive_on_the_socketio_channel_by_default(standin: DaytonaStandIn) -> None:
    standin.start_delay = 1.0  # time for the channel to connect before the sandbox starts
    provider = daytona_provider(standin)  # production's default: no polling
    try:
        box = await provider.acquire("ses-socket")
        connected = standin.socket_clients
        result = await box.exec("echo up")
    finally:
        await provider.aclose()

    assert connected >= 1
    assert standin.events_sent >= 1
    assert result.output == "up\n"


async def test_the_deprecated_polling_mode_still_finds_started_sandboxes(
    standin: DaytonaStandIn,
) -> None:
    standin.start_delay = 0.3
    provider = daytona_provider(standin, poll_state=True)
    try:
        box = await provider.acquire("ses-poll")
        connected = standin.socket_clients
        result = await box.exec("echo up")
    finally:
        await provider.aclose()

    assert connected == 0
    assert result.output == "up\n"


async def test_a_live_sandbox_that_refuses_to_start_is_retried_not_replaced(
    standin: DaytonaStandIn,
) -> None:
    provider = daytona_provider(standin, operation_timeout=3.0)
    try:
        old = await provider.acquire("ses-busy-state")
        # A state the API's start refuses ("Sandbox is not in valid state") and that is not dead.
        standin.set_state(standin.sandboxes[old.id], "resizing")
        with pytest.raises(Unavailable) as raised:
            await provider.acquire("ses-busy-state", sandbox_id=old.id)
    finally:
        await provider.aclose()

    assert raised.value.retryable
    assert standin.creates == 1, "the session's sandbox is not abandoned for a new one"
