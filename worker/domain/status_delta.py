"""Status updates that carry what changed since the last one the orchestrator stored.

A whole status per update makes a run send bytes that grow with the square of its length. The
incremental form (`updateStatusDelta`, contract §7, ours) sends only the entries that changed
since the update the orchestrator acknowledged last, numbered so it can apply them in order,
exactly once, and ask for the whole status when it cannot.

The builder already keeps each entry's encoding until the entry changes (`status_wire`), so
an unchanged entry is the *same* bytes object from one update to the next. `StatusParts` is the
status as those cached pieces; `DeltaTracker` compares the pieces of the newest status with
those of the acknowledged one by identity (equality for the rare other case) and encodes the
difference. `AgentExecutionStatusDelta` keeps the status's field numbers for the status's own
fields, so a cached entry goes into the delta as it is, without re-encoding.

A streaming answer changes only by growing: when the last acknowledged message and its new
version differ only in `content`, and the new content extends the old, the delta carries the
appended text alone (`appended_text`), not the whole message again.

A resync (the orchestrator lost the base) sends the whole status. When it is larger than a
message may carry (`PAGE_BYTES`), it goes as pages (`resync_pages`): deltas marked
`resync_page` whose entries append to an empty status, each under the bound, the last one with
`resync_from` and the rest of the status; the orchestrator holds the pages and stores the whole
status at once when the last arrives.

The final update carries `final_digest`: sha256 of the whole status encoded deterministically
(`status_digest`), which the orchestrator compares with what it stored before it accepts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from worker.domain import status_wire as w

# AgentExecutionStatusDelta fields of its own (io.proto); the status's fields keep their numbers.
EXECUTION_ID = 101
SEQ = 102
BASE_SEQ = 103
MESSAGE_POSITIONS = 104
TOOL_CALL_POSITIONS = 105
SUB_AGENT_POSITIONS = 106
TODOS_CHANGED = 107
APPENDED_TEXT = 108
APPENDED_POSITION = 109
FINAL_DIGEST = 110
RESYNC_PAGE = 111
RESYNC_FROM = 112

PAGE_BYTES = 3 * 1024 * 1024
"""The most a resync page carries: under gRPC's default 4 MiB receive limit, with room for the
call's framing. A status larger than this is resent in pages (`resync_pages`)."""
_PAGE_FRAMING = 64 * 1024
"""Room kept in a page for its numbering, positions and scalars."""


@dataclass(frozen=True, slots=True)
class StatusParts:
    """A status as its entries' cached encodings (each a field of `AgentExecutionStatus`:
    tag, length, payload), in the order `StatusBuilder.encoded` joins them."""

    messages: list[bytes]
    phase: enum_pb2.ExecutionPhase.ValueType
    tool_calls: list[bytes]
    tool_ids: list[str]
    sub_agents: list[bytes]
    sub_ids: list[str]
    error: str
    started_at: str
    completed_at: str
    todos: list[bytes]
    usage: bytes  # the `usage` field, b"" when unset

    @property
    def size(self) -> int:
        """Bytes of the whole encoded status."""
        lists = (self.messages, self.tool_calls, self.sub_agents, self.todos)
        return sum(len(e) for entries in lists for e in entries) + len(self._scalars())

    def head(self) -> list[bytes]:
        """The phase, error and times, each encoded as its field (unset ones left out)."""
        return [*self._phase(), *self._texts()]

    def _phase(self) -> list[bytes]:
        return [w.varint_field(w.PHASE, self.phase)] if self.phase else []

    def _texts(self) -> list[bytes]:
        """The error and the times, encoded (unset ones left out)."""
        return [
            w.length_delimited(number, text.encode())
            for number, text in (
                (w.ERROR, self.error),
                (w.STARTED_AT, self.started_at),
                (w.COMPLETED_AT, self.completed_at),
            )
            if text
        ]

    def _scalars(self) -> bytes:
        return b"".join((*self.head(), self.usage))

    def encoded(self) -> w.EncodedStatus:
        """The whole status, the same bytes `StatusBuilder.encoded` produces."""
        # In field-number order, as protobuf serializes a status.
        parts = [
            *self.messages,
            *self._phase(),
            *self.tool_calls,
            *self.sub_agents,
            *self._texts(),
            *self.todos,
            self.usage,
        ]
        return w.EncodedStatus(
            pieces=parts,
            phase=self.phase,
            messages=len(self.messages),
            tool_calls=len(self.tool_calls),
            todos=len(self.todos),
            sub_agents=len(self.sub_agents),
        )


