"""Behaviour every sandbox backend must have; run against each (see conftest `provider`)."""

from __future__ import annotations

import os
import time

import pytest

from tests.sandbox.conftest import OUTPUT_LIMIT
from worker.sandbox import FileWrite, SandboxPathError, SandboxProvider


async def test_written_files_read_back_and_are_listed(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-files")
    await box.write_files(
        [FileWrite("notes/a.txt", b"alpha"), FileWrite(f"{box.workdir}/notes/b.txt", b"beta")]
    )

    assert await box.read_file("notes/a.txt") == b"alpha"
    assert await box.read_file(f"{box.workdir}/notes/b.txt") == b"beta"
    listing = await box.list_dir("notes")
    assert [(e.path, e.is_dir, e.size) for e in listing] == [
        (f"{box.workdir}/notes/a.txt", False, 5),
        (f"{box.workdir}/notes/b.txt", False, 4),
    ]
    assert any(e.path == f"{box.workdir}/notes" and e.is_dir for e in await box.list_dir("."))


async def test_missing_files_raise_file_not_found(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-missing")
    with pytest.raises(FileNotFoundError):
        await box.read_file("nope.txt")
    with pytest.raises(FileNotFoundError):
        await box.list_dir("no-such-dir")


async def test_delete_removes_files_and_directories(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-delete")
    await box.write_files([FileWrite("d/x.txt", b"x"), FileWrite("y.txt", b"y")])

    await box.delete("d")
    await box.delete("y.txt")

    assert [e.path for e in await box.list_dir(".")] == []


async def test_commands_run_in_the_workspace_with_the_given_environment(
    provider: SandboxProvider,
) -> None:
    box = await provider.acquire("ses-env")

    result = await box.exec("echo $GREETING > greeting.txt", env={"GREETING": "hello there"})

    assert result.exit_code == 0
    assert await box.read_file("greeting.txt") == b"hello there\n"


async def test_commands_do_not_see_the_workers_environment(
    provider: SandboxProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_ONLY_CREDENTIAL", "do-not-leak-4711")
    box = await provider.acquire("ses-scrub")

    result = await box.exec("env")

    assert result.exit_code == 0
    assert "do-not-leak-4711" not in result.output
    assert "WORKER_ONLY_CREDENTIAL" not in result.output


async def test_exit_codes_and_stderr_come_back(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-exit")

    result = await box.exec("echo out; echo err >&2; exit 3")

    assert result.exit_code == 3
    assert "out" in result.output
    assert "err" in result.output


async def test_a_command_over_its_timeout_is_killed(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-timeout")
    started = time.monotonic()

    result = await box.exec("sleep 30; echo finished", timeout=1)

    assert result.timed_out
    assert result.exit_code == 124
    assert "finished" not in result.output
    assert time.monotonic() - started < 10


async def test_long_output_is_truncated_with_a_marker(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-output")

    result = await box.exec("head -c 200000 /dev/zero | tr '\\0' x; echo; echo THE-END")

    assert result.exit_code == 0
    assert result.truncated
    assert "output truncated" in result.output
    assert len(result.output) < OUTPUT_LIMIT + 200
    assert result.output.rstrip().endswith("THE-END")


async def test_two_executions_of_a_session_share_files(provider: SandboxProvider) -> None:
    first = await provider.acquire("ses-shared")
    await first.exec("echo turn-one > memory.txt")

    second = await provider.acquire("ses-shared", sandbox_id=first.id)

    assert second.id == first.id
    assert await second.read_file("memory.txt") == b"turn-one\n"


async def test_sessions_do_not_share_workspaces(provider: SandboxProvider) -> None:
    one = await provider.acquire("ses-one")
    two = await provider.acquire("ses-two")
    await one.write_files([FileWrite("mine.txt", b"1")])

    assert one.id != two.id
    with pytest.raises(FileNotFoundError):
        await two.read_file("mine.txt")


async def test_cleanup_is_idempotent(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-cleanup")
    await box.write_files([FileWrite("keep.txt", b"k")])

    assert await provider.cleanup(box.id) is True
    assert await provider.cleanup(box.id) is False

    again = await provider.acquire("ses-cleanup")
    with pytest.raises(FileNotFoundError):
        await again.read_file("keep.txt")


async def test_executable_bits_are_kept(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-mode")
    await box.write_files([FileWrite("run.sh", b"#!/bin/sh\necho ran\n", mode=0o755)])

    result = await box.exec("./run.sh")

    assert result.output.strip() == "ran"


@pytest.mark.parametrize("provider", ["local", "local-plain"], indirect=True)
async def test_local_paths_cannot_leave_the_workspace(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-jail")
    outside = os.path.dirname(box.workdir)
    os.symlink("/etc/passwd", os.path.join(box.workdir, "leak"))
    os.symlink("/etc", os.path.join(box.workdir, "etcdir"))

    with pytest.raises(SandboxPathError):
        await box.read_file("../escape.txt")
    with pytest.raises(SandboxPathError):
        await box.write_files([FileWrite("sub/../../escape.txt", b"x")])
    with pytest.raises(SandboxPathError):
        await box.read_file("leak")
    with pytest.raises(SandboxPathError):
        await box.write_files([FileWrite("etcdir/evil.conf", b"x")])
    with pytest.raises(SandboxPathError):
        await box.list_dir("etcdir")
    with pytest.raises(FileNotFoundError):  # absolute paths are taken inside the workspace
        await box.read_file("/etc/passwd")
    await box.write_files([FileWrite("/etc/made-inside.txt", b"inside")])

    assert not _exists(os.path.join(outside, "escape.txt"))
    assert not _exists("/etc/made-inside.txt")
    assert await box.read_file(f"{box.workdir}/etc/made-inside.txt") == b"inside"


def _exists(path: str) -> bool:
    return os.path.lexists(path)


async def test_non_ascii_paths_write_read_list_and_delete(provider: SandboxProvider) -> None:
    box = await provider.acquire("ses-unicode")
    await box.write_files([FileWrite("données/résumé 📄.txt", "déjà vu".encode())])

    assert await box.read_file("données/résumé 📄.txt") == "déjà vu".encode()
    assert [e.path for e in await box.list_dir("données")] == [
        f"{box.workdir}/données/résumé 📄.txt"
    ]
    await box.delete("données")
    assert [e.path for e in await box.list_dir(".")] == []
