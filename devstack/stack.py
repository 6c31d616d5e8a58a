"""The embedded stack: start the enabled servers together, hand out endpoints, stop them all."""

from __future__ import annotations

import atexit
import fcntl
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO

import structlog

from devstack import binaries, health, net, services
from devstack.config import Ports, ServiceName, StackConfig
from devstack.endpoints import Endpoints
from devstack.errors import StackError
from devstack.process import Spawner
from devstack.services import Service

log = structlog.get_logger(__name__)

_LOCK_FILE = "devstack.lock"


class Stack:
    """Real Temporal, MongoDB-wire and Valkey servers as child processes of this one.

    `start` blocks until every enabled server answers its health probe and returns the
    endpoints; `stop` is idempotent and leaves no child behind. Children also get SIGTERM if
    this process dies without stopping them (Linux). Not safe to start or stop from several
    threads at once; the per-server helpers are meant for tests that inject faults.
    """

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.data_dir = self.config.data_dir.expanduser().resolve()
        self._lock = threading.RLock()
        self._abort = threading.Event()
        self._services: dict[ServiceName, Service] = {}
        self._endpoints: Endpoints | None = None
        self._spawner: Spawner | None = None
        self._dir_lock: IO[str] | None = None

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise StackError("the stack is not started")
        return self._endpoints

    @property
    def running(self) -> bool:
        return self._spawner is not None

    def start(self) -> Endpoints:
        """Start every enabled server concurrently and wait until all are healthy."""
        with self._lock:
            if self._spawner is not None:
                raise StackError("the stack is already started")
            began = time.monotonic()
            found = _resolve_binaries(self.config)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._dir_lock = _lock_data_dir(self.data_dir)
            try:
                endpoints = Endpoints(self.config.host, _assign_ports(self.config))
            except BaseException:
                self._release_dir()
                raise
            self._abort.clear()
            self._spawner = Spawner()
            self._endpoints = endpoints
            atexit.register(self.stop)
        try:
            for name in self.config.enabled:
                self._services[name] = services.build(
                    name, found[name], self.config, self.data_dir, endpoints
                )
                self._spawn(name)
            self._await_all()
        except BaseException:
            self.stop()
            raise
        log.info(
            "stack_started",
            data_dir=str(self.data_dir),
            elapsed_s=round(time.monotonic() - began, 2),
            **endpoints.as_dict(),
        )
        return endpoints

    def stop(self) -> None:
        """Stop every server (SIGTERM to its process group, then SIGKILL). Idempotent."""
        with self._lock:
            if self._spawner is None:
                return
            self._abort.set()
            for name in reversed(list(self._services)):
                self._stop(name, graceful=True)
            self._services.clear()
            self._spawner.close()
            self._spawner = None
            self._endpoints = None
            self._release_dir()
            atexit.unregister(self.stop)
        log.info("stack_stopped", data_dir=str(self.data_dir))

    def pids(self) -> dict[ServiceName, int]:
        """Process ids of the servers that are running now."""
        with self._lock:
            return {
                name: pid
                for name, svc in self._services.items()
                if svc.process.alive() and (pid := svc.process.pid) is not None
            }

    def exited(self) -> dict[ServiceName, int | None]:
        """Servers that should be running but are not, with their exit codes."""
        with self._lock:
            return {
                name: svc.process.returncode
                for name, svc in self._services.items()
                if svc.process.pid is not None and not svc.process.alive()
            }

    def log_path(self, name: ServiceName) -> Path:
        """The server's log file (kept after the stack stops, appended to on each start)."""
        return services.log_path(self.data_dir, name)

    def stop_service(self, name: ServiceName, *, graceful: bool = True) -> None:
        """Stop one server; `graceful=False` SIGKILLs it, as a crash would."""
        with self._lock:
            self._service(name)
            self._stop(name, graceful=graceful)

    def start_service(self, name: ServiceName) -> None:
        """Start a stopped server again on the same port and data; blocks until it is healthy."""
        with self._lock:
            svc = self._service(name)
            if svc.process.alive():
                return
            for port in svc.ports:
                net.require_free(self.config.host, port, name)
            self._spawn(name)
        self._await(name)

    def restart(self, name: ServiceName, *, graceful: bool = True) -> None:
        self.stop_service(name, graceful=graceful)
        self.start_service(name)

    def _service(self, name: ServiceName) -> Service:
        svc = self._services.get(name)
        if svc is None or self._spawner is None:
            raise StackError(f"{name} is not part of this running stack")
        return svc

    def _spawn(self, name: ServiceName) -> None:
        with self._lock:
            if self._spawner is None or self._abort.is_set():
                raise StackError(f"{name}: the stack is stopping")
            env = dict(os.environ)
            scratch = self.data_dir / name / "tmp"
            scratch.mkdir(parents=True, exist_ok=True)
            # Scratch files (an in-memory MongoDB's WiredTiger home) stay in the data dir.
            env["TMPDIR"] = str(scratch)
            self._services[name].process.start(self._spawner, env)

    def _await(self, name: ServiceName) -> None:
        svc = self._services[name]
        began = time.monotonic()
        health.wait_healthy(svc.process, svc.probe, self.config.startup_timeout, self._abort)
        log.info(
            "server_ready",
            server=name,
            pid=svc.process.pid,
            ports=list(svc.ports),
            elapsed_s=round(time.monotonic() - began, 2),
        )

    def _await_all(self) -> None:
        names = list(self._services)
        pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="devstack-health")
        try:
            futures = [pool.submit(self._await, name) for name in names]
            errors: list[str] = []
            for future in futures:
                try:
                    future.result()
                except StackError as err:
                    errors.append(str(err))
        except BaseException:
            self._abort.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if errors:
            raise StackError("\n\n".join(errors))

    def _stop(self, name: ServiceName, *, graceful: bool) -> None:
        svc = self._services[name]
        svc.process.stop(self.config.stop_timeout, graceful=graceful, nudge=svc.nudge)

    def _release_dir(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.close()
            self._dir_lock = None


def _resolve_binaries(config: StackConfig) -> dict[ServiceName, Path]:
    found: dict[ServiceName, Path] = {}
    errors: list[str] = []
    for name in config.enabled:
        try:
            found[name] = binaries.resolve(name, config.search_path)
        except StackError as err:
            errors.append(str(err))
    if errors:
        raise StackError("\n".join(errors))
    return found


def _assign_ports(config: StackConfig) -> Ports:
    """The configured ports, each checked free, with 0 replaced by a free port."""
    wanted = {
        "temporal": config.ports.temporal if config.temporal else None,
        "temporal_ui": config.ports.temporal_ui if config.temporal else None,
        "mongo": config.ports.mongo if config.mongo else None,
        "redis": config.ports.redis if config.redis else None,
    }
    errors: list[str] = []
    for role, port in wanted.items():
        if port:
            try:
                net.require_free(config.host, port, role)
            except StackError as err:
                errors.append(str(err))
    if errors:
        raise StackError("\n".join(errors))
    picks = iter(net.pick_free_ports(config.host, sum(p == 0 for p in wanted.values())))
    chosen = {
        role: (port or next(picks)) if port is not None else 0 for role, port in wanted.items()
    }
    return Ports(**chosen)


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """One stack per data directory: two would fight over the same database files."""
    handle = (data_dir / _LOCK_FILE).open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise StackError(
            f"data dir {data_dir} is in use by another devstack (pid {owner}); "
            "stop it or choose another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
