"""The update policy: flush after N events, after T ms with pending changes, or a significant
change once its burst has settled; `record()` says when to look at the deadline again."""

from __future__ import annotations

import pytest

from worker.domain.update_policy import UpdatePolicy


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self, start_ms: int = 1_000_000) -> None:
        # Whole milliseconds, so sums of advances compare exactly.
        self._ms = start_ms

    @property
    def now(self) -> float:
        return self._ms / 1000.0

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: int) -> None:
        self._ms += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def flushed_policy(
    clock: FakeClock,
    *,
    every: int = 10,
    interval_ms: int = 200,
    min_gap_ms: int = 0,
    settle_ms: int = 0,
) -> UpdatePolicy:
    """A policy that has just flushed, so the interval starts now."""
    policy = UpdatePolicy(
        events_per_update=every,
        interval_ms=interval_ms,
        min_gap_ms=min_gap_ms,
        settle_ms=settle_ms,
        clock=clock,
    )
    policy.record(significant=True)
    policy.flushed()
    return policy


def test_nothing_is_due_without_changes(clock: FakeClock) -> None:
    policy = UpdatePolicy(clock=clock)
    clock.advance_ms(10_000)
    assert not policy.due()
    assert policy.deadline() is None
    assert policy.pending == 0


def test_first_change_is_due_at_once_because_no_flush_happened_within_the_interval(
    clock: FakeClock,
) -> None:
    policy = UpdatePolicy(events_per_update=10, interval_ms=200, settle_ms=0, clock=clock)
    assert policy.record(), "the first change moves the deadline from none to now"
    assert policy.due()


def test_no_update_goes_out_sooner_than_the_settle_time_after_its_oldest_change(
    clock: FakeClock,
) -> None:
    policy = UpdatePolicy(events_per_update=10, interval_ms=200, settle_ms=20, clock=clock)
    policy.record()
    assert not policy.due()
    assert policy.deadline() == pytest.approx(clock.now + 0.02)
    clock.advance_ms(20)
    assert policy.due()


def test_flush_falls_due_after_n_events(clock: FakeClock) -> None:
    policy = flushed_policy(clock, every=10)
    due = []
    for _ in range(10):
        policy.record()
        due.append(policy.due())
    assert due == [False] * 9 + [True]
    assert policy.pending == 10


def test_record_asks_for_a_new_look_only_when_the_deadline_moves_closer(
    clock: FakeClock,
) -> None:
    policy = flushed_policy(clock, every=4, interval_ms=200, min_gap_ms=50)
    moved = [policy.record() for _ in range(5)]
    assert moved == [True, False, False, True, False], "the first change, then the 4th"
    assert policy.deadline() == pytest.approx(clock.now + 0.05)
    policy.flushed()
    assert policy.record()
    assert policy.record(significant=True), "the first significant change moves it"
    assert not policy.record(significant=True), "later ones in the same burst do not"


def test_flush_falls_due_when_the_interval_passes_with_pending_changes(clock: FakeClock) -> None:
    policy = flushed_policy(clock, interval_ms=200)
    policy.record()
    assert not policy.due()
    clock.advance_ms(150)
    assert not policy.due()
    assert policy.deadline() == pytest.approx(clock.now + 0.05)
    clock.advance_ms(50)
    assert policy.due()


def test_interval_counts_from_the_last_flush_not_from_the_change(clock: FakeClock) -> None:
    policy = flushed_policy(clock, interval_ms=200)
    clock.advance_ms(190)
    policy.record()
    assert not policy.due()
    clock.advance_ms(10)
    assert policy.due()


def test_a_quiet_period_lets_the_next_lone_change_through_at_once(clock: FakeClock) -> None:
    policy = flushed_policy(clock, interval_ms=200)
    clock.advance_ms(5_000)
    policy.record()
    assert policy.due()


def test_a_significant_change_is_due_at_once_without_a_settle_time(clock: FakeClock) -> None:
    policy = flushed_policy(clock, every=10, interval_ms=200)
    policy.record()
    assert not policy.due()
    policy.record(significant=True)
    assert policy.due()
    assert policy.deadline() == clock.now


