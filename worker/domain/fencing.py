"""Which attempt a status update comes from, sent along so the orchestrator can fence it.

Temporal may run a second attempt of ExecuteGraphton while a first one is still alive (its
heartbeats timed out, but the process did not die). Both push status; the orchestrator must keep
the newer one's. The January `updateStatus` request has no room for that, so every update
carries two gRPC metadata entries:
`x-stigmer-attempt: <workflow run id>:<activity id>/<activity attempt>` and
`x-stigmer-seq: <n>`, the update's number within the attempt (retries get a new number). An
orchestrator that does not know them ignores them; the stub refuses updates from an attempt
older than the newest it has seen (docs/architecture.md, "Attempt fencing").

The values travel in context variables: the execution service binds the attempt for the run
(tasks it starts inherit it), the status publisher sets the sequence number around each call,
and the gRPC adapter reads both when it sends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

ATTEMPT_HEADER = "x-stigmer-attempt"
SEQ_HEADER = "x-stigmer-seq"


@dataclass(frozen=True, slots=True)
class RunAttempt:
    """One activity attempt: the workflow run it belongs to and its number (from 1)."""

    run_id: str
    number: int

    @property
    def label(self) -> str:
        return f"{self.run_id}/{self.number}"


_ATTEMPT: ContextVar[RunAttempt | None] = ContextVar("stigmer_run_attempt", default=None)
_SEQ: ContextVar[int | None] = ContextVar("stigmer_update_seq", default=None)


@contextlib.contextmanager
def attempt_bound(attempt: RunAttempt | None) -> Iterator[None]:
    """Status updates sent inside the block (and by tasks started in it) name `attempt`."""
    token = _ATTEMPT.set(attempt)
    try:
        yield
    finally:
        _ATTEMPT.reset(token)


@contextlib.contextmanager
def update_numbered(seq: int) -> Iterator[None]:
    """The status update sent inside the block is number `seq` of its attempt."""
    token = _SEQ.set(seq)
    try:
        yield
    finally:
        _SEQ.reset(token)


def update_metadata() -> tuple[tuple[str, str], ...]:
    """The metadata entries for a status update sent now (none outside an attempt)."""
    attempt = _ATTEMPT.get()
    if attempt is None:
        return ()
    seq = _SEQ.get()
    entries = [(ATTEMPT_HEADER, attempt.label)]
    if seq is not None:
        entries.append((SEQ_HEADER, str(seq)))
    return tuple(entries)
