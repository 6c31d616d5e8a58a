"""A cancelled run tells a pause from a cancel by the orchestrator's marker, and only when the
orchestrator serves run control."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from google.protobuf import json_format
from google.protobuf.message import Message

from worker.errors import Unavailable
from worker.run.approvals import TRANSITION_ANNOTATION, pause_requested

M = TypeVar("M", bound=Message)


def _msg(cls: type[M], **fields: Any) -> M:
    """A proto message from plain values (ProtoJSON rules), typed as the message."""
    return json_format.ParseDict(fields, cls())


@dataclass
class FakeRunControl:
    """A fake orchestrator's run-control surface: one stored execution."""

    supported: bool
    transition: str = ""
    down: bool = False

    async def get_execution(self, execution_id: str) -> execution_api.AgentExecution:
        if self.down:
            raise Unavailable("AgentExecutionQueryController/get: UNAVAILABLE")
        execution = _msg(execution_api.AgentExecution, metadata={"id": execution_id})
        if self.transition:
            execution.metadata.annotations[TRANSITION_ANNOTATION] = self.transition
        return execution

    async def supports_run_control(self) -> bool:
        return self.supported


async def test_the_pause_marker_means_pause() -> None:
    assert await pause_requested(FakeRunControl(True, "pause"), "aex-1")


async def test_no_marker_or_another_transition_is_a_cancel() -> None:
    assert not await pause_requested(FakeRunControl(True), "aex-1")
    assert not await pause_requested(FakeRunControl(True, "terminate"), "aex-1")


async def test_an_orchestrator_without_run_control_is_never_paused() -> None:
    assert not await pause_requested(FakeRunControl(False, "pause"), "aex-1")
    assert not await pause_requested(None, "aex-1")


async def test_an_unreachable_orchestrator_counts_as_a_cancel() -> None:
    assert not await pause_requested(FakeRunControl(True, "pause", down=True), "aex-1")
