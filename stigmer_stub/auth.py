"""Who is calling: API keys with a name and a role, from `STIGMER_STUB_API_KEYS`.

`STIGMER_STUB_API_KEYS=name:role:key,...` with the roles `runner` (the agent-runner worker,
which pushes status) and `user` (people, the CLI, a console). When keys are configured every RPC
must carry `authorization: Bearer <key>` with one of them; the runner-only RPCs are refused to
users. Unset, the stub is open to anyone (and says so when it starts).

The caller's identity is available to the handlers through `current_caller()` (a context
variable set for the duration of each call), for audit fields such as `approved_by`.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass


class Role(enum.StrEnum):
    RUNNER = "runner"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller: the key's name and role (never the key itself)."""

    name: str
    role: Role
    authenticated: bool = True


ANONYMOUS = Caller(name="anonymous", role=Role.USER, authenticated=False)
"""Who calls an open stub (no keys configured): every RPC is allowed, since nothing tells a
runner from a user."""

RUNNER_ONLY_METHODS = frozenset({"updateStatus", "updateStatusDelta", "uploadContent"})
"""RPC names (of AgentExecutionCommandController) only a `runner` may call."""

OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})
"""Services answered without a key: health checks (probes carry no token) and reflection
(it lists the API's shape, no data)."""

_CALLER: ContextVar[Caller | None] = ContextVar("stigmer_stub_caller", default=None)


class KeyFormatError(ValueError):
    """`STIGMER_STUB_API_KEYS` is malformed; the message says which entry and why."""


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys; empty means the stub is open."""

    by_key: Mapping[str, Caller]

    @property
    def enabled(self) -> bool:
        return bool(self.by_key)

    @classmethod
    def parse(cls, spec: str | None) -> ApiKeys:
        """`name:role:key,...`; a key may itself contain `:`. Blank entries are skipped."""
        by_key: dict[str, Caller] = {}
        names: set[str] = set()
        for index, raw in enumerate((spec or "").split(",")):
            entry = raw.strip()
            if not entry:
                continue
            name, _, rest = entry.partition(":")
            role, _, key = rest.partition(":")
            where = f"entry {index + 1}"
            if not name or not key:
                raise KeyFormatError(f"{where}: expected name:role:key")
            if role not in {r.value for r in Role}:
                raise KeyFormatError(f"{where} ({name}): role must be runner or user")
            if len(key) < 16:
                raise KeyFormatError(f"{where} ({name}): a key needs at least 16 characters")
            if name in names:
                raise KeyFormatError(f"{where}: the name {name!r} is used twice")
            if key in by_key:
                raise KeyFormatError(f"{where} ({name}): the same key is given twice")
            names.add(name)
            by_key[key] = Caller(name=name, role=Role(role))
        return cls(by_key)

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller | None:
        """The caller a request's `authorization: Bearer <key>` names; None if none matches."""
        token = _bearer(metadata)
        if token is None:
            return None
        found: Caller | None = None
        for key, caller in self.by_key.items():
            # Compare against every key in constant time, so timing tells nothing about keys.
            if hmac.compare_digest(key.encode(), token.encode()):
                found = caller
        return found


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def current_caller() -> Caller | None:
    """Who is making the current RPC (None outside an RPC)."""
    return _CALLER.get()


def bind_caller(caller: Caller | None) -> object:
    """Set the current caller; returns a token for `unbind_caller`."""
    return _CALLER.set(caller)


def unbind_caller(token: object) -> None:
    _CALLER.reset(token)  # type: ignore[arg-type]


def may_see_secrets() -> bool:
    """Whether the current caller may read secret runtime-env values in clear: runners, code
    running outside any RPC (the stub's own workflow activities), and anyone on an open stub
    (without keys nothing tells the runner from a user, and the runner needs the values)."""
    caller = current_caller()
    return caller is None or not caller.authenticated or caller.role is Role.RUNNER
