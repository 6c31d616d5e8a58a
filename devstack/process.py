"""One server child process: its own process group, its log file, and a clean way to end it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from devstack.errors import StackError

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
_WAIT_STEP = 0.1


def _libc_function(name: str) -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_function("prctl")
_TGKILL = _libc_function("tgkill")


@dataclass(frozen=True, slots=True)
class Signals:
    """How a server is told to stop.

    `main_thread`: deliver the stop signal to the main thread rather than to the process. A
    Python server whose main thread waits on a lock runs its handler only when the signal lands
    on that thread; one that lands on any other thread is noticed never.
    `on_parent_death`: what the child gets if this process dies without stopping it (Linux).
    """

    main_thread: bool = False
    on_parent_death: signal.Signals = signal.SIGTERM


def _parent_death_hook(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send `sig` to the child when its parent dies.

    That covers the exits no handler sees (SIGKILL, a crash). prctl is resolved at import, in
    the parent, so the child does as little as possible between fork and exec.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return hook


class Spawner:
    """Starts every child from one long-lived thread.

    The kernel sends the parent-death signal when the *thread* that forked the child exits, not
    the process; children forked from a short-lived thread (a pool used for concurrent startup,
    `asyncio.to_thread` in a test) would be signalled as soon as that thread ends. This thread
    lives until `close`, which the stack calls after its children are gone.
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack-spawner")

    def spawn(
        self,
        argv: list[str],
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str],
        on_parent_death: signal.Signals,
    ) -> subprocess.Popen[bytes]:
        future = self._thread.submit(self._spawn, argv, cwd, log_path, env, on_parent_death)
        return future.result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    @staticmethod
    def _spawn(
        argv: list[str],
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str],
        on_parent_death: signal.Signals,
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            return subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own group: a terminal's Ctrl-C reaches only us, and we stop the children in
                # order; stopping a group also reaches anything a server forked.
                process_group=0,
                # preexec_fn is unsafe with threads when it takes locks; this one only calls
                # prctl (resolved before fork) and getppid.
                preexec_fn=_parent_death_hook(on_parent_death),  # noqa: PLW1509
            )


class ServerProcess:
    """A started server; knows its log and how to end its whole process group."""

    def __init__(
        self, name: str, argv: list[str], cwd: Path, log_path: Path, signals: Signals
    ) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.log_path = log_path
        self.signals = signals
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, spawner: Spawner, env: Mapping[str, str]) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._log_offset = out.tell()
        try:
            self._popen = spawner.spawn(
                self.argv, self.cwd, self.log_path, env, self.signals.on_parent_death
            )
        except OSError as err:
            raise StackError(f"{self.name}: cannot run {self.argv[0]}: {err}") from err
        log.debug("server_spawned", server=self.name, pid=self._popen.pid, argv=self.argv)

    def stop(
        self, timeout: float, *, graceful: bool = True, nudge: Callable[[], None] | None = None
    ) -> None:
        """SIGTERM (SIGKILL when not graceful), wait up to `timeout`, then SIGKILL the group.

        `nudge` is called while waiting, for servers that notice a stop only on their next event.
        Afterwards the process counts as never started: no pid, not exited.
        """
        popen = self._popen
        if popen is None:
            return
        pgid = popen.pid
        if not graceful:
            _signal_group(pgid, signal.SIGKILL)
        elif not (self.signals.main_thread and _signal_main_thread(pgid, signal.SIGTERM)):
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while popen.poll() is None and time.monotonic() < deadline:
            if nudge is not None:
                nudge()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=_WAIT_STEP)
        if popen.poll() is None:
            log.warning("server_killed", server=self.name, pid=pgid, waited_s=timeout)
            _signal_group(pgid, signal.SIGKILL)
            popen.wait()
        # Whatever the server forked and left behind goes with it.
        _signal_group(pgid, signal.SIGKILL)
        self._popen = None
        log.debug("server_stopped", server=self.name, pid=pgid, returncode=popen.returncode)

    def log_tail(self, max_lines: int = 40) -> str:
        """What the server logged since its last start, last lines only."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-max_lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_main_thread(pid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the main thread of `pid` (whose thread id is the pid); False if we cannot."""
    if _TGKILL is None:
        return False
    return bool(_TGKILL(pid, pid, int(sig)) == 0)
