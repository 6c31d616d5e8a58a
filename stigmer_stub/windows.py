"""Replies that fit: an execution too large for one reply is sent as a window of its transcript.

gRPC clients refuse replies over their receive limit, 4 MiB by default (grpcurl, most SDKs), and
a long run's execution is larger. So `get` and `subscribe` send the execution whole when it fits
the reply budget (`STIGMER_STUB_MAX_REPLY_BYTES`), and otherwise the *latest* part of it:

- everything but the four status lists, whole;
- the latest todos and sub-agent executions that fit in an eighth of the budget each;
- the latest messages and tool calls that fit in the rest (half each; what one list leaves
  unused goes to the other);
- a marker: a first message of type `MESSAGE_SYSTEM` whose `content` says how many messages and
  tool calls were left out and whose `metadata.stigmer_window` holds the numbers
  (`omitted_messages`, `total_messages`, `omitted_tool_calls`, `total_tool_calls`,
  `omitted_sub_agent_executions`, `omitted_todos`).

`getWindow` pages through the rest: from a message offset and a tool-call offset, as many entries
as fit (or the limit asked for), messages first, then tool calls with what is left. It carries
the same todos and sub-agent executions as the windowed `get`, and no marker (its reply says the
offsets and totals). An entry that alone exceeds what is left of the budget is sent cut: its
longest text fields shortened, with a note at the end of each saying how long it was (only a
runner that does not move large contents out of its status, see contract §7, produces those).

Everything here works on the entries as stored, encoded; only a cut entry is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from stigmer_stub.status_wire import ENTRY_TYPES, LISTS, assemble, chunk, split_status

MARKER_KEY = "stigmer_window"
_FRAMING = 4096
"""Room kept for the marker and the framing of the lists."""


def entry_cost(entry: bytes) -> int:
    """An entry's bytes within the execution: tag, length and the entry."""
    n = len(entry)
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return 1 + length + len(entry)


def _newest_that_fit(entries: Sequence[bytes], budget: int) -> int:
    """The index from which the newest entries fit in `budget`."""
    start, used = len(entries), 0
    while start > 0 and used + entry_cost(entries[start - 1]) <= budget:
        start -= 1
        used += entry_cost(entries[start])
    return start


def _size(entries: Sequence[bytes]) -> int:
    return sum(entry_cost(e) for e in entries)


def cut_entry(name: str, encoded: bytes, budget: int) -> bytes:
    """An entry shortened to at most `budget` bytes (cost included) by cutting its longest text
    fields, each ending in a note of its full length; emptied fields last."""
    entry = ENTRY_TYPES[name].FromString(encoded)
    target = entry if name != "todos" else getattr(entry, "value")  # noqa: B009
    for _ in range(8):
        excess = entry_cost(entry.SerializeToString()) - budget
        if excess <= 0:
            break
        if not _cut_longest_text(target, excess):
            _clear_largest_field(target)
    return entry.SerializeToString()


def _cut_longest_text(message: Message, excess: int) -> bool:
    texts = [
        (len(getattr(message, f.name).encode()), f)
        for f in message.DESCRIPTOR.fields
        if f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated
    ]
    if not texts:
        return False
    length, field = max(texts, key=lambda t: t[0])
    note = f"\n[cut by the stigmer stub: {length} bytes in all, over the reply size limit]"
    keep = length - excess - len(note) - 16
    if keep < 0:
        return False
    text = getattr(message, field.name).encode()[:keep].decode(errors="ignore")
    setattr(message, field.name, text + note)
    return True


def _clear_largest_field(message: Message) -> None:
    present = [(f.name, len(message.SerializeToString())) for f, _ in message.ListFields()]
    sizes = []
    for name, _ in present:
        probe = type(message)()
        probe.CopyFrom(message)
        probe.ClearField(name)
        sizes.append((len(message.SerializeToString()) - len(probe.SerializeToString()), name))
    if sizes:
        message.ClearField(max(sizes)[1])


def _fit_or_cut(name: str, entries: list[bytes], budget: int) -> list[bytes]:
    """`entries` (newest last) as many as fit; the newest cut when not even it fits."""
    start = _newest_that_fit(entries, budget)
    if start == len(entries) and entries and budget > 256:
        return [cut_entry(name, entries[-1], budget)]
    return entries[start:]


@dataclass(frozen=True, slots=True)
class Window:
    encoded: bytes
    message_offset: int
    total_messages: int
    tool_call_offset: int
    total_tool_calls: int
    messages: int
    tool_calls: int


