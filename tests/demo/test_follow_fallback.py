"""`stigmer_cli.changes.states`: against a gRPC server of the January contract (no
`subscribeDeltas`: the generated servicer's UNIMPLEMENTED) it reads `subscribe`; after a gap in
the numbering it subscribes again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2, query_pb2_grpc
from grpc import aio

from stigmer_cli.changes import states
from stigmer_cli.client import StigmerClient
from stigmer_stub.status_wire import split_status
from stigmer_stub.subscriptions import State, change_pages, numbered, snapshot_pages, state_of


class JanuaryQueries(query_pb2_grpc.AgentExecutionQueryControllerServicer):
    """A fake orchestrator's queries: `subscribe` only, two whole states."""

    def __init__(self) -> None:
        self.subscribed = 0

    async def subscribe(
        self, request: io_pb2.AgentExecutionId, context: Any
    ) -> AsyncIterator[api_pb2.AgentExecution]:
        self.subscribed += 1
        for phase in (enum_pb2.EXECUTION_IN_PROGRESS, enum_pb2.EXECUTION_COMPLETED):
            execution = api_pb2.AgentExecution()
            execution.metadata.id = request.value
            execution.status.phase = phase
            yield execution


async def test_states_fall_back_to_subscribe_where_subscribe_deltas_is_unimplemented() -> None:
    server = aio.server()
    queries = JanuaryQueries()  # type: ignore[abstract]  # the base answers UNIMPLEMENTED
    query_pb2_grpc.add_AgentExecutionQueryControllerServicer_to_server(queries, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with StigmerClient(f"127.0.0.1:{port}") as client:
            got = [s async for s in states(client, "aex-1")]
    finally:
        await server.stop(0)
    assert [s.status.phase for s in got] == [
        enum_pb2.EXECUTION_IN_PROGRESS,
        enum_pb2.EXECUTION_COMPLETED,
    ]
    assert queries.subscribed == 1


def _execution(phase: enum_pb2.ExecutionPhase.ValueType, *texts: str) -> api_pb2.AgentExecution:
    execution = api_pb2.AgentExecution()
    execution.metadata.id = "aex-1"
    execution.status.phase = phase
    for text in texts:
        execution.status.messages.add(type=enum_pb2.MESSAGE_AI, content=text)
    return execution


def _state(execution: api_pb2.AgentExecution, version: int) -> State:
    split = split_status(execution.status)
    head = api_pb2.AgentExecution()
    head.CopyFrom(execution)
    head.status.CopyFrom(split.rest)
    return state_of(version, head.SerializeToString(deterministic=True), split.lists)


class GappyDeltas:
    """A fake client whose first `subscribeDeltas` stream skips a number; the second is whole."""

    def __init__(self) -> None:
        self.calls = 0
        running = _state(_execution(enum_pb2.EXECUTION_IN_PROGRESS, "a"), 1)
        done = _state(_execution(enum_pb2.EXECUTION_COMPLETED, "a", "b"), 2)
        self.first = [numbered(1, snapshot_pages(running, 1 << 20)[0])]
        self.first.append(numbered(3, change_pages(running, done, 1 << 20)[0]))  # 2 was lost
        self.second = [numbered(1, snapshot_pages(done, 1 << 20)[0])]

    async def subscribe_deltas(
        self, execution_id: str
    ) -> AsyncIterator[io_pb2.AgentExecutionChange]:
        self.calls += 1
        for raw in self.first if self.calls == 1 else self.second:
            yield io_pb2.AgentExecutionChange.FromString(raw)


async def test_states_subscribe_again_after_a_gap_and_never_show_a_state_built_over_it() -> None:
    client: Any = GappyDeltas()
    got = [s async for s in states(client, "aex-1")]
    assert client.calls == 2
    assert [(s.status.phase, [m.content for m in s.status.messages]) for s in got] == [
        (enum_pb2.EXECUTION_IN_PROGRESS, ["a"]),
        (enum_pb2.EXECUTION_COMPLETED, ["a", "b"]),
    ]
