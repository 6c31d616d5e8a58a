"""LangGraph stream items → the plain events of `worker.domain.agent_events`.

The graph is streamed with `stream_mode=["messages", "tasks"]` and `subgraphs=True`; each item is
`(namespace, mode, data)`:

- `messages` items carry `AIMessageChunk`s as the model produces them → `TokenDelta`, keyed by the
  chunk's message id (one id per model turn); model calls made on the side (middleware's internal
  calls such as summarising, a model called inside a tool) are not turns: their text is dropped,
  and each piece of them that reports usage → `HelperModelCall`, so their tokens still count;
- a `tasks` start item of a `tools` task carries the tool call it executes (LangChain's agent sends
  one task per tool call) → `ToolStarted`, and tells which pregel task id runs which tool call;
- a `tasks` result item carries the node's writes: an `AIMessage` → `ModelTurnEnded` (final text,
  tool calls, usage, model name); `ToolMessage`s → `ToolEnded`. A task that raised → `ToolEnded`
  with the error for the tool calls it ran.

A sub-agent runs inside the `task` tool, so its items arrive under the namespace
`("tools:<task id>", ...)`; the task-id → tool-call-id map built from the start items turns that
into the `task` call's id, which the events carry as `sub_agent_id`.

Tool errors: a `ToolMessage` with `status="error"` failed. deepagents' and Graphton's file tools
never raise; they return text starting with `Error:` and Graphton's `execute` returns
`Command failed (exit code N)` for a failing command. Those conventions count as failures too, for
those tools only, so a failing read or command shows FAILED rather than COMPLETED.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from langchain.agents.middleware.internal_call_transformer import INTERNAL_CALL_METADATA_KEY
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage

from worker.domain.agent_events import (
    AgentEvent,
    HelperModelCall,
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
    Usage,
)

FILE_TOOLS = frozenset(
    {
        "ls",
        "glob",
        "grep",
        "search",
        "read_file",
        "read",
        "write_file",
        "write",
        "edit_file",
        "edit",
        "delete_file",
        "delete",
    }
)
_SHELL_FAILED = "Command failed (exit code"


def message_text(message: BaseMessage) -> str:
    """The plain text of a message (content blocks joined), never an object repr."""
    text = message.text
    return text if isinstance(text, str) else str(message.content)


def tool_error(message: ToolMessage) -> str:
    """The error text when this tool result is a failure, else empty."""
    text = message_text(message)
    if message.status == "error":
        return text or "tool call failed"
    if message.name in FILE_TOOLS and text.startswith("Error:"):
        return text
    if message.name == "execute" and text.startswith(_SHELL_FAILED):
        return text
    return ""


def _usage(message: AIMessage) -> Usage | None:
    usage = message.usage_metadata
    if not usage:
        return None
    return Usage(
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        total_tokens=int(usage.get("total_tokens", 0)),
    )


def _model_name(message: AIMessage) -> str:
    meta = message.response_metadata or {}
    name = meta.get("model_name") or meta.get("model") or ""
    return name if isinstance(name, str) else str(name)


def turn_ended(message: AIMessage, sub_agent_id: str = "") -> ModelTurnEnded:
    return ModelTurnEnded(
        message_id=message.id or "",
        text=message_text(message),
        tool_calls=tuple(
            ToolCallRequest(id=c.get("id") or "", name=c["name"], args=c.get("args") or {})
            for c in message.tool_calls
        ),
        usage=_usage(message),
        model_name=_model_name(message),
        sub_agent_id=sub_agent_id,
    )


def tool_ended(message: ToolMessage, sub_agent_id: str = "") -> ToolEnded:
    error = tool_error(message)
    return ToolEnded(
        tool_call_id=message.tool_call_id,
        name=message.name or "",
        result="" if error else message_text(message),
        error=error,
        sub_agent_id=sub_agent_id,
    )


def replay(messages: Sequence[BaseMessage]) -> Iterator[AgentEvent]:
    """Events for messages already in a checkpoint (the part of a turn done before a crash)."""
    for message in messages:
        if isinstance(message, AIMessage):
            yield turn_ended(message)
        elif isinstance(message, ToolMessage):
            yield tool_ended(message)


class EventNormalizer:
    """Turns one run's stream items into events; holds the task-id → tool-call-id map."""

    def __init__(self) -> None:
        self._calls_by_task: dict[str, list[str]] = {}

    def normalize(self, item: Any) -> list[AgentEvent]:
        """The events in one `(namespace, mode, data)` item; unknown shapes give none."""
        if not isinstance(item, tuple) or len(item) != 3:
            return []
        namespace, mode, data = item
        sub_agent_id = self._sub_agent(namespace)
        if mode == "messages":
            return self._from_message(data, sub_agent_id)
        if mode == "tasks" and isinstance(data, Mapping):
            if "input" in data:
                return self._task_started(data, sub_agent_id)
            return self._task_finished(data, sub_agent_id)
        return []

    def _sub_agent(self, namespace: Any) -> str:
        if not namespace:
            return ""
        for segment in reversed(namespace):
            _, _, task_id = str(segment).partition(":")
            calls = self._calls_by_task.get(task_id)
            if calls:
                return calls[0]
        return str(namespace[-1])

    @staticmethod
    def _from_message(data: Any, sub_agent_id: str) -> list[AgentEvent]:
        if not isinstance(data, tuple) or not data:
            return []
        meta = data[1] if len(data) > 1 and isinstance(data[1], Mapping) else {}
        helper = _helper(meta)
        if helper:
            return _helper_call(data[0], helper, sub_agent_id)
        chunk = data[0]
        if not isinstance(chunk, AIMessageChunk) or not chunk.id:
            return []
        text = message_text(chunk)
        if not text:
            return []
        return [TokenDelta(message_id=chunk.id, text=text, sub_agent_id=sub_agent_id)]

    def _task_started(self, data: Mapping[str, Any], sub_agent_id: str) -> list[AgentEvent]:
        calls = [c for c in _as_list(data.get("input")) if _is_tool_call(c)]
        if not calls:
            return []
        task_id = str(data.get("id", ""))
        self._calls_by_task[task_id] = [str(c["id"]) for c in calls]
        return [
            ToolStarted(
                tool_call_id=str(c["id"]),
                name=str(c["name"]),
                args=c.get("args") or {},
                sub_agent_id=sub_agent_id,
            )
            for c in calls
        ]

    def _task_finished(self, data: Mapping[str, Any], sub_agent_id: str) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        result = data.get("result")
        ended: set[str] = set()
        for message in _messages_in(result):
            if isinstance(message, AIMessage) and not isinstance(message, AIMessageChunk):
                if message.id:
                    events.append(turn_ended(message, sub_agent_id))
            elif isinstance(message, ToolMessage):
                events.append(tool_ended(message, sub_agent_id))
                ended.add(message.tool_call_id)
        error = data.get("error")
        if error:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            for call_id in self._calls_by_task.get(str(data.get("id", "")), []):
                if call_id not in ended:
                    events.append(
                        ToolEnded(
                            tool_call_id=call_id,
                            name=str(data.get("name", "")),
                            result="",
                            error=text,
                            sub_agent_id=sub_agent_id,
                        )
                    )
        return events