def _side_lists(lists: dict[str, list[bytes]], budget: int) -> dict[str, list[bytes]]:
    """The latest sub-agent executions and todos, an eighth of the budget each."""
    return {
        name: _fit_or_cut(name, lists[name], budget // 8)
        for name in ("sub_agent_executions", "todos")
    }


def whole_or_window(head: bytes, lists: dict[str, list[bytes]], budget: int) -> bytes:
    """The execution whole when it fits in `budget`, otherwise its latest part and a marker."""
    whole = assemble(head, (chunk(name, lists[name]) for name in LISTS))
    if len(whole) <= budget:
        return whole
    room = budget - len(head) - _FRAMING
    side = _side_lists(lists, room)
    room -= sum(_size(v) for v in side.values())
    messages, tool_calls = lists["messages"], lists["tool_calls"]
    # Half each; when the tool calls need less than half, the messages get what they leave.
    window_messages = _fit_or_cut("messages", messages, max(room // 2, room - _size(tool_calls)))
    window_calls = _fit_or_cut("tool_calls", tool_calls, room - _size(window_messages))
    omitted = {
        "omitted_messages": len(messages) - len(window_messages),
        "total_messages": len(messages),
        "omitted_tool_calls": len(tool_calls) - len(window_calls),
        "total_tool_calls": len(tool_calls),
        "omitted_sub_agent_executions": len(lists["sub_agent_executions"])
        - len(side["sub_agent_executions"]),
        "omitted_todos": len(lists["todos"]) - len(side["todos"]),
    }
    marker = window_marker(omitted)
    parts = {
        "messages": [marker, *window_messages],
        "tool_calls": window_calls,
        **side,
    }
    return assemble(head, (chunk(name, parts[name]) for name in LISTS))


def bounded(execution: api_pb2.AgentExecution, budget: int) -> api_pb2.AgentExecution:
    """`execution` itself when it fits in `budget`, otherwise its window (for replies built
    from a parsed execution: `create`, `update`, `delete`)."""
    if execution.ByteSize() <= budget:
        return execution
    split = split_status(execution.status)
    head = api_pb2.AgentExecution()
    head.CopyFrom(execution)
    head.status.CopyFrom(split.rest)
    lists = {name: list(split.lists[name]) for name in LISTS}
    return api_pb2.AgentExecution.FromString(
        whole_or_window(head.SerializeToString(deterministic=True), lists, budget)
    )


def window_marker(omitted: dict[str, int]) -> bytes:
    message = api_pb2.AgentMessage(
        type=enum_pb2.MessageType.MESSAGE_SYSTEM,
        content=(
            f"[stigmer: this execution is larger than one reply; "
            f"{omitted['omitted_messages']} earlier messages of {omitted['total_messages']} and "
            f"{omitted['omitted_tool_calls']} earlier tool calls of "
            f"{omitted['total_tool_calls']} are not in it; read them with getWindow]"
        ),
    )
    message.metadata.get_or_create_struct(MARKER_KEY).update(omitted)
    return message.SerializeToString()


def window_of(marker: api_pb2.AgentMessage) -> dict[str, int] | None:
    """The numbers of a windowed reply's marker message; None for any other message."""
    if marker.type != enum_pb2.MessageType.MESSAGE_SYSTEM or MARKER_KEY not in marker.metadata:
        return None
    values = json_format.MessageToDict(marker.metadata).get(MARKER_KEY)
    if not isinstance(values, dict):
        return None
    return {str(key): int(value) for key, value in values.items()}


def page(
    head: bytes,
    lists: dict[str, list[bytes]],
    budget: int,
    *,
    message_offset: int,
    message_limit: int,
    tool_call_offset: int,
    tool_call_limit: int,
) -> Window:
    """A window from the given offsets: messages first, then tool calls, as many as fit."""
    room = budget - len(head) - _FRAMING
    side = _side_lists(lists, room)
    room -= sum(_size(v) for v in side.values())
    messages, tool_calls = lists["messages"], lists["tool_calls"]
    full = room
    picked_messages, room = _from("messages", messages, message_offset, message_limit, room, full)
    picked_calls, room = _from(
        "tool_calls", tool_calls, tool_call_offset, tool_call_limit, room, full
    )
    parts = {"messages": picked_messages, "tool_calls": picked_calls, **side}
    return Window(
        encoded=assemble(head, (chunk(name, parts[name]) for name in LISTS)),
        message_offset=min(message_offset, len(messages)),
        total_messages=len(messages),
        tool_call_offset=min(tool_call_offset, len(tool_calls)),
        total_tool_calls=len(tool_calls),
        messages=len(picked_messages),
        tool_calls=len(picked_calls),
    )


def _from(
    name: str, entries: list[bytes], offset: int, limit: int, room: int, full: int
) -> tuple[list[bytes], int]:
    """Entries from `offset` (at most `limit`, 0 for no limit) that fit in `room`. An entry that
    would not fit even in an empty window (`full`) is sent cut, when it comes first."""
    end = len(entries) if limit <= 0 else min(len(entries), offset + limit)
    picked: list[bytes] = []
    for entry in entries[offset:end]:
        cost = entry_cost(entry)
        if cost > room:
            if not picked and cost > full and room == full:
                picked.append(cut_entry(name, entry, room))
                room -= entry_cost(picked[-1])
            break
        picked.append(entry)
        room -= cost
    return picked, room
