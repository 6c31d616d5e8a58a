"""Thread ids: stable per session, stable per workflow when there is no session."""

import pytest

from worker.domain.threads import ephemeral_thread_id, thread_id_for_session


def test_session_thread_is_stable_and_readable() -> None:
    assert thread_id_for_session("ses-01abc") == "thread-ses-01abc"
    assert thread_id_for_session("ses-01abc") == thread_id_for_session("ses-01abc")


def test_ephemeral_thread_is_stable_for_the_same_workflow_and_distinct_across() -> None:
    a = ephemeral_thread_id("stigmer/agent-execution/invoke/aex-1")
    assert a == ephemeral_thread_id("stigmer/agent-execution/invoke/aex-1")
    assert a != ephemeral_thread_id("stigmer/agent-execution/invoke/aex-2")
    assert a.startswith("thread-ephemeral-")


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_session_id_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="session_id"):
        thread_id_for_session(bad)
