"""What Temporal receives when ExecuteGraphton fails: the activity's error, encoded by the
worker's data converter, keeps its type and retryability (a cause chain that loops would not
encode at all, and Temporal would see a generic, retryable failure instead)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import openai
import pytest
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.activities.fakes import FakeOrchestratorPorts, FakeRuntime, tool_turn
from tests.activities.test_runner_activities import an_execution, make_activities
from worker.activities.runner import to_application_error
from worker.converter import DATA_CONVERTER
from worker.logs import SECRETS
from worker.run.failures import as_runner_error


async def encoded_failure(err: BaseException) -> Failure:
    failure = Failure()
    await DATA_CONVERTER.encode_failure(err, failure)
    return failure


async def test_a_typed_error_reaches_temporal_with_its_type_and_not_retryable(
    tmp_path: Path,
) -> None:
    acts = make_activities(tmp_path, FakeOrchestratorPorts.with_agent(), FakeRuntime())
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            acts.execute_graphton, an_execution(session_id="ses-missing"), "t"
        )

    failure = await encoded_failure(raised.value)

    assert failure.application_failure_info.type == "NotFound"
    assert failure.application_failure_info.non_retryable
    assert "ses-missing" in failure.message


async def test_a_crash_reaches_temporal_as_a_retryable_agent_failure(tmp_path: Path) -> None:
    runtime = FakeRuntime([*tool_turn(1)], raise_after=RuntimeError("model exploded"))
    acts = make_activities(tmp_path, FakeOrchestratorPorts.with_agent(), runtime)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t")

    failure = await encoded_failure(raised.value)

    assert failure.application_failure_info.type == "AgentFailed"
    assert not failure.application_failure_info.non_retryable
    assert "model exploded" in failure.message


async def test_the_failure_has_no_raw_cause_and_no_secret_in_it(tmp_path: Path) -> None:
    SECRETS.add(["sk-failure-test-0123456789"])
    crash = RuntimeError("provider refused key sk-failure-test-0123456789")
    runtime = FakeRuntime([*tool_turn(1)], raise_after=crash)
    acts = make_activities(tmp_path, FakeOrchestratorPorts.with_agent(), runtime)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "t")

    failure = await encoded_failure(raised.value)

    assert not failure.HasField("cause"), "library exceptions stay out of the history"
    assert b"sk-failure-test-0123456789" not in failure.SerializeToString()
    assert "provider refused key ***" in failure.message


def provider_error(status: int) -> Exception:
    # openai ships its own copy of httpx, `httpx2`.
    request = httpx2.Request("POST", "https://api.example/v1/chat/completions")
    response = httpx2.Response(status, request=request)
    return openai.APIStatusError(f"Error code: {status}", response=response, body=None)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, "PermissionDenied", False),
        (403, "PermissionDenied", False),
        (404, "ConfigurationError", False),
        (400, "InvalidInput", False),
        (429, "Unavailable", True),
        (503, "Unavailable", True),
    ],
)
def test_a_provider_http_error_is_typed_by_its_status(
    status: int, kind: str, retryable: bool
) -> None:
    # As the agent sees it: the client's error is the cause of what the graph raises.
    try:
        try:
            raise provider_error(status)
        except openai.APIStatusError as provider:
            raise RuntimeError("During task with name 'model'") from provider
    except RuntimeError as wrapped:
        typed = as_runner_error(wrapped)
    assert type(typed).__name__ == kind
    assert typed.retryable is retryable
    assert f"HTTP {status}" in str(typed)


def test_an_error_without_a_status_is_a_retryable_agent_failure() -> None:
    err = as_runner_error(ValueError("tool state went wrong"))
    assert type(err).__name__ == "AgentFailed"
    assert err.retryable


def provider_error_with(status: int, headers: dict[str, str], body: object) -> Exception:
    request = httpx2.Request("POST", "https://api.example/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers=headers)
    return openai.APIStatusError(f"Error code: {status}", response=response, body=body)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"retry-after": "12"}, 12.0), ({"retry-after-ms": "2500"}, 2.5), ({}, None)],
)
async def test_a_providers_retry_after_becomes_the_next_retry_delay(
    headers: dict[str, str], seconds: float | None
) -> None:
    typed = as_runner_error(provider_error_with(503, headers, None))
    failure = await encoded_failure(to_application_error(typed))

    info = failure.application_failure_info
    assert not info.non_retryable
    if seconds is None:
        assert not info.HasField("next_retry_delay")
    else:
        assert info.next_retry_delay.ToTimedelta().total_seconds() == seconds


def test_an_openai_account_without_quota_is_not_retried() -> None:
    body = {"message": "You exceeded your current quota", "type": "insufficient_quota"}
    typed = as_runner_error(provider_error_with(429, {}, {**body, "code": "insufficient_quota"}))

    assert type(typed).__name__ == "ConfigurationError"
    assert not typed.retryable
    assert "no quota left" in str(typed)
