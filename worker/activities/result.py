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


def bounded_result(
    status: api_pb2.AgentExecutionStatus, max_bytes: int
) -> api_pb2.AgentExecutionStatus:
    """`status` when its payload fits in `max_bytes`, else its slim form.

    Raises `PayloadTooLarge` (not retryable) if even the slim form does not fit, which only a
    `max_bytes` far below any real limit can cause.
    """
    binary = status.ByteSize()
    # ProtoJSON is never smaller than the binary form of the same status, so a binary size over
    # the bound settles it without building the JSON of a large status.
    if binary <= max_bytes:
        size = payload_size(status)
        if size <= max_bytes:
            return status
    else:
        size = binary
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
