"""Where the running servers answer, in the forms their clients take."""

from __future__ import annotations

from dataclasses import dataclass

from devstack.config import Ports
from devstack.errors import StackError

TEMPORAL_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Addresses of a started stack.

    `ports` holds the bound ports; a server that is not enabled has port 0, and asking for its
    address raises `StackError`, so callers never get a half-formed URL.
    """

    host: str
    ports: Ports

    @property
    def temporal_port(self) -> int:
        return _required(self.ports.temporal, "temporal")

    @property
    def temporal_address(self) -> str:
        return f"{self.host}:{self.temporal_port}"

    @property
    def temporal_namespace(self) -> str:
        return TEMPORAL_NAMESPACE

    @property
    def temporal_ui_port(self) -> int:
        return _required(self.ports.temporal_ui, "temporal")

    @property
    def temporal_ui_url(self) -> str:
        return f"http://{self.host}:{self.temporal_ui_port}"

    @property
    def mongo_port(self) -> int:
        return _required(self.ports.mongo, "mongo")

    @property
    def mongodb_uri(self) -> str:
        # The server advertises a one-node replica set, which is what lets change streams and
        # transactions work; a direct connection skips the driver's replica-set discovery.
        return f"mongodb://{self.host}:{self.mongo_port}/?directConnection=true"

    @property
    def redis_host(self) -> str:
        return self.host

    @property
    def redis_port(self) -> int:
        return _required(self.ports.redis, "redis")

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    def as_dict(self) -> dict[str, str]:
        """The client-facing addresses of the enabled servers, keyed by what they are."""
        out: dict[str, str] = {}
        if self.ports.temporal:
            out["temporal_address"] = self.temporal_address
            out["temporal_namespace"] = self.temporal_namespace
            out["temporal_ui_url"] = self.temporal_ui_url
        if self.ports.mongo:
            out["mongodb_uri"] = self.mongodb_uri
        if self.ports.redis:
            out["redis_url"] = self.redis_url
        return out


def _required(port: int, service: str) -> int:
    if not port:
        raise StackError(f"{service} is not enabled in this stack")
    return port