def _helper(meta: Mapping[str, Any]) -> str:
    """Which kind of side call a streamed message comes from, empty for an agent's own turn:
    middleware's internal calls (`summarization` when summarising the history, `middleware`
    otherwise) and a model called inside a tool (`tool`; a sub-agent's turns come from its own
    `model` node, not from `tools`)."""
    if meta.get("lc_source") == "summarization":
        return "summarization"
    if meta.get(INTERNAL_CALL_METADATA_KEY):
        return "middleware"
    return "tool" if meta.get("langgraph_node") == "tools" else ""


def _helper_call(message: Any, helper: str, sub_agent_id: str) -> list[AgentEvent]:
    """The usage a side call's streamed piece (or whole message) reports, if any."""
    if not isinstance(message, AIMessage):
        return []
    usage = _usage(message)
    if usage is None:
        return []
    return [
        HelperModelCall(
            call_id=message.id or "",
            usage=usage,
            helper=helper,
            model_name=_model_name(message),
            sub_agent_id=sub_agent_id,
        )
    ]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return [value] if value is not None else []


def _is_tool_call(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and value.get("type", "tool_call") == "tool_call"
        and isinstance(value.get("id"), str)
        and isinstance(value.get("name"), str)
        and "args" in value
    )


def _messages_in(result: Any) -> Iterable[Any]:
    """The messages a node appended: `{"messages": [...]}`, or a list of such writes.

    An `Overwrite` of the whole list (deepagents' `PatchToolCallsMiddleware` restates the history
    before every run) is not new output and is skipped: replaying it would copy earlier turns into
    this execution's transcript.
    """
    if isinstance(result, Mapping):
        messages = result.get("messages")
        if isinstance(messages, BaseMessage):
            return (messages,)
        return messages if isinstance(messages, list | tuple) else ()
    if isinstance(result, list | tuple):
        found: list[Any] = []
        for write in result:
            if isinstance(write, tuple) and len(write) == 2 and write[0] == "messages":
                found.extend(_as_list(write[1]))
        return found
    return ()


__all__ = [
    "EventNormalizer",
    "message_text",
    "replay",
    "tool_ended",
    "tool_error",
    "turn_ended",
]
