"""Cron schedules against a brute-force oracle, around real DST changes (hypothesis).

The oracle walks UTC minute by minute and asks croniter's own `match` whether each
local wall time is one the expression names; zoneinfo says which wall time a minute
has. The documented rules then say what must fire: a matching wall time at its first
occurrence (the second pass of a repeated hour fires nothing), and, at a spring-forward
jump, one fire at the jump when a wall time the jump skipped would have matched. Our
`next_after` must give exactly those instants, in order, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.definitions.model import ScheduleSpec
from processor.matching.schedules import Schedule

ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Australia/Lord_Howe"]
"""Lord Howe moves its clocks by 30 minutes; Sydney's DST is in the southern summer."""
MINUTES = ["0", "30", "*/15", "5,35", "59", "*"]
HOURS = ["*", "0", "1", "2", "3", "1-3", "*/2", "2,14"]
DAYS = ["*", "*", "1-7", "*/2"]
WEEKDAYS = ["*", "*", "0", "1-5", "6"]
SPAN = timedelta(hours=26)
"""How far the oracle looks from each start, a day or less before a change: past it."""


@cache
def changes(zone: str, year: int = 2026) -> list[datetime]:
    """The instants (UTC) the zone's offset changes in `year`."""
    tz = ZoneInfo(zone)
    found = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    step = timedelta(hours=1)
    while t.year == year:
        if (t + step).astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset():
            low, high = t, t + step  # narrow to the minute
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                middle = middle.replace(second=0, microsecond=0)
                if middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high)
        t += step
    return found


def oracle(expression: str, zone: str, start: datetime, end: datetime) -> list[float]:
    """What must fire in (start, end], by the documented rules, minute by minute."""
    tz = ZoneInfo(zone)
    due = []
    minute = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute <= end:
        local = minute.astimezone(tz)
        before = (minute - timedelta(minutes=1)).astimezone(tz)
        jumped = local.utcoffset() > before.utcoffset()  # type: ignore[operator]
        wall = local.replace(tzinfo=None)
        if jumped:
            # The wall times the clock skipped: [just after the last minute, this one).
            skipped = before.replace(tzinfo=None) + timedelta(minutes=1)
            if any(
                croniter.match(expression, skipped + timedelta(minutes=n))
                for n in range(int((wall - skipped).total_seconds() // 60))
            ) or croniter.match(expression, wall):
                due.append(minute.timestamp())
        elif local.fold == 0 and croniter.match(expression, wall):
            due.append(minute.timestamp())
        minute += timedelta(minutes=1)
    return due


def ours(expression: str, zone: str, start: datetime, end: datetime) -> list[float]:
    schedule = Schedule("t", ScheduleSpec(cron=expression, timezone=zone))
    fired = []
    t = start.timestamp()
    while True:
        found = schedule.next_after(t)
        assert found is not None and found > t
        if found > end.timestamp():
            return fired
        fired.append(found)
        t = found


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    which=st.integers(0, 1),
    offset_minutes=st.integers(-24 * 60, -1),  # the span always holds the change
    minute=st.sampled_from(MINUTES),
    hour=st.sampled_from(HOURS),
    day=st.sampled_from(DAYS),
    weekday=st.sampled_from(WEEKDAYS),
)
def test_cron_fires_what_the_oracle_says_around_dst_changes(
    zone: str, which: int, offset_minutes: int, minute: str, hour: str, day: str, weekday: str
) -> None:
    expression = f"{minute} {hour} {day} * {weekday}"
    start = changes(zone)[which] + timedelta(minutes=offset_minutes, seconds=17)
    end = start + SPAN
    assert ours(expression, zone, start, end) == oracle(expression, zone, start, end), expression


def test_the_oracle_sees_the_documented_cases() -> None:
    """The rules, on the two New York changes of 2026: 02:30 is skipped in March (one fire,
    at the jump, 07:00Z), 01:30 happens twice in November (one fire, the first, 05:30Z)."""
    spring, fall = changes("America/New_York")
    assert spring == datetime(2026, 3, 8, 7, tzinfo=UTC)
    assert fall == datetime(2026, 11, 1, 6, tzinfo=UTC)
    jump = oracle("30 2 * * *", "America/New_York", spring - timedelta(hours=3), spring)
    assert jump == [spring.timestamp()]
    once = oracle(
        "30 1 * * *", "America/New_York", fall - timedelta(hours=3), fall + timedelta(hours=2)
    )
    assert once == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC).timestamp()]
