"""ExecuteGraphton's result always fits its Temporal payload.

The orchestrator already holds the transcript (every `updateStatus`); the returned status only
tells the workflow how the run ended. Temporal warns above 512 KiB and refuses a payload above
2 MiB (the SDK then fails the attempt, retryably, and every retry fails the same way). So above
`STIGMER_RESULT_MAX_BYTES` the activity returns a slim status: phase, error, started and
completed times, no lists. The size measured is the payload's as Temporal sees it (ProtoJSON,
which can be several times the binary size of text full of escapes).
"""

from __future__ import annotations

from collections.abc import Sequence

from ai.stigmer.agentic.agentexecution.v1 import api_pb2

from worker.converter import DATA_CONVERTER
from worker.domain import additions
from worker.domain.status_wire import EncodedStatus
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


def without_additions(status: api_pb2.AgentExecutionStatus) -> api_pb2.AgentExecutionStatus:
    """`status` without the fields an orchestrator of the January contract does not know
    (`worker.domain.additions`): the result is read back as ProtoJSON, where another SDK refuses
    unknown fields (contract §1); the orchestrator has the whole status already from
    `updateStatus`, where unknown fields are skipped."""
    return api_pb2.AgentExecutionStatus.FromString(additions.strip(status.SerializeToString()))


def bounded_result(
    status: api_pb2.AgentExecutionStatus | EncodedStatus, max_bytes: int
) -> api_pb2.AgentExecutionStatus:
    """`status` without the contract's additions (`without_additions`) when its payload fits
    in `max_bytes`, else its slim form.

    The additions are left out on the wire form, piece by piece (`additions.strip_pieces`): a
    status the run hands over as its entries' encodings is never parsed whole, and one that does
    not fit is never held twice; only a result that fits is parsed.

    Raises `PayloadTooLarge` (not retryable) if even the slim form does not fit, which only a
    `max_bytes` far below any real limit can cause.
    """
    if isinstance(status, EncodedStatus):
        pieces: Sequence[bytes] = status.pieces
        counts = (status.messages, status.tool_calls)
    else:
        pieces = (status.SerializeToString(),)
        counts = (len(status.messages), len(status.tool_calls))
    stripped = additions.strip_pieces(pieces, keep_under=max_bytes)
    # ProtoJSON is never smaller than the binary form of the same status, so a binary size over
    # the bound settles it without building the JSON of a large status.
    if stripped.data is None:
        return _slimmed(stripped.head, stripped.size, max_bytes, counts)
    whole = api_pb2.AgentExecutionStatus.FromString(stripped.data)
    size = payload_size(whole)
    if size <= max_bytes:
        return whole
    return _slimmed(whole, size, max_bytes, counts)


def _slimmed(
    status: api_pb2.AgentExecutionStatus, size: int, max_bytes: int, counts: tuple[int, int]
) -> api_pb2.AgentExecutionStatus:
    result = slim(status)
    slim_size = payload_size(result)
    log.info(
        "activity_result_slimmed",
        status_bytes=size,
        result_bytes=slim_size,
        limit_bytes=max_bytes,
        messages=counts[0],
        tool_calls=counts[1],
    )
    if slim_size > max_bytes:
        raise PayloadTooLarge(
            f"the ExecuteGraphton result is {slim_size} bytes even without its lists, over "
            f"STIGMER_RESULT_MAX_BYTES={max_bytes}"
        )
    return result