def test_a_significant_change_waits_the_settle_time_for_its_burst(clock: FakeClock) -> None:
    policy = flushed_policy(clock, interval_ms=200, min_gap_ms=50, settle_ms=20)
    clock.advance_ms(1_000)
    policy.record(significant=True)
    assert not policy.due()
    assert policy.deadline() == pytest.approx(clock.now + 0.02)
    clock.advance_ms(15)
    policy.record(significant=True)
    assert policy.deadline() == pytest.approx(clock.now + 0.005), "counted from the first one"
    clock.advance_ms(5)
    assert policy.due()
    assert policy.pending == 2


def test_the_interval_deadline_wins_when_it_comes_before_the_settle_time(
    clock: FakeClock,
) -> None:
    policy = flushed_policy(clock, interval_ms=200, min_gap_ms=50, settle_ms=20)
    policy.record()
    clock.advance_ms(190)
    policy.record(significant=True)
    assert policy.deadline() == pytest.approx(clock.now + 0.01)


def test_significance_is_remembered_until_the_flush(clock: FakeClock) -> None:
    policy = flushed_policy(clock)
    policy.record(significant=True)
    policy.record()
    assert policy.due()
    policy.flushed()
    policy.record()
    assert not policy.due()


def test_flushed_resets_count_and_restarts_the_interval(clock: FakeClock) -> None:
    policy = flushed_policy(clock, every=3, interval_ms=200)
    for _ in range(3):
        policy.record()
    assert policy.due()
    policy.flushed()
    assert policy.pending == 0
    assert not policy.due()
    policy.record()
    assert not policy.due()
    assert policy.deadline() == pytest.approx(clock.now + 0.2)


def test_retry_later_makes_the_lost_snapshot_pending_again_without_urgency(
    clock: FakeClock,
) -> None:
    policy = flushed_policy(clock, interval_ms=200)
    policy.record(significant=True)
    policy.flushed()
    policy.retry_later()
    assert policy.pending == 1
    assert not policy.due()
    clock.advance_ms(200)
    assert policy.due()


def test_events_per_update_of_one_flushes_every_change(clock: FakeClock) -> None:
    policy = flushed_policy(clock, every=1)
    assert policy.record()
    assert policy.due()


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="events_per_update"):
        UpdatePolicy(events_per_update=0)
    with pytest.raises(ValueError, match="interval_ms"):
        UpdatePolicy(interval_ms=-1)
    with pytest.raises(ValueError, match="min_gap_ms"):
        UpdatePolicy(min_gap_ms=-1)
    with pytest.raises(ValueError, match="settle_ms"):
        UpdatePolicy(settle_ms=-1)


def test_a_burst_of_significant_changes_waits_out_the_minimum_gap(clock: FakeClock) -> None:
    policy = flushed_policy(clock, interval_ms=200, min_gap_ms=50, settle_ms=20)
    policy.record(significant=True)
    assert not policy.due()
    assert policy.deadline() == pytest.approx(clock.now + 0.05)
    clock.advance_ms(30)
    policy.record(significant=True)
    assert not policy.due()
    clock.advance_ms(20)
    assert policy.due(), "due once the gap since the last flush has passed"


def test_a_significant_change_after_the_gap_is_due_at_once_without_a_settle_time(
    clock: FakeClock,
) -> None:
    policy = flushed_policy(clock, interval_ms=200, min_gap_ms=50)
    clock.advance_ms(60)
    policy.record(significant=True)
    assert policy.due()


def test_n_events_inside_the_gap_also_wait_for_it(clock: FakeClock) -> None:
    policy = flushed_policy(clock, every=3, interval_ms=200, min_gap_ms=50)
    for _ in range(3):
        policy.record()
    assert not policy.due()
    clock.advance_ms(50)
    assert policy.due()


def test_the_minimum_gap_and_the_settle_time_never_exceed_the_interval(clock: FakeClock) -> None:
    policy = flushed_policy(clock, interval_ms=20, min_gap_ms=500, settle_ms=500)
    policy.record(significant=True)
    assert policy.deadline() == pytest.approx(clock.now + 0.02)