def status_digest(status: api_pb2.AgentExecutionStatus) -> str:
    """sha256 hex of the status's runner-written fields, encoded deterministically (map
    entries sorted), so both sides compute it from their own parse of the same content."""
    canonical = api_pb2.AgentExecutionStatus()
    canonical.CopyFrom(status)
    canonical.ClearField("audit")
    canonical.ClearField("callback_token")
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True, slots=True)
class Delta:
    """One encoded `AgentExecutionStatusDelta` and what logs want to know about it."""

    data: bytes
    seq: int
    base_seq: int
    entries: int  # entries carried (messages, tool calls, sub-agents), appended text counting one
    final: bool

    def ByteSize(self) -> int:
        return len(self.data)


def _changed(new: list[bytes], old: list[bytes]) -> list[int]:
    """Positions in `new` whose entry is not the one at the same position in `old`."""
    shared = min(len(new), len(old))
    # Unchanged entries are the same cached object; `!=` only runs for the few that are not.
    positions = [i for i in range(shared) if new[i] is not old[i] and new[i] != old[i]]
    positions.extend(range(shared, len(new)))
    return positions


def _packed(number: int, values: list[int]) -> bytes:
    if not values:
        return b""
    return w.length_delimited(number, b"".join(w.varint(v) for v in values))


def _message(entry: bytes) -> api_pb2.AgentMessage:
    """The message a `messages` element encodes (read as a status holding just it)."""
    return api_pb2.AgentExecutionStatus.FromString(entry).messages[0]


def _appended(new: bytes, old: bytes) -> str | None:
    """The text added to a message whose only change is that its content grew; None else."""
    before, after = _message(old), _message(new)
    if len(after.content) <= len(before.content) or not after.content.startswith(before.content):
        return None
    grown = after.content
    after.content = before.content
    return grown[len(before.content) :] if after == before else None


class DeltaTracker:
    """What the orchestrator holds (the parts of the last acknowledged update) and the delta
    from it to a newer status. It does no I/O: the caller sends, then says what came back."""

    def __init__(self) -> None:
        self._acked: StatusParts | None = None
        self._acked_seq = 0

    @property
    def acked_seq(self) -> int:
        """The number of the update the orchestrator stored last (0: none known)."""
        return self._acked_seq

    @property
    def has_base(self) -> bool:
        """Whether a delta can be computed (a status was acknowledged in this attempt)."""
        return self._acked is not None

    def acknowledged(self, parts: StatusParts, seq: int) -> None:
        """Update `seq`, which carried `parts` (whole or as a delta), is stored."""
        self._acked = parts
        self._acked_seq = seq

    def forget(self) -> None:
        """The orchestrator's state is unknown (it asked for a resync): the next update is whole."""
        self._acked = None
        self._acked_seq = 0

    def delta(
        self, execution_id: str, parts: StatusParts, seq: int, *, final: bool = False
    ) -> Delta:
        """The delta that turns the acknowledged status into `parts`, as update `seq`."""
        old = self._acked
        if old is None:
            raise ValueError("no acknowledged status to compute a delta from")
        out: list[bytes] = []
        entries = 0
        positions = _changed(parts.messages, old.messages)
        appended: tuple[int, str] | None = None
        last = len(old.messages) - 1
        if positions and positions[0] == last and last >= 0:
            text = _appended(parts.messages[last], old.messages[last])
            if text is not None:
                appended = (last, text)
                positions = positions[1:]
        out += (parts.messages[i] for i in positions)
        entries += len(positions)
        if parts.phase:
            out.append(w.varint_field(w.PHASE, parts.phase))
        tools = _changed(parts.tool_calls, old.tool_calls)
        out += (parts.tool_calls[i] for i in tools)
        subs = _changed(parts.sub_agents, old.sub_agents)
        out += (parts.sub_agents[i] for i in subs)
        entries += len(tools) + len(subs)
        for number, text in (
            (w.ERROR, parts.error),
            (w.STARTED_AT, parts.started_at),
            (w.COMPLETED_AT, parts.completed_at),
        ):
            if text:
                out.append(w.length_delimited(number, text.encode()))
        todos_changed = parts.todos != old.todos
        if todos_changed:
            out += parts.todos
        out.append(parts.usage)
        out.append(w.length_delimited(EXECUTION_ID, execution_id.encode()))
        out.append(w.varint_field(SEQ, seq))
        out.append(w.varint_field(BASE_SEQ, self._acked_seq))
        out.append(_packed(MESSAGE_POSITIONS, positions))
        out.append(_packed(TOOL_CALL_POSITIONS, tools))
        out.append(_packed(SUB_AGENT_POSITIONS, subs))
        if todos_changed:
            out.append(w.varint_field(TODOS_CHANGED, 1))
        if appended is not None:
            entries += 1
            out.append(w.length_delimited(APPENDED_TEXT, appended[1].encode()))
            out.append(w.varint_field(APPENDED_POSITION, appended[0]))
        if final:
            digest = status_digest(parts.encoded().message())
            out.append(w.length_delimited(FINAL_DIGEST, digest.encode()))
        return Delta(b"".join(out), seq, self._acked_seq, entries, final)


