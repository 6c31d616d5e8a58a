"""Which status fields the January contract lacks, and a status without them, from its bytes.

An orchestrator of the January contract reads `updateStatus` as binary protobuf, where a parser
skips fields it does not know; but it reads ExecuteGraphton's result as ProtoJSON, where another
SDK may refuse them (contract §1). So the result leaves out our additions (field numbers 100 and
up, anywhere in the status) and the later upstream fields in `LATER_FIELDS`.

The work is done on the wire format, field by field, so a status held as its entries' encodings
(`status_wire.EncodedStatus`) is measured and cut without ever being parsed into a proto: at the
end of a long run that proto would cost several times the status in memory, for a result that is
slim anyway. Messages of other packages (Struct, Timestamp) and map entries hold nothing of ours
and are copied as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from worker.domain.status_wire import varint

FIRST_OURS = 100
"""Our own additions are numbered from here (contract §7)."""

LATER_FIELDS: dict[str, frozenset[int]] = {
    "ai.stigmer.agentic.agentexecution.v1.AgentMessage": frozenset({6}),
    "ai.stigmer.agentic.agentexecution.v1.ToolCall": frozenset({16, 17, 18, 21}),
}
"""Contract §7 fields (later upstream) a run may set whatever the orchestrator supports: the MCP
server of a call, previews and references. The approval fields (10-15) are not here: they are set
only under an orchestrator with run control (under one without, a gated call fails the run)."""

_PACKAGE = "ai.stigmer."
_LEN = 2
_STATUS = api_pb2.AgentExecutionStatus.DESCRIPTOR


class MalformedStatus(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def is_addition(message: str, number: int) -> bool:
    """Whether field `number` of the message named `message` (its full name) is one the January
    contract lacks."""
    return number >= FIRST_OURS or number in LATER_FIELDS.get(message, ())


def _ours(field: FieldDescriptor | None) -> Descriptor | None:
    """The message type of `field` when it may hold additions, else None."""
    if field is None or field.message_type is None:
        return None
    kind = field.message_type
    if not kind.full_name.startswith(_PACKAGE) or kind.GetOptions().map_entry:
        return None
    return kind


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = len(data)
    while True:
        if pos >= end or shift > 63:
            raise MalformedStatus("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip(data: bytes | memoryview, pos: int, wire_type: int) -> tuple[int, int]:
    """(start of the value's payload, end of the field) for a field whose tag ended at `pos`."""
    if wire_type == 0:
        _, end = _read_varint(data, pos)
        return pos, end
    if wire_type == 1:
        return pos, pos + 8
    if wire_type == 5:
        return pos, pos + 4
    if wire_type == _LEN:
        length, start = _read_varint(data, pos)
        return start, start + length
    raise MalformedStatus(f"unsupported wire type {wire_type}")


def strip(data: bytes | memoryview, message: Descriptor = _STATUS) -> bytes:
    """The encoding of `data` (a `message`) without the fields `is_addition` names, at any
    depth. Field order and every other byte are kept, so the result parses to the message a
    proto-level copy-and-clear gives."""
    view = memoryview(data)
    out = bytearray()
    pos, end = 0, len(view)
    fields = message.fields_by_number
    while pos < end:
        start = pos
        key, pos = _read_varint(view, pos)
        number, wire_type = key >> 3, key & 7
        payload, pos = _skip(view, pos, wire_type)
        if pos > end:
            raise MalformedStatus("a field runs past the end of its message")
        if is_addition(message.full_name, number):
            continue
        inner = _ours(fields.get(number)) if wire_type == _LEN else None
        if inner is None:
            out += view[start:pos]
            continue
        body = strip(view[payload:pos], inner)
        if len(body) == pos - payload:
            out += view[start:pos]  # nothing of ours inside: the field as it was
        else:
            out += varint(key)
            out += varint(len(body))
            out += body
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Stripped:
    """A status without its additions, measured; its bytes kept only while under a bound."""

    size: int
    """Bytes of the whole status without its additions."""
    data: bytes | None
    """Those bytes, or None when `size` went over the bound they were wanted under."""
    head: api_pb2.AgentExecutionStatus
    """The status's singular fields (phase, error, times): what a slim result is made of."""


def strip_pieces(pieces: Iterable[bytes], keep_under: int) -> Stripped:
    """`strip` over a status given as consecutive pieces of its encoding, each made of whole
    top-level fields (as `EncodedStatus` holds it). The stripped bytes are kept while their size
    is at most `keep_under` and dropped as soon as it is over, so a long run's status is never
    held twice; the size is always complete."""
    kept: list[bytes] | None = []
    size = 0
    head = bytearray()
    fields = _STATUS.fields_by_number
    for piece in pieces:
        part = strip(piece)
        size += len(part)
        if kept is not None:
            if size <= keep_under:
                kept.append(part)
            else:
                kept = None
        head += _singular_fields(part, fields)
    data = b"".join(kept) if kept is not None else None
    return Stripped(size=size, data=data, head=api_pb2.AgentExecutionStatus.FromString(bytes(head)))


def _singular_fields(data: bytes, fields: Mapping[int, FieldDescriptor]) -> bytes:
    """The top-level fields of `data` that are neither repeated nor maps (a few bytes each)."""
    view = memoryview(data)
    out = bytearray()
    pos, end = 0, len(view)
    while pos < end:
        start = pos
        key, pos = _read_varint(view, pos)
        _, pos = _skip(view, pos, key & 7)
        field = fields.get(key >> 3)
        if field is not None and not field.is_repeated:
            out += view[start:pos]
    return bytes(out)
