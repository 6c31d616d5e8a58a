"""Follow an execution as whole states, from `subscribeDeltas` when the server has it.

`subscribeDeltas` (contract §7, ours; `docs/stub-rpcs.md`) sends the execution once, in pages,
then only what changed, each message numbered. `ExecutionFold` folds those messages into the
execution they describe; `states` is the stream of whole states a viewer wants: it folds the
delta stream, subscribes again when the numbering shows a gap, and falls back to the full-state
`subscribe` against a server that answers UNIMPLEMENTED (the January contract).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, io_pb2

from stigmer_cli.client import RpcFailed, StigmerClient

Change = io_pb2.AgentExecutionChange

_LISTS: dict[str, tuple[str, str]] = {
    # list field: (its length's field, its positions' field)
    "messages": ("message_count", "message_positions"),
    "tool_calls": ("tool_call_count", "tool_call_positions"),
    "sub_agent_executions": ("sub_agent_count", "sub_agent_positions"),
}
_KEPT = frozenset({*_LISTS, "todos"})


class Gap(Exception):
    """The stream skipped a message (or started without a snapshot): subscribe again."""


class ExecutionFold:
    """The execution a `subscribeDeltas` stream describes, folded message by message."""

    def __init__(self) -> None:
        self.seq = 0
        self.version = 0
        self.resyncs = 0
        self.execution: api_pb2.AgentExecution | None = None

    def apply(self, change: Change) -> api_pb2.AgentExecution | None:
        """Fold one message in; the execution once it is complete again (no page of a change
        still to come), else None. The execution is one object updated in place: copy it to
        keep a state. Raises `Gap` when the message does not follow the last one."""
        if change.seq != self.seq + 1:
            raise Gap(f"message {change.seq} arrived after {self.seq}")
        self.seq = change.seq
        if change.snapshot:
            self.execution = api_pb2.AgentExecution()
            self.resyncs += int(change.resync)
        execution = self.execution
        if execution is None:
            raise Gap("the stream did not start with a snapshot")
        if change.HasField("execution"):
            status = api_pb2.AgentExecutionStatus()
            status.CopyFrom(execution.status)
            execution.CopyFrom(change.execution)
            execution.status.CopyFrom(status)
        if change.HasField("status"):
            _replace_rest(execution.status, change.status)
        for name, (count_field, positions_field) in _LISTS.items():
            _place(
                getattr(execution.status, name),
                getattr(change, count_field),
                getattr(change, positions_field),
                getattr(change, name),
            )
        if change.todos_changed:
            execution.status.todos.clear()
            for key, todo in change.todos.items():
                execution.status.todos[key].CopyFrom(todo)
        self.version = change.version
        return None if change.more else execution


def _replace_rest(status: api_pb2.AgentExecutionStatus, rest: api_pb2.AgentExecutionStatus) -> None:
    """`status` with every field but its four lists taken from `rest` (the lists stay)."""
    for field in status.DESCRIPTOR.fields:
        if field.name not in _KEPT:
            status.ClearField(field.name)  # type: ignore[arg-type]  # every field by name
    status.MergeFrom(rest)  # `rest` holds no list entries


def _place(held: Any, count: int, positions: Any, entries: Any) -> None:
    """A list cut or grown to `count`, with `entries` at `positions`."""
    if len(positions) != len(entries):
        raise Gap(f"{len(entries)} entries for {len(positions)} positions")
    del held[count:]
    while len(held) < count:
        held.add()
    for position, entry in zip(positions, entries, strict=True):
        if not 0 <= position < count:
            raise Gap(f"position {position} is outside the {count} entries")
        held[position].CopyFrom(entry)


async def folded(client: StigmerClient, execution_id: str) -> AsyncIterator[api_pb2.AgentExecution]:
    """Each complete state from one `subscribeDeltas` stream; `Gap` when it skips."""
    fold = ExecutionFold()
    async for change in client.subscribe_deltas(execution_id):
        state = fold.apply(change)
        if state is not None:
            yield state


async def states(
    client: StigmerClient, execution_id: str, *, max_gaps: int = 5
) -> AsyncIterator[api_pb2.AgentExecution]:
    """The execution's states until it ends, each its own object: folded from
    `subscribeDeltas`, subscribing again after a gap (at most `max_gaps` times in a row), or
    from `subscribe` when the server does not serve `subscribeDeltas`."""
    gaps = 0
    while True:
        try:
            async for state in folded(client, execution_id):
                gaps = 0
                copy = api_pb2.AgentExecution()
                copy.CopyFrom(state)  # the fold goes on changing its own
                yield copy
        except Gap:
            gaps += 1
            if gaps > max_gaps:
                raise
            continue
        except RpcFailed as err:
            if err.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            async for state in client.subscribe(execution_id):
                yield state
        return
