"""Attempts that end at an approval gate or for a pause are counted as such, not as completed
or cancelled executions."""

from __future__ import annotations

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from worker.observability.inflight import _outcome_of_result
from worker.observability.metrics import Metrics, Outcome


def test_an_attempt_ending_at_a_gate_is_waiting_for_approval() -> None:
    waiting = api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_WAITING_FOR_APPROVAL)
    assert _outcome_of_result(waiting) is Outcome.WAITING_FOR_APPROVAL
    done = api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_COMPLETED)
    assert _outcome_of_result(done) is Outcome.COMPLETED


def test_every_outcome_is_a_series_from_the_start() -> None:
    text = Metrics().render()[0].decode()
    for outcome in ("waiting_for_approval", "paused"):
        assert f'agent_runner_executions_total{{outcome="{outcome}"}} 0.0' in text
