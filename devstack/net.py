"""Loopback ports: pick free ones, refuse taken ones."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from devstack.errors import StackError


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now.

    SO_REUSEADDR as the servers themselves set it, so a port whose last connections linger in
    TIME_WAIT (a server just restarted on it) counts as free, and a listening one does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free(host: str, port: int, what: str) -> None:
    if not port_is_free(host, port):
        raise StackError(
            f"{what}: port {host}:{port} is already in use; stop whatever listens there "
            "or choose another port (0 picks a free one)"
        )


def pick_free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports that are free now (the kernel picks them)."""
    with contextlib.ExitStack() as held:
        # All sockets stay bound until every port is chosen, so no port is handed out twice.
        socks = [held.enter_context(_bound(host)) for _ in range(count)]
        return [sock.getsockname()[1] for sock in socks]


@contextlib.contextmanager
def _bound(host: str) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock


def can_connect(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
