"""How each server is launched in the data directory, probed and nudged to stop."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack import health, net
from devstack.config import ServiceName, StackConfig
from devstack.endpoints import Endpoints
from devstack.process import ServerProcess, Signals

# An explicit config file stops secantusd-py from picking up ./secantusd.toml or
# ~/.secantus/secantusd.toml, so the stack behaves the same on every machine.
_SECANTUS_CONFIG = "# Written by devstack; every setting is passed on the command line.\n"


@dataclass(frozen=True, slots=True)
class Service:
    name: ServiceName
    process: ServerProcess
    probe: health.Probe
    ports: tuple[int, ...]
    nudge: Callable[[], None] | None = None


def build(
    name: ServiceName, binary: Path, config: StackConfig, data_dir: Path, endpoints: Endpoints
) -> Service:
    workdir = data_dir / name
    log = log_path(data_dir, name)
    if name == "temporal":
        return _temporal(binary, config, workdir, log, endpoints)
    if name == "mongo":
        return _mongo(binary, config, workdir, log, endpoints)
    return _redis(binary, config, workdir, log, endpoints)


def log_path(data_dir: Path, name: ServiceName) -> Path:
    return data_dir / "logs" / f"{name}.log"


def _temporal(
    binary: Path, config: StackConfig, workdir: Path, log_path: Path, endpoints: Endpoints
) -> Service:
    argv = [
        str(binary),
        "server",
        "start-dev",
        "--ip",
        endpoints.host,
        "--port",
        str(endpoints.temporal_port),
        "--ui-port",
        str(endpoints.temporal_ui_port),
        # The UI would otherwise fetch a news feed from the internet; the stack works offline.
        "--ui-disable-news-fetch",
        "--log-level",
        "warn",
    ]
    if not config.ephemeral:
        argv += ["--db-filename", str(workdir / "temporal.db")]
    probe = health.temporal_probe(
        endpoints.temporal_address, endpoints.temporal_namespace, endpoints.temporal_ui_url
    )
    process = ServerProcess("temporal", argv, workdir, log_path, Signals())
    return Service(
        "temporal", process, probe, (endpoints.temporal_port, endpoints.temporal_ui_port)
    )


IN_MEMORY_CACHE = "4G"


def _mongo(
    binary: Path, config: StackConfig, workdir: Path, log_path: Path, endpoints: Endpoints
) -> Service:
    config_file = workdir / "secantusd.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    config_file.write_text(_SECANTUS_CONFIG, encoding="utf-8")
    storage = str(workdir / "db") if config.keeps_mongo_data else ":memory:"
    argv = [
        str(binary),
        "--config",
        str(config_file),
        "--host",
        endpoints.host,
        "--port",
        str(endpoints.mongo_port),
        "--storage-path",
        storage,
        "--log-level",
        "INFO",
    ]
    if storage == ":memory:":
        # In memory, every document and every oplog entry (change streams read the oplog) must
        # fit in WiredTiger's cache, 1 GiB by default: a long run's status updates (megabytes
        # each) overflowed it with WT_CACHE_FULL. A larger ceiling (memory is only used as it
        # fills) and a shorter oplog window keep such runs inside it.
        argv += ["--cache-size", IN_MEMORY_CACHE, "--oplog-retention-seconds", "300"]
    host, port = endpoints.host, endpoints.mongo_port

    def nudge() -> None:
        # secantusd-py's accept thread sees the stop flag only when a connection arrives;
        # without one, every stop waits out a 2 s join. A connect makes stopping immediate.
        net.can_connect(host, port, timeout=0.1)

    # secantusd-py handles SIGTERM in its main thread, which waits on a lock: a SIGTERM that
    # the kernel hands to any other of its threads is never acted on. So the stop signal goes
    # to the main thread, and if this process dies the orphan gets SIGKILL, which always lands
    # (WiredTiger recovers from its journal as after a crash).
    signals = Signals(main_thread=True, on_parent_death=signal.SIGKILL)
    process = ServerProcess("mongo", argv, workdir, log_path, signals)
    return Service("mongo", process, health.mongo_probe(endpoints.mongodb_uri), (port,), nudge)


def _redis(
    binary: Path, config: StackConfig, workdir: Path, log_path: Path, endpoints: Endpoints
) -> Service:
    argv = [
        str(binary),
        "--bind",
        endpoints.host,
        "--port",
        str(endpoints.redis_port),
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        # No RDB snapshots: persistence, when wanted, is the append-only file.
        "--save",
        "",
        "--appendonly",
        "no" if config.ephemeral else "yes",
        "--loglevel",
        "notice",
    ]
    probe = health.redis_probe(endpoints.redis_host, endpoints.redis_port)
    process = ServerProcess("redis", argv, workdir, log_path, Signals())
    return Service("redis", process, probe, (endpoints.redis_port,))
