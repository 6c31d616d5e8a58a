"""`updateStatusDelta` (contract §7, ours): a status update carrying only what changed.

A delta names the update it applies on (`base_seq`, within the attempt of `x-stigmer-attempt`)
and its own number (`seq`, also `x-stigmer-seq`). The execution's attempt fence
(`stigmer_stub.fencing`) already records the newest attempt and the number of the last update
stored from it, whole or delta, so a delta is applied when, and only when, the fence names its
attempt and `base_seq`:

- the fence is at `base_seq` of the same attempt: the delta is applied, under the same
  compare-and-swap as `updateStatus`, and the fence moves to `seq`;
- the fence is at `seq` or later of the same attempt: a duplicate, acknowledged, nothing written;
- anything else (a gap, another attempt, no attempt metadata, an entry whose id is not the
  stored one at its position, a final digest that differs): nothing is written and the ack asks
  for a resync; the runner then sends the whole status through `updateStatus`.

The lists are applied on the stored entries as they are encoded: a replaced or appended entry is
the delta's encoding, an appended text re-encodes only its message. The store then writes only
the slices that changed (`store/executions.py`), so a delta late in a long run costs what it
carries, not the transcript.

`STIGMER_STUB_STATUS_DELTAS=false` turns the method off: it answers UNIMPLEMENTED, as an
orchestrator of the January contract does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, io_pb2

from stigmer_stub import fencing
from stigmer_stub.errors import InvalidArgument
from stigmer_stub.logs import get_logger
from stigmer_stub.status_wire import LISTS, SplitStatus, StatusLists, entries

log = get_logger(__name__)

Delta = io_pb2.AgentExecutionStatusDelta
Ack = io_pb2.StatusDeltaAck

_ID_TYPES: dict[str, type[api_pb2.ToolCall] | type[api_pb2.SubAgentExecution]] = {
    "tool_calls": api_pb2.ToolCall,
    "sub_agent_executions": api_pb2.SubAgentExecution,
}


class DeltaRefused(Exception):
    """The delta is not applied; `ack` says why (duplicate or resync)."""

    def __init__(self, ack: Ack) -> None:
        super().__init__(ack.reason)
        self.ack = ack


def status_digest(status: api_pb2.AgentExecutionStatus) -> str:
    """sha256 hex of the runner-written fields of a status, encoded deterministically."""
    canonical = api_pb2.AgentExecutionStatus()
    canonical.CopyFrom(status)
    canonical.ClearField("audit")
    canonical.ClearField("callback_token")
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


def _resync(stored_seq: int, reason: str) -> DeltaRefused:
    return DeltaRefused(Ack(resync=True, stored_seq=stored_seq, reason=reason))


def check_order(
    fence: Mapping[str, Any] | None, attempt: fencing.Attempt | None, delta: Delta
) -> None:
    """Raise `DeltaRefused` unless the stored fence is exactly at the delta's base."""
    if attempt is None:
        raise _resync(0, f"a delta needs {fencing.ATTEMPT_HEADER} metadata")
    stored = dict(fence or {})
    runs = list(stored.get("runs", []))
    same = (
        bool(runs) and runs[-1] == attempt.run and int(stored.get("attempt", 0)) == attempt.number
    )
    stored_seq = int(stored.get("seq", 0)) if same else 0
    if same and delta.seq <= stored_seq:
        raise DeltaRefused(
            Ack(duplicate=True, stored_seq=stored_seq, reason=f"update {stored_seq} is stored")
        )
    if not same:
        raise _resync(0, f"no update of attempt {attempt.label} is stored")
    if delta.base_seq != stored_seq:
        raise _resync(
            stored_seq, f"the delta applies on update {delta.base_seq}, {stored_seq} is stored"
        )


class EntryList(Protocol):
    """A stored list as the delta edits it: read, replace or append entries by position."""

    def __len__(self) -> int: ...
    def __getitem__(self, position: int) -> bytes: ...
    def __setitem__(self, position: int, entry: bytes) -> None: ...
    def append(self, entry: bytes) -> None: ...


