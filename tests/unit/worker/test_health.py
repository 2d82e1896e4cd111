"""When a worker's consumer group counts as stalled (its /healthz then answers 503)."""

from __future__ import annotations

from processor.config import Settings
from processor.worker.health import ConsumerHealth


def monitor() -> ConsumerHealth:
    return ConsumerHealth(Settings(), {"g": ["events"]}, 1.0, stall_seconds=60)


def test_a_group_that_does_not_move_while_its_lag_grows_is_stalled_until_it_moves() -> None:
    health = monitor()
    health.observe("g", committed=100, lag=0, now=0)
    health.observe("g", committed=100, lag=40, now=30)
    assert health.health(now=30)[0]  # not for long enough yet
    health.observe("g", committed=100, lag=90, now=61)
    healthy, groups = health.health(now=61)
    assert not healthy and groups["g"] == {
        "lag": 90,
        "seconds_since_progress": 61,
        "stalled": True,
    }
    health.observe("g", committed=150, lag=40, now=62)  # it moved
    assert health.health(now=62)[0]


def test_an_idle_group_is_never_stalled() -> None:
    health = monitor()
    health.observe("g", committed=100, lag=0, now=0)
    health.observe("g", committed=100, lag=0, now=3600)
    assert health.health(now=3600)[0]


def test_a_lag_that_shrinks_without_a_commit_is_not_a_stall_but_growth_after_it_is() -> None:
    health = monitor()
    health.observe("g", committed=10, lag=50, now=0)
    health.observe("g", committed=10, lag=20, now=61)  # e.g. retention dropped records
    assert health.health(now=61)[0]
    health.observe("g", committed=10, lag=30, now=90)  # growing again, still no commit
    assert not health.health(now=90)[0]
