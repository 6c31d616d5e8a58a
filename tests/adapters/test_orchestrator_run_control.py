"""The orchestrator client's run-control calls: reading the execution, and the §7 probe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from google.protobuf import json_format
from google.protobuf.message import Message

from worker.adapters.auth import StaticToken
from worker.adapters.orchestrator import GrpcOrchestrator
from worker.errors import NotFound, Unavailable
from worker.settings import BackendSettings

from .fake_orchestrator import FakeOrchestrator, start_fake_orchestrator

M = TypeVar("M", bound=Message)


def _msg(cls: type[M], **fields: Any) -> M:
    """A proto message from plain values (ProtoJSON rules), typed as the message."""
    return json_format.ParseDict(fields, cls())


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeOrchestrator, GrpcOrchestrator]]:
    fake = FakeOrchestrator()
    server, port = await start_fake_orchestrator(fake)
    client = GrpcOrchestrator(
        BackendSettings.model_validate({"STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{port}"}),
        tokens=StaticToken("key"),
    )
    yield fake, client
    await client.close()
    await server.stop(grace=None)


def probes(fake: FakeOrchestrator) -> int:
    return sum(c.method == "submitApproval" for c in fake.calls)


async def test_a_january_orchestrator_is_probed_once_and_has_no_run_control(
    served: tuple[FakeOrchestrator, GrpcOrchestrator],
) -> None:
    fake, client = served
    assert await client.supports_run_control() is False
    assert await client.supports_run_control() is False
    assert probes(fake) == 1


async def test_an_orchestrator_refusing_the_empty_probe_has_run_control(
    served: tuple[FakeOrchestrator, GrpcOrchestrator],
) -> None:
    fake, client = served
    fake.run_control = True
    assert await client.supports_run_control() is True
    assert await client.supports_run_control() is True
    assert probes(fake) == 1
    (probe,) = [c.request for c in fake.calls if c.method == "submitApproval"]
    assert probe == type(probe)(), "the probe carries nothing a server could act on"


async def test_an_unreachable_orchestrator_is_asked_again_next_time(
    served: tuple[FakeOrchestrator, GrpcOrchestrator],
) -> None:
    fake, client = served
    fake.failures["submitApproval"] = (grpc.StatusCode.UNAVAILABLE, "restarting")
    with pytest.raises(Unavailable):
        await client.supports_run_control()
    del fake.failures["submitApproval"]
    fake.run_control = True
    assert await client.supports_run_control() is True
    assert probes(fake) == 2


async def test_the_execution_is_read_as_stored(
    served: tuple[FakeOrchestrator, GrpcOrchestrator],
) -> None:
    fake, client = served
    fake.executions["aex-1"] = _msg(
        execution_api.AgentExecution,
        metadata={"id": "aex-1", "annotations": {"stigmer.ai/requested-transition": "pause"}},
    )
    stored = await client.get_execution("aex-1")
    assert stored.metadata.annotations["stigmer.ai/requested-transition"] == "pause"
    with pytest.raises(NotFound):
        await client.get_execution("aex-missing")
