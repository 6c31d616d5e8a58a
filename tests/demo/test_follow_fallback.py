"""`stigmer_cli.changes.states` against a gRPC server of the January contract: no
`subscribeDeltas` (the generated servicer's UNIMPLEMENTED), so it reads `subscribe`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2, query_pb2_grpc
from grpc import aio

from stigmer_cli.changes import states
from stigmer_cli.client import StigmerClient


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
