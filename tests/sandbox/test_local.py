"""The local backend beyond the conformance suite: isolation detection, what bubblewrap takes
away from a command, and process cleanup."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from worker.errors import ConfigurationError, InvalidInput
from worker.sandbox import LocalSandboxes, check_isolation, create_sandbox_provider
from worker.sandbox.local import probe_bubblewrap
from worker.settings import load_settings

REPO = Path(__file__).resolve().parents[2]

BWRAP_WORKS = False
if shutil.which("bwrap"):
    BWRAP_WORKS = asyncio.run(probe_bubblewrap(network=False)).mechanism == "bubblewrap"
needs_bwrap = pytest.mark.skipif(not BWRAP_WORKS, reason="bubblewrap does not work here")


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def test_isolation_is_detected_and_reported(tmp_path: Path) -> None:
    sandboxes = LocalSandboxes(tmp_path)
    with structlog.testing.capture_logs() as logs:
        box = await sandboxes.acquire("ses-report")

    assert sandboxes.isolation == box.isolation
    expected = "bubblewrap" if BWRAP_WORKS else "none"
    assert box.isolation.mechanism == expected
    reported = [e for e in logs if e["event"] == "sandbox_isolation"]
    assert len(reported) == 1
    assert reported[0]["mechanism"] == expected


async def test_a_missing_bubblewrap_is_reported_not_assumed(tmp_path: Path) -> None:
    sandboxes = LocalSandboxes(tmp_path, bwrap=str(tmp_path / "no-such-bwrap"))

    box = await sandboxes.acquire("ses-nobwrap")

    assert box.isolation.mechanism == "none"
    assert box.isolation.network is True
    assert "bubblewrap" in box.isolation.detail
    assert (await box.exec("echo still-runs")).output.strip() == "still-runs"


async def test_required_isolation_that_is_unavailable_fails_clearly(tmp_path: Path) -> None:
    sandboxes = LocalSandboxes(
        tmp_path, isolation="required", bwrap=str(tmp_path / "no-such-bwrap")
    )

    with pytest.raises(ConfigurationError, match="SANDBOX_ISOLATION=required") as raised:
        await sandboxes.acquire("ses-required")
    assert "bubblewrap failed to start" in str(raised.value), "the reason is named"


def test_a_worker_that_must_isolate_and_cannot_refuses_to_start(tmp_path: Path) -> None:
    # No bubblewrap on this PATH: the worker exits at start with one clear line, before it
    # polls Temporal or runs a command.
    (tmp_path / "bin").mkdir()
    env = {
        "PATH": str(tmp_path / "bin"),
        "SANDBOX_ISOLATION": "required",
        "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path / "data"),
        "HEALTH_PORT": "0",
        "LOG_FORMAT": "json",
    }
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("agent-runner:")]
    assert "SANDBOX_ISOLATION=required" in line and "bubblewrap" in line
    assert "Traceback" not in result.stderr
    assert "worker_started" not in result.stderr


async def test_the_isolation_setting_reaches_the_local_provider(tmp_path: Path) -> None:
    settings = load_settings(
        {"SANDBOX_ISOLATION": "off", "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path)}
    )
    provider = create_sandbox_provider(settings)
    try:
        isolation = await check_isolation(provider)
    finally:
        await provider.aclose()

    assert isolation is not None
    assert isolation.mechanism == "none"
    assert "SANDBOX_ISOLATION=off" in isolation.detail


async def test_an_unisolated_command_cannot_read_the_workers_environment(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path, isolation="off").acquire("ses-environ")
    worker = os.getpid()

    environ = await box.exec(f"cat /proc/{worker}/environ")
    memory = await box.exec(f"cat /proc/{worker}/maps")
    own = await box.exec("env")

    assert environ.exit_code != 0, environ.output
    assert "PATH=" not in environ.output
    assert memory.exit_code != 0, "nor its memory map"
    assert set(line.split("=", 1)[0] for line in own.output.splitlines()) <= {
        "PATH",
        "HOME",
        "LANG",
        "TERM",
        "TMPDIR",
        "PWD",
        "SHLVL",
        "OLDPWD",
        "_",
    }, "nothing inherited from the worker"
    assert "worker not dumpable" in box.isolation.detail


async def test_session_ids_that_are_not_plain_names_are_refused(tmp_path: Path) -> None:
    sandboxes = LocalSandboxes(tmp_path)

    for bad in ("../up", "a/b", "", ".."):
        with pytest.raises(InvalidInput):
            await sandboxes.acquire(bad)
    with pytest.raises(InvalidInput):
        await sandboxes.cleanup("../up")


@needs_bwrap
async def test_bubblewrap_commands_have_no_network(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path).acquire("ses-net")

    result = await box.exec("cat /proc/net/dev")

    interfaces = [line.split(":")[0].strip() for line in result.output.splitlines() if ":" in line]
    assert interfaces == ["lo"]


@needs_bwrap
@pytest.mark.skipif(not shutil.which("python3"), reason="no python3 to open a socket with")
async def test_bubblewrap_commands_cannot_reach_the_workers_loopback(tmp_path: Path) -> None:
    # What a worker reaches on 127.0.0.1 (the orchestrator, MongoDB, Redis) is not reachable
    # from a command without network, and is with it: the probe itself works.
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = (
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
        f"{port}), timeout=3); print('connected')\""
    )
    try:
        cut = await (await LocalSandboxes(tmp_path / "a").acquire("ses-cut")).exec(probe)
        allowed = await LocalSandboxes(tmp_path / "b", allow_network=True).acquire("ses-net")
        reached = await allowed.exec(probe)
    finally:
        server.close()

    assert cut.exit_code != 0 and "connected" not in cut.output
    assert reached.output.strip() == "connected", reached.output


@needs_bwrap
async def test_bubblewrap_commands_do_not_see_the_worker_process(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path).acquire("ses-pid")

    environ = await box.exec(f"cat /proc/{os.getpid()}/environ")
    processes = await box.exec("ls /proc | grep -c '^[0-9]'")

    assert "PATH=" not in environ.output
    assert int(processes.output.strip()) < 10, "a private process namespace"


@needs_bwrap
async def test_bubblewrap_network_can_be_allowed(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path, allow_network=True).acquire("ses-net-on")

    result = await box.exec("cat /proc/net/dev")

    assert box.isolation.network is True
    assert len([line for line in result.output.splitlines() if ":" in line]) > 1


@needs_bwrap
async def test_bubblewrap_keeps_the_system_read_only_and_hides_other_workspaces(
    tmp_path: Path,
) -> None:
    sandboxes = LocalSandboxes(tmp_path / "root")
    other = await sandboxes.acquire("ses-other")
    await other.exec("echo private > secret.txt")
    box = await sandboxes.acquire("ses-mine")

    system = await box.exec("touch /usr/evil")
    peek = await box.exec(f"cat {other.workdir}/secret.txt")
    own = await box.exec("touch mine && echo ok")

    assert system.exit_code != 0
    assert peek.exit_code != 0
    assert "private" not in peek.output
    assert own.output.strip() == "ok"


async def test_background_processes_end_with_their_command(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path, isolation="off").acquire("ses-bg")

    result = await box.exec("sleep 60 & echo $!")
    pid = int(result.output.strip())
    await asyncio.sleep(0.2)

    assert not _alive(pid)


async def test_cancelling_a_command_kills_it(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path, isolation="off").acquire("ses-cancel")
    task = asyncio.create_task(box.exec("echo $$ > pid; exec sleep 60"))
    pid_file = tmp_path / "ses-cancel" / "pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    pid = int(pid_file.read_text())

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)

    assert not _alive(pid)


async def test_output_streams_to_the_callback_as_it_arrives(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path).acquire("ses-stream")
    chunks: list[str] = []

    await box.exec("echo one; sleep 0.2; echo two", on_output=chunks.append)

    assert "".join(chunks) == "one\ntwo\n"
    assert len(chunks) >= 2


async def test_symlinks_inside_the_workspace_are_followed(tmp_path: Path) -> None:
    box = await LocalSandboxes(tmp_path).acquire("ses-links")
    await box.exec("mkdir -p real && echo data > real/f.txt && ln -s real alias")

    assert await box.read_file("alias/f.txt") == b"data\n"
    assert await box.read_file(f"{box.workdir}/alias/../real/f.txt") == b"data\n"
