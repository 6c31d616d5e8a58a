"""An execution put back whole on the client side: every window and every stored content.

`get` answers a large execution as a window of its transcript (see `windows.py`), and a runner
that speaks contract §7 moves large tool results and message texts out of its status into
stored contents (`ToolCallOutputRef`). `whole_execution` pages through `getWindow` until it holds
every message and tool call, and `restore_contents` puts each referenced text content back in
place (`ToolCall.result`, `AgentMessage.content`), keeping the reference beside it. A content
that is not UTF-8 text (an image) stays a reference: `stigmer output` writes its bytes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format

from stigmer_cli.client import StigmerClient

# The wire forms this module reads (docs/stub-rpcs.md); kept here rather than imported from the
# server's modules, so the client side stands alone.
WINDOW_MARKER_KEY = "stigmer_window"
"""`AgentMessage.metadata` key of the marker that opens a windowed reply."""
STORAGE_KEY_PREFIX = "executions/"
"""Storage keys read `executions/<execution id>/content/<sha256>`."""


def window_of(message: api_pb2.AgentMessage) -> dict[str, int] | None:
    """The numbers of a windowed reply's marker message; None for any other message."""
    if message.type != enum_pb2.MessageType.MESSAGE_SYSTEM:
        return None
    values = json_format.MessageToDict(message.metadata).get(WINDOW_MARKER_KEY)
    if not isinstance(values, dict):
        return None
    return {str(key): int(value) for key, value in values.items()}


class NoSuchToolCall(LookupError):
    """The execution has no tool call with that id."""


class IncompleteTranscript(Exception):
    """The orchestrator's windows stopped short of the totals they announced."""


async def whole_execution(client: StigmerClient, execution_id: str) -> api_pb2.AgentExecution:
    """The execution with every message and tool call, however many replies that takes."""
    execution = await client.get_execution(execution_id)
    messages = execution.status.messages
    if not messages or window_of(messages[0]) is None:
        return execution
    got_messages: list[api_pb2.AgentMessage] = []
    got_calls: list[api_pb2.ToolCall] = []
    while True:
        window = await client.get_window(
            execution_id, message_offset=len(got_messages), tool_call_offset=len(got_calls)
        )
        status = window.execution.status
        if not status.messages and not status.tool_calls:
            raise IncompleteTranscript(
                f"getWindow answered nothing at message {len(got_messages)} of "
                f"{window.total_messages}, tool call {len(got_calls)} of {window.total_tool_calls}"
            )
        got_messages += status.messages
        got_calls += status.tool_calls
        if len(got_messages) >= window.total_messages and len(got_calls) >= (
            window.total_tool_calls
        ):
            break
    whole = api_pb2.AgentExecution()
    whole.CopyFrom(window.execution)
    del whole.status.messages[:]
    whole.status.messages.extend(got_messages)
    del whole.status.tool_calls[:]
    whole.status.tool_calls.extend(got_calls)
    return whole


def _tool_calls(execution: api_pb2.AgentExecution) -> Iterator[api_pb2.ToolCall]:
    status = execution.status
    yield from status.tool_calls
    for message in status.messages:
        yield from message.tool_calls
    for sub_agent in status.sub_agent_executions:
        for message in sub_agent.messages:
            yield from message.tool_calls


def _messages(execution: api_pb2.AgentExecution) -> Iterator[api_pb2.AgentMessage]:
    yield from execution.status.messages
    for sub_agent in execution.status.sub_agent_executions:
        yield from sub_agent.messages


async def restore_contents(client: StigmerClient, execution: api_pb2.AgentExecution) -> int:
    """Put every referenced text content back in place; how many references were resolved."""
    execution_id = execution.metadata.id
    fetched: dict[str, str | None] = {}

    async def text_of(ref: api_pb2.ToolCallOutputRef) -> str | None:
        key = ref.storage_key or ref.content_hash
        if key not in fetched:
            data = await client.get_content(execution_id, key)
            try:
                fetched[key] = data.decode("utf-8")
            except UnicodeDecodeError:
                fetched[key] = None
        return fetched[key]

    restored = 0
    for call in _tool_calls(execution):
        if call.HasField("output_ref") and not call.output_ref.is_image:
            text = await text_of(call.output_ref)
            if text is not None:
                call.result = text
                restored += 1
    for message in _messages(execution):
        if message.HasField("content_ref") and not message.content_ref.is_image:
            text = await text_of(message.content_ref)
            if text is not None:
                message.content = text
                restored += 1
    return restored


async def tool_output(
    client: StigmerClient, execution_id: str, tool_call_id: str
) -> AsyncIterator[bytes]:
    """The whole output of one tool call: the stored content, or the inline result. A storage
    key or content hash of the execution is accepted in place of the tool call id."""
    execution = await whole_execution(client, execution_id)
    for call in _tool_calls(execution):
        if call.id != tool_call_id:
            continue
        if call.HasField("output_ref"):
            ref = call.output_ref
            async for data in client.content_chunks(
                execution_id, ref.storage_key or ref.content_hash
            ):
                yield data
        else:
            yield call.result.encode("utf-8")
        return
    if not (tool_call_id.startswith(STORAGE_KEY_PREFIX) or _SHA256.fullmatch(tool_call_id)):
        raise NoSuchToolCall(f"execution {execution_id} has no tool call {tool_call_id!r}")
    async for data in client.content_chunks(execution_id, tool_call_id):
        yield data


_SHA256 = re.compile(r"[0-9a-f]{64}")
