"""Schedules against hand-checked dates. US DST in 2026: starts 8 March, ends 1 November."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processor.definitions.model import ScheduleSpec
from processor.matching.schedules import DueIndex, Schedule, due_fires


def at(text: str) -> float:
    return (
        datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
        if "+" not in text
        else datetime.fromisoformat(text).timestamp()
    )


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule(**spec: object) -> Schedule:
    return Schedule("t-1", ScheduleSpec.model_validate(spec))


def fires_from(s: Schedule, start: str, n: int) -> list[str]:
    out, t = [], at(start)
    for _ in range(n):
        found = s.next_after(t)
        assert found is not None
        out.append(iso(found))
        t = found
    return out


def test_daily_sales_report_is_nine_new_york_time_across_both_dst_changes() -> None:
    s = schedule(cron="0 9 * * *", timezone="America/New_York")
    assert fires_from(s, "2026-03-06T12:00:00", 4) == [
        "2026-03-06T14:00:00Z",
        "2026-03-07T14:00:00Z",
        "2026-03-08T13:00:00Z",
        "2026-03-09T13:00:00Z",
    ]
    assert fires_from(s, "2026-10-31T00:00:00", 3) == [
        "2026-10-31T13:00:00Z",
        "2026-11-01T14:00:00Z",
        "2026-11-02T14:00:00Z",
    ]


def test_a_0230_job_on_spring_forward_day_fires_once_when_the_clock_jumps() -> None:
    s = schedule(cron="30 2 * * *", timezone="America/New_York")
    assert fires_from(s, "2026-03-07T00:00:00", 3) == [
        "2026-03-07T07:30:00Z",  # 02:30 EST
        "2026-03-08T07:00:00Z",  # 02:30 does not exist: 03:00 EDT, the jump
        "2026-03-09T06:30:00Z",  # 02:30 EDT
    ]


def test_a_0130_job_on_fall_back_day_fires_once_at_the_first_occurrence() -> None:
    s = schedule(cron="30 1 * * *", timezone="America/New_York")
    assert fires_from(s, "2026-10-31T12:00:00", 3) == [
        "2026-11-01T05:30:00Z",  # 01:30 EDT; the second 01:30 (EST, 06:30Z) does not fire
        "2026-11-02T06:30:00Z",
        "2026-11-03T06:30:00Z",
    ]


def test_seconds_field_macros_intervals_and_one_shot() -> None:
    assert fires_from(schedule(cron="*/20 * * * * *"), "2026-01-01T00:00:00", 3) == [
        "2026-01-01T00:00:20Z",
        "2026-01-01T00:00:40Z",
        "2026-01-01T00:01:00Z",
    ]
    assert fires_from(
        schedule(cron="@hourly", timezone="Asia/Kolkata"), "2026-01-01T00:00:00", 2
    ) == ["2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z"]  # UTC+05:30
    every = schedule(every="15m", start_date="2026-01-01T00:05:00Z")
    assert fires_from(every, "2025-12-31T00:00:00", 2) == [
        "2026-01-01T00:05:00Z",
        "2026-01-01T00:20:00Z",
    ]
    once = schedule(at="2026-05-01T12:00:00Z")
    assert fires_from(once, "2026-01-01T00:00:00", 1) == ["2026-05-01T12:00:00Z"]
    assert once.next_after(at("2026-05-01T12:00:00")) is None


def test_start_and_end_dates_bound_the_fires() -> None:
    s = schedule(
        cron="0 0 * * *", start_date="2026-02-01T00:00:00Z", end_date="2026-02-03T00:00:00Z"
    )
    assert fires_from(s, "2026-01-01T00:00:00", 3) == [
        "2026-02-01T00:00:00Z",
        "2026-02-02T00:00:00Z",
        "2026-02-03T00:00:00Z",
    ]
    assert s.next_after(at("2026-02-03T00:00:00")) is None


def test_jitter_is_deterministic_and_bounded() -> None:
    s = schedule(cron="* * * * *", jitter_seconds=30)
    values = [s.jitter(at("2026-01-01T00:00:00") + 60 * i) for i in range(50)]
    assert values == [s.jitter(at("2026-01-01T00:00:00") + 60 * i) for i in range(50)]
    assert all(0 <= v <= 30 for v in values) and len(set(values)) > 5


def test_fires_up_to_grace_late_are_all_made() -> None:
    s = schedule(cron="*/5 * * * * *", grace_seconds=60)
    fired = due_fires(s, at("2026-01-01T00:00:00"), at("2026-01-01T00:00:20"))
    assert [iso(f) for f in fired] == [f"2026-01-01T00:00:{n:02d}Z" for n in (5, 10, 15, 20)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", []),
        ("latest", ["2026-01-01T05:00:00Z"]),
        ("all", ["2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z", "2026-01-01T05:00:00Z"]),
    ],
)
def test_catch_up_after_an_outage(policy: str, expected: list[str]) -> None:
    s = schedule(cron="0 * * * *", catch_up=policy, catch_up_window="6h", max_catch_up=3)
    fired = due_fires(s, at("2026-01-01T00:00:30"), at("2026-01-01T05:30:00"))
    assert [iso(f) for f in fired] == expected


def test_catch_up_window_limits_how_far_back() -> None:
    s = schedule(cron="0 * * * *", catch_up="latest", catch_up_window="10m")
    assert due_fires(s, at("2026-01-01T00:00:30"), at("2026-01-01T05:30:00")) == []


def test_due_index_pops_only_what_is_due_and_follows_changes() -> None:
    index = DueIndex()
    start = at("2026-01-01T00:00:00")
    for i in range(1000):
        index.put(Schedule(f"t{i}", ScheduleSpec(cron=f"{i % 60} * * * *")), start)
    due = index.pop_due(start, start + 60)
    assert sorted(s.trigger_id for s, _ in due) == sorted(
        f"t{i}" for i in range(1000) if i % 60 == 1
    )
    index.remove("t2")
    index.put(Schedule("t3", ScheduleSpec(cron="59 * * * *")), start + 60)
    due = index.pop_due(start + 60, start + 240)
    assert sorted(s.trigger_id for s, _ in due) == sorted(
        f"t{i}" for i in range(1000) if i % 60 in (2, 3, 4) and i not in (2, 3)
    )


def test_a_stored_cron_naming_no_date_never_fires_and_leaves_the_others_due() -> None:
    """30 February passes no validation now, but a definition stored before that check
    may hold it: it has no next fire, and the schedules beside it still fire (the tick
    was dead-lettered whole, so no schedule fired while it existed)."""
    stored = ScheduleSpec(cron="0 0 28 2 *").model_dump()
    never = Schedule("never", ScheduleSpec.model_construct(**{**stored, "cron": "0 0 30 2 *"}))
    start = at("2026-01-01T00:00:00")
    assert never.next_after(start) is None
    assert never.previous_at_or_before(start) is None
    assert due_fires(never, start - 3600, start) == []
    index = DueIndex()
    index.put(never, start)
    index.put(Schedule("hourly", ScheduleSpec(cron="0 * * * *")), start)
    due = index.pop_due(start, start + 3600)
    assert [(s.trigger_id, [iso(t) for t in fires]) for s, fires in due] == [
        ("hourly", ["2026-01-01T01:00:00Z"])
    ]


def test_a_schedule_whose_time_cannot_be_computed_is_left_out_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A start at the calendar's end (9999-12-31, 10:00 after a 09:00 cron) overflows:
    that schedule is left out, logged, and the one beside it still fires."""
    start = at("2026-01-01T00:00:00")
    index = DueIndex()
    index.put(schedule(cron="0 9 * * *", start_date="9999-12-31T10:00:00Z"), start)
    index.put(Schedule("hourly", ScheduleSpec(cron="0 * * * *")), start)
    due = index.pop_due(start, start + 3600)
    assert [s.trigger_id for s, _ in due] == ["hourly"]
    assert "schedule of trigger t-1 is left out" in caplog.text
    assert "OverflowError" in caplog.text
