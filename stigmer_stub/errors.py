"""The stub's typed errors. Transport-agnostic; `stigmer_stub.rpc.interceptor` maps them to gRPC
status codes (`status_code`) for every servicer."""

from __future__ import annotations

from stigmer_stub.limits import clip


class StubError(Exception):
    """Base of every error the stub reports to its callers as a status, not a crash."""


class InvalidArgument(StubError):
    """The request is malformed; the message starts with the offending field's path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class TooLarge(InvalidArgument):
    """A write would make a stored document larger than the store accepts (16 MB)."""


class NotFound(StubError):
    def __init__(self, kind: str, key: str, *, field: str | None = None) -> None:
        where = f"{field}: " if field else ""
        super().__init__(f"{where}{kind} {clip(key)!r} not found")
        self.kind = kind
        self.key = key


class AlreadyExists(StubError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {clip(key)!r} already exists")
        self.kind = kind
        self.key = key


class FailedPrecondition(StubError):
    """The request is well-formed but the resource's state does not allow it."""


class DataLoss(StubError):
    """Bytes received do not match what the request said they are (a content's sha256)."""


class Conflict(StubError):
    """A compare-and-swap write kept losing to concurrent writers; the caller may retry."""


class Unavailable(StubError):
    """A backend the stub depends on (Temporal, MongoDB) did not answer in time."""