def _place(
    name: str,
    stored: EntryList,
    positions: Sequence[int],
    arrived: Sequence[bytes],
    stored_seq: int,
) -> None:
    """Put each arrived entry at its position (a replaced entry keeps its id)."""
    if len(positions) != len(arrived):
        raise InvalidArgument(name, f"{len(arrived)} entries for {len(positions)} positions")
    kind = _ID_TYPES.get(name)
    for position, entry in zip(positions, arrived, strict=True):
        if position == len(stored):
            stored.append(entry)
        elif 0 <= position < len(stored):
            if (
                kind is not None
                and kind.FromString(stored[position]).id != kind.FromString(entry).id
            ):
                raise _resync(stored_seq, f"{name}[{position}] holds another id")
            stored[position] = entry
        else:
            raise _resync(stored_seq, f"{name}[{position}] is past the {len(stored)} stored")


def touched(delta: Delta) -> dict[str, list[int]]:
    """The positions of each list the delta reads or replaces (appends included)."""
    messages = list(delta.message_positions)
    if delta.appended_text:
        messages.append(delta.appended_position)
    return {
        "messages": messages,
        "tool_calls": list(delta.tool_call_positions),
        "sub_agent_executions": list(delta.sub_agent_positions),
    }


def apply_lists(delta: Delta, raw: bytes, lists: Mapping[str, EntryList]) -> list[bytes] | None:
    """Apply the delta on the stored `messages`, `tool_calls` and `sub_agent_executions`
    (`raw` is the delta as it arrived, read for its entries' encodings); the new `todos` when
    the delta replaces them, else None."""
    view = cast(Any, StatusLists.FromString(raw))
    seq = delta.base_seq
    messages = lists["messages"]
    if delta.appended_text:
        position = delta.appended_position
        if not 0 <= position < len(messages):
            raise _resync(seq, f"messages[{position}] to append to is not stored")
        message = api_pb2.AgentMessage.FromString(messages[position])
        message.content += delta.appended_text
        messages[position] = message.SerializeToString()
    _place("messages", messages, delta.message_positions, list(view.messages), seq)
    _place("tool_calls", lists["tool_calls"], delta.tool_call_positions, list(view.tool_calls), seq)
    _place(
        "sub_agent_executions",
        lists["sub_agent_executions"],
        delta.sub_agent_positions,
        list(view.sub_agent_executions),
        seq,
    )
    return list(view.todos) if delta.todos_changed else None


def applied_lists(delta: Delta, raw: bytes, chunks: Mapping[str, bytes]) -> dict[str, list[bytes]]:
    """The stored lists (`chunks`, whole) with the delta applied."""
    lists = {name: entries(name, chunks[name]) if chunks.get(name) else [] for name in LISTS}
    todos = apply_lists(delta, raw, lists)
    if todos is not None:
        lists["todos"] = todos
    return lists


def rest_of(delta: Delta) -> api_pb2.AgentExecutionStatus:
    """The delta's fields other than the lists, as a status (merged like `updateStatus`'s)."""
    rest = api_pb2.AgentExecutionStatus(
        phase=delta.phase,
        error=delta.error,
        started_at=delta.started_at,
        completed_at=delta.completed_at,
    )
    if delta.HasField("usage"):
        rest.usage.CopyFrom(delta.usage)
    return rest


def check_digest(delta: Delta, rest: api_pb2.AgentExecutionStatus, lists: SplitStatus) -> None:
    """On a final delta, the status it leads to must be the runner's, digest for digest."""
    if not delta.final_digest:
        return
    whole = api_pb2.AgentExecutionStatus()
    whole.CopyFrom(rest)
    status_lists = StatusLists()
    for name in LISTS:
        getattr(cast(Any, status_lists), name).extend(lists.lists[name])
    whole.MergeFromString(status_lists.SerializeToString())
    digest = status_digest(whole)
    if digest != delta.final_digest:
        log.warning(
            "status_delta_digest_mismatch",
            execution_id=delta.execution_id,
            seq=delta.seq,
            expected=delta.final_digest,
            stored=digest,
        )
        raise _resync(delta.base_seq, "the final digest differs from the stored status")
