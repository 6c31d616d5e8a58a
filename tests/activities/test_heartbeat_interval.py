"""The heartbeat period: the configured one, capped by the activity's heartbeat timeout."""

from __future__ import annotations

import pytest

from worker.run.heartbeat import BEATS_PER_TIMEOUT, beat_interval


@pytest.mark.parametrize("timeout", [None, 0.0, -1.0])
def test_without_a_heartbeat_timeout_the_configured_period_holds(timeout: float | None) -> None:
    assert beat_interval(5.0, timeout) == 5.0


def test_a_long_timeout_keeps_the_configured_period() -> None:
    assert beat_interval(5.0, 30.0) == 5.0


def test_a_short_timeout_gets_several_beats_per_timeout() -> None:
    assert beat_interval(5.0, 5.0) == pytest.approx(5.0 / BEATS_PER_TIMEOUT)
    assert beat_interval(25.0, 0.3) == pytest.approx(0.1)
    assert BEATS_PER_TIMEOUT >= 2
