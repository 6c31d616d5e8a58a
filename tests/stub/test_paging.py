"""Page tokens and small pure helpers of the stub."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from stigmer_stub import paging
from stigmer_stub.errors import InvalidArgument
from stigmer_stub.ids import new_id, slugify
from stigmer_stub.settings import SettingsError, load_settings
from stigmer_stub.workflow import describe_failure


def test_keyset_tokens_round_trip_and_page_numbers_are_accepted() -> None:
    token = paging.keyset_token("aex-01abc")
    assert paging.cursor(5, token) == paging.Cursor(5, after_id="aex-01abc")
    assert paging.cursor(5, "3").skip == 10
    assert paging.cursor(0, "").size == paging.DEFAULT_PAGE_SIZE
    assert paging.cursor(10_000, "").size == paging.MAX_PAGE_SIZE


@pytest.mark.parametrize("token", ["0", "garbage", "k1.not-base64!", paging.keyset_token("")])
def test_tokens_not_issued_by_the_stub_are_rejected(token: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^page_token"):
        paging.cursor(5, token)


def test_total_pages_rounds_up() -> None:
    assert [paging.total_pages(n, 2) for n in (0, 1, 2, 3)] == [0, 1, 1, 2]


def test_ids_are_prefixed_lowercase_ulids_in_creation_order() -> None:
    ids = [new_id("aex") for _ in range(3)]
    assert all(i.startswith("aex-") and i == i.lower() and len(i) == 30 for i in ids)
    assert ids == sorted(ids) or len({i[:14] for i in ids}) == 1  # same millisecond: any order


def test_slugs_are_lowercase_dashed_and_bounded() -> None:
    assert slugify("My Agent  v2!") == "my-agent-v2"
    assert len(slugify("x" * 100)) == 63
    with pytest.raises(InvalidArgument, match=r"^metadata\.name"):
        slugify("!!!")


def test_settings_read_the_deployers_names_and_report_every_bad_one() -> None:
    settings = load_settings(
        {
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": "agent_execution_runner",
            "TEMPORAL_AGENT_EXECUTION_STIGMER_TASK_QUEUE": "wf",
            "MONGODB_URI": "mongodb://db:27017",
            "STIGMER_STUB_EXECUTE_ATTEMPTS": "1",
        }
    )
    assert settings.temporal.runner_task_queue == "agent_execution_runner"
    assert settings.temporal.workflow_task_queue == "wf"
    assert settings.mongo.uri == "mongodb://db:27017"
    assert settings.workflow.execute_attempts == 1
    assert settings.grpc.port == 7234
    with pytest.raises(SettingsError) as failed:
        load_settings({"STIGMER_STUB_PORT": "x", "STIGMER_STUB_EXECUTE_ATTEMPTS": "0"})
    assert "STIGMER_STUB_PORT" in str(failed.value)
    assert "STIGMER_STUB_EXECUTE_ATTEMPTS" in str(failed.value)


def test_a_failure_is_described_by_activity_and_innermost_message() -> None:
    cause = ApplicationError("model refused", type="ModelError")
    err = ActivityError(
        "Activity task failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="ExecuteGraphton",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    err.__cause__ = cause
    assert describe_failure(err) == "ExecuteGraphton: model refused"
