"""An execution status already in protobuf wire format, built from cached parts.

A status update carries the complete cumulative transcript (contract §4), so late in a long run
every update is megabytes. Building that as a proto means copying every message, tool call and
sub-agent entry into a new `AgentExecutionStatus` (upb copies sub-messages on assignment), then
serializing it all again: about 60 ms of event-loop time per update at 100k events. But an entry
that has not changed since the last update has the same bytes, and protobuf's wire format for a
repeated field is just its elements' encodings one after another. So `StatusBuilder.encoded()`
keeps each entry's encoding until the entry changes and joins them: the same bytes a parser
reads back as the same message, at the cost of one copy.

`EncodedStatus` carries those bytes and the few facts logs and metrics want (phase and counts);
`as_status` turns either form into a proto for code that needs one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

_LEN = 2  # wire type of length-delimited fields (strings, bytes, messages)
_VARINT = 0


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative integer (negative enum values never occur here)."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]  # tags, enums and short lengths: most calls
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    """One string, bytes or message field: tag, length, payload."""
    return b"".join((varint((number << 3) | _LEN), varint(len(payload)), payload))


def varint_field(number: int, value: int) -> bytes:
    return tag(number, _VARINT) + varint(value)


# AgentExecutionStatus field numbers (contract §3).
MESSAGES = 1
PHASE = 2
TOOL_CALLS = 3
SUB_AGENT_EXECUTIONS = 4
ERROR = 6
STARTED_AT = 7
COMPLETED_AT = 8
TODOS = 9
USAGE = 100  # contract §7 (ours)
# Map entries are messages with the key as field 1 and the value as field 2.
MAP_KEY = 1
MAP_VALUE = 2
# AgentExecutionUpdateStatusInput.
UPDATE_EXECUTION_ID = 1
UPDATE_STATUS = 2


@dataclass(frozen=True, slots=True)
class EncodedStatus:
    """A serialized `AgentExecutionStatus` and what logs need to know about it.

    The bytes are kept as the pieces they are made of (each entry's cached encoding), not
    joined: a request is built from the pieces directly (`update_request_bytes`), so an update in
    flight holds the status once, not twice. `data` joins them for whoever wants one buffer.
    """

    pieces: Sequence[bytes]
    phase: enum_pb2.ExecutionPhase.ValueType
    messages: int
    tool_calls: int
    todos: int
    sub_agents: int

    @property
    def data(self) -> bytes:
        pieces = self.pieces
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def ByteSize(self) -> int:
        return sum(map(len, self.pieces))

    def message(self) -> api_pb2.AgentExecutionStatus:
        return api_pb2.AgentExecutionStatus.FromString(self.data)


StatusPayload = api_pb2.AgentExecutionStatus | EncodedStatus
"""What a status sink accepts: a proto, or the same status already serialized."""


def as_status(status: StatusPayload) -> api_pb2.AgentExecutionStatus:
    """The proto, parsing an `EncodedStatus` (for sinks and tests that inspect fields)."""
    return status.message() if isinstance(status, EncodedStatus) else status


def status_bytes(status: StatusPayload) -> bytes:
    """The serialized status, whichever form it came in."""
    return status.data if isinstance(status, EncodedStatus) else status.SerializeToString()


def update_request_bytes(execution_id: str, status: StatusPayload) -> bytes:
    """A serialized `AgentExecutionUpdateStatusInput{execution_id, status}`."""
    head = length_delimited(UPDATE_EXECUTION_ID, execution_id.encode())
    if isinstance(status, EncodedStatus):
        # Joined once, straight into the request: the pieces are the entries' cached bytes.
        size = status.ByteSize()
        return b"".join((head, tag(UPDATE_STATUS, _LEN), varint(size), *status.pieces))
    return head + length_delimited(UPDATE_STATUS, status.SerializeToString())
