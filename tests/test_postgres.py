"""The tests' own PostgreSQL (`tests/postgres.py`): starts without adding a user, and without
`/usr/sbin` (or anything else) on PATH, as root or not."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import psycopg
import pytest

from tests.postgres import throwaway_postgres

pytestmark = pytest.mark.integration


def test_starts_without_a_new_user_or_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    users = Path("/etc/passwd").read_bytes()
    monkeypatch.setenv("PATH", "/nonexistent")

    with throwaway_postgres() as url, psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_user, 6 * 7").fetchone()
        data = conn.execute("SHOW data_directory").fetchone()
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        server_uid = Path(f"/proc/{backend[0]}").stat().st_uid

    assert row == ("postgres", 42)
    assert Path("/etc/passwd").read_bytes() == users, "no system user was added"
    assert data is not None and not Path(data[0]).exists(), "its directory is removed after"
    # As root the server runs as the existing `nobody`, otherwise as the user running the tests.
    expected = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert server_uid == expected
