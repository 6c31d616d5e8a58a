"""ExecuteGraphton's result always fits its Temporal payload.

The orchestrator already holds the transcript (every `updateStatus`); the returned status only
tells the workflow how the run ended. Temporal warns above 512 KiB and refuses a payload above
2 MiB (the SDK then fails the attempt, retryably, and every retry fails the same way). So above
`STIGMER_RESULT_MAX_BYTES` the activity returns a slim status: phase, error, started and
completed times, no lists. The size measured is the payload's as Temporal sees it (ProtoJSON,
which can be several times the binary size of text full of escapes).
"""

from __future__ import annotations

from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from google.protobuf.message import Message

from worker.converter import DATA_CONVERTER
from worker.errors import PayloadTooLarge
from worker.logs import get_logger

log = get_logger(__name__)

ERROR_MAX_CHARS = 16 * 1024
"""An error text longer than this is cut in the slim result (the whole text is in the status
the orchestrator already holds)."""


def payload_size(status: api_pb2.AgentExecutionStatus) -> int:
    """Bytes of the Temporal payload that carries `status` (the data converter's encoding)."""
    (payload,) = DATA_CONVERTER.payload_converter.to_payloads([status])
    return payload.ByteSize()


def slim(status: api_pb2.AgentExecutionStatus) -> api_pb2.AgentExecutionStatus:
    """Phase, error and times of `status`, nothing else."""
    error = status.error
    if len(error) > ERROR_MAX_CHARS:
        error = error[:ERROR_MAX_CHARS] + f"… [{len(status.error)} characters in all]"
    return api_pb2.AgentExecutionStatus(
        phase=status.phase,
        error=error,
        started_at=status.started_at,
        completed_at=status.completed_at,
    )


_LATER_FIELDS: dict[str, frozenset[int]] = {
    "ai.stigmer.agentic.agentexecution.v1.AgentMessage": frozenset({6}),
    "ai.stigmer.agentic.agentexecution.v1.ToolCall": frozenset({16, 17, 18, 21}),
}
"""Contract §7 fields (later upstream) a run may set whatever the orchestrator supports: the MCP
server of a call, previews and references. The approval fields (10-15) are not here: they are set
only under an orchestrator with run control (under one without, a gated call fails the run)."""


def without_additions(status: api_pb2.AgentExecutionStatus) -> api_pb2.AgentExecutionStatus:
    """`status` without the fields an orchestrator of the January contract does not know: ours
    (numbers 100 and up: usage, sub-agent conversations, content references) and the later
    upstream ones in `_LATER_FIELDS`. The result is read back as ProtoJSON, where another SDK
    refuses unknown fields (contract §1); the orchestrator has the whole status already from
    `updateStatus`, where unknown fields are skipped."""
    clean = api_pb2.AgentExecutionStatus()
    clean.CopyFrom(status)
    _strip(clean)
    return clean


def _strip(message: Message) -> None:
    later = _LATER_FIELDS.get(message.DESCRIPTOR.full_name, frozenset())
    for field, value in message.ListFields():
        if field.number >= 100 or field.number in later:
            message.ClearField(field.name)
            continue
        entry = field.message_type
        if entry is None or not entry.full_name.startswith("ai.stigmer."):
            continue  # scalars, Structs and maps of plain entries hold nothing of ours
        if entry.GetOptions().map_entry:
            continue  # `todos`: TodoItem has no additions
        for item in value if field.is_repeated else (value,):
            _strip(item)


_LENGTH_SLACK = 10
"""Bytes an entry's length prefix can shrink by when fields inside it are left out (a varint of a
length is at most 10 bytes)."""


def _stripped_at_least(message: Message) -> int:
    """A lower bound of `without_additions(message).ByteSize()`, without copying `message`."""
    return message.ByteSize() - _additions_at_most(message)


def _additions_at_most(message: Message) -> int:
    later = _LATER_FIELDS.get(message.DESCRIPTOR.full_name, frozenset())
    removed = 0
    for field, value in message.ListFields():
        if field.number >= 100 or field.number in later:
            # The field, whole: its payload, and at most 20 bytes of tags and lengths per value.
            values = value if field.is_repeated else (value,)
            for item in values:
                payload = item.ByteSize() if isinstance(item, Message) else len(str(item)) * 4
                removed += payload + 2 * _LENGTH_SLACK
            continue
        entry = field.message_type
        if entry is None or not entry.full_name.startswith("ai.stigmer."):
            continue
        if entry.GetOptions().map_entry:
            continue
        for item in value if field.is_repeated else (value,):
            inner = _additions_at_most(item)
            if inner:
                removed += inner + _LENGTH_SLACK
    return removed


def bounded_result(
    status: api_pb2.AgentExecutionStatus, max_bytes: int
) -> api_pb2.AgentExecutionStatus:
    """`status` (without the contract's additions, see `without_additions`) when its payload
    fits in `max_bytes`, else its slim form.

    A status that cannot fit even without its additions goes to its slim form at once: a long
    run's status is megabytes, and copying it to leave the additions out would hold it twice.

    Raises `PayloadTooLarge` (not retryable) if even the slim form does not fit, which only a
    `max_bytes` far below any real limit can cause.
    """
    if _stripped_at_least(status) > max_bytes:
        return _slimmed(status, status.ByteSize(), max_bytes)
    status = without_additions(status)
    binary = status.ByteSize()
    # ProtoJSON is never smaller than the binary form of the same status, so a binary size over
    # the bound settles it without building the JSON of a large status.
    if binary <= max_bytes:
        size = payload_size(status)
        if size <= max_bytes:
            return status
    else:
        size = binary
    return _slimmed(status, size, max_bytes)


def _slimmed(
    status: api_pb2.AgentExecutionStatus, size: int, max_bytes: int
) -> api_pb2.AgentExecutionStatus:
    result = slim(status)
    slim_size = payload_size(result)
    log.info(
        "activity_result_slimmed",
        status_bytes=size,
        result_bytes=slim_size,
        limit_bytes=max_bytes,
        messages=len(status.messages),
        tool_calls=len(status.tool_calls),
    )
    if slim_size > max_bytes:
        raise PayloadTooLarge(
            f"the ExecuteGraphton result is {slim_size} bytes even without its lists, over "
            f"STIGMER_RESULT_MAX_BYTES={max_bytes}"
        )
    return result