def resync_pages(
    execution_id: str,
    parts: StatusParts,
    first_seq: int,
    *,
    final: bool = False,
    page_bytes: int = PAGE_BYTES,
) -> list[Delta]:
    """The whole status `parts` as resync pages numbered from `first_seq`, each at most about
    `page_bytes` (an entry larger than a page goes alone)."""
    room = max(1, page_bytes - _PAGE_FRAMING)
    pages: list[tuple[list[bytes], dict[str, list[int]]]] = []
    current: list[bytes] = []
    positions: dict[str, list[int]] = {"messages": [], "tools": [], "subs": []}
    used = 0
    for kind, entries in (
        ("messages", parts.messages),
        ("tools", parts.tool_calls),
        ("subs", parts.sub_agents),
    ):
        for position, entry in enumerate(entries):
            cost = len(entry) + 5  # the entry and its position
            if current and used + cost > room:
                pages.append((current, positions))
                current, positions, used = [], {"messages": [], "tools": [], "subs": []}, 0
            current.append(entry)
            positions[kind].append(position)
            used += cost
    pages.append((current, positions))
    out: list[Delta] = []
    for index, (entries, where) in enumerate(pages):
        seq = first_seq + index
        last = index == len(pages) - 1
        data = list(entries)
        if last:
            data.append(_rest(parts))
        data.append(w.length_delimited(EXECUTION_ID, execution_id.encode()))
        data.append(w.varint_field(SEQ, seq))
        data.append(_packed(MESSAGE_POSITIONS, where["messages"]))
        data.append(_packed(TOOL_CALL_POSITIONS, where["tools"]))
        data.append(_packed(SUB_AGENT_POSITIONS, where["subs"]))
        data.append(w.varint_field(RESYNC_PAGE, 1))
        if last:
            data.append(w.varint_field(RESYNC_FROM, first_seq))
            if final:
                digest = status_digest(parts.encoded().message())
                data.append(w.length_delimited(FINAL_DIGEST, digest.encode()))
        out.append(Delta(b"".join(data), seq, 0, len(entries), final and last))
    return out


def _rest(parts: StatusParts) -> bytes:
    """Everything of the status but its three positioned lists (todos whole)."""
    out = parts.head()
    if parts.todos:
        out += parts.todos
        out.append(w.varint_field(TODOS_CHANGED, 1))
    out.append(parts.usage)
    return b"".join(out)
