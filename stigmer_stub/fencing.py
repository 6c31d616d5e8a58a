"""Attempt fencing of `updateStatus`: which runner attempt may still write an execution's status.

The January request carries no attempt, so the runner sends it in gRPC metadata:
`x-stigmer-attempt: <run key>/<activity attempt>` (the runner's run key is
`<workflow run id>:<activity id>`) and `x-stigmer-seq: <n>`, the number of the update within
that attempt (it grows with every call, retries included). The stub keeps, per execution, a
`fence` document field (never part of the proto):

- `runs`: the workflow run ids seen, in the order they first wrote (a new run, started by
  `recover`, comes after the runs before it);
- `attempt` and `seq`: the newest activity attempt of the newest run, and the highest sequence
  number applied from it;
- `ended_by`: once the phase is terminal, the attempt whose update made it so (`""` when the
  orchestrator's own verdict, or an update without attempt metadata, ended the run).

The rules (docs/architecture.md, "Attempt fencing"):

1. An update from an older run, an older attempt of the newest run, or an older sequence
   number of the newest attempt is refused (FAILED_PRECONDITION): a stalled attempt that Temporal
   already replaced cannot overwrite its successor's transcript.
2. Once the phase is terminal, only the attempt that ended the run may still write (its final
   push, retried: idempotent); anything else is refused, attempt metadata or not.
3. Before the end, an update without attempt metadata (a January runner) is applied as before.

The orchestrator's own verdict (`finalize`) is not a runner update and is not fenced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stigmer_stub.errors import FailedPrecondition, InvalidArgument
from stigmer_stub.limits import clip

ATTEMPT_HEADER = "x-stigmer-attempt"
SEQ_HEADER = "x-stigmer-seq"
FENCE_FIELD = "fence"
"""The execution document's field holding the fence (see the module docstring)."""

_MAX_RUN_ID = 200
_MAX_RUNS = 100
"""Runs remembered per execution; the oldest are forgotten (each `recover` adds one)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """Which runner attempt sent an update: workflow run id, activity attempt, sequence."""

    run: str
    number: int
    seq: int

    @property
    def label(self) -> str:
        return f"{self.run}/{self.number}"


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Attempt | None:
    """The attempt an update's metadata names; None without `x-stigmer-attempt`.

    Malformed values are INVALID_ARGUMENT (naming the header), never ignored: a runner that
    sends a fence expects it to hold.
    """
    values = {key: value for key, value in metadata or () if key in (ATTEMPT_HEADER, SEQ_HEADER)}
    raw = values.get(ATTEMPT_HEADER)
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    run, _, number = text.rpartition("/")
    if not run or len(run) > _MAX_RUN_ID or not _is_count(number, minimum=1):
        raise InvalidArgument(
            ATTEMPT_HEADER, f"expected <workflow run id>/<attempt number>, got {clip(text)!r}"
        )
    raw_seq = values.get(SEQ_HEADER, "0")
    seq_text = raw_seq.decode("utf-8", "replace") if isinstance(raw_seq, bytes) else raw_seq
    if not _is_count(seq_text, minimum=0):
        raise InvalidArgument(SEQ_HEADER, f"expected a whole number, got {clip(seq_text)!r}")
    return Attempt(run, int(number), int(seq_text))


def _is_count(text: str, *, minimum: int) -> bool:
    # Bounded length: a 64-bit number at most (MongoDB stores no bigger integer).
    return text.isascii() and text.isdigit() and len(text) <= 18 and int(text) >= minimum


def admit(
    fence: Mapping[str, Any] | None,
    attempt: Attempt | None,
    *,
    terminal_before: bool,
    terminal_after: bool,
) -> dict[str, Any] | None:
    """Check a runner update against the stored fence; the fence to store after it lands.

    Raises `FailedPrecondition` when the update must not be applied. Returns None when the
    fence does not change.
    """
    stored = dict(fence or {})
    runs: list[str] = list(stored.get("runs", []))
    if terminal_before:
        ended_by = stored.get("ended_by", "")
        if attempt is None:
            raise FailedPrecondition(
                "the execution has ended; an update without attempt metadata "
                f"({ATTEMPT_HEADER}) cannot change it"
            )
        if not ended_by or attempt.label != ended_by:
            raise FailedPrecondition(
                f"the execution has ended; only the attempt that ended it ({ended_by or 'none'})"
                f" may still update it, not {clip(attempt.label)}"
            )
        # The ending attempt's final push again (a retry): idempotent, the fence stays.
        return None
    if attempt is None:
        if terminal_after:
            return {**stored, "ended_by": ""}
        return None
    if attempt.run in runs and attempt.run != runs[-1]:
        raise FailedPrecondition(
            f"{ATTEMPT_HEADER} {clip(attempt.label)}: a newer workflow run ({runs[-1]}) owns "
            "this execution"
        )
    if runs and attempt.run == runs[-1]:
        latest, seq = int(stored.get("attempt", 0)), int(stored.get("seq", 0))
        if attempt.number < latest:
            raise FailedPrecondition(
                f"{ATTEMPT_HEADER} {clip(attempt.label)}: attempt {latest} of this run "
                "has replaced it"
            )
        if attempt.number == latest and attempt.seq < seq:
            raise FailedPrecondition(
                f"{SEQ_HEADER} {attempt.seq}: update {seq} of this attempt was applied already"
            )
    else:
        runs = [*runs, attempt.run][-_MAX_RUNS:]
    updated: dict[str, Any] = {"runs": runs, "attempt": attempt.number, "seq": attempt.seq}
    if terminal_after:
        updated["ended_by"] = attempt.label
    return updated


def after_verdict(
    fence: Mapping[str, Any] | None, *, terminal_before: bool, terminal_after: bool
) -> dict[str, Any] | None:
    """The fence after the orchestrator's own verdict: if it ended the run, no runner attempt
    did, so none may write any more."""
    if terminal_before or not terminal_after:
        return None
    return {**(fence or {}), "ended_by": ""}
