"""Schedule triggers: when each fires, and which fires a scheduler tick makes.

Times are UTC seconds since the epoch; cron expressions are read in the trigger's IANA
timezone, on local wall-clock time:

- A local time that occurs twice (the fall-back hour) fires once, at its first
  occurrence. A local time skipped by the spring-forward jump fires once, at the moment
  the clock jumps (like Debian's cron). `every:` intervals are plain elapsed time and
  know nothing of DST.
- `jitter_seconds` delays each fire by a deterministic amount in [0, jitter_seconds],
  derived from the trigger id and the scheduled time (so every worker agrees).

The scheduler sees ticks at T after a previous tick P. A fire scheduled in (P, T] is
made if it is at most `grace_seconds` late (this covers a worker failover: no fire is
lost). Older fires were missed while nothing ran, and follow `catch_up`:

    skip    none of them
    latest  only the most recent one, if within catch_up_window (the default)
    all     every one within catch_up_window, at most max_catch_up (oldest dropped)

so an outage never turns into a burst of agent runs.

`Scheduler` is the reaction to one tick, given the registry (no Kafka here): it keeps
the due-index in step with the registry (re-synced only when the registry changed) and
turns due scheduled times into fires whose execution ids come from the trigger and the
scheduled time, so a second scheduler, or a replayed tick, makes the same ids, which the
dispatcher drops. `backfill_fires` makes a past range's fires with the same ids.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from processor.definitions.model import CatchUp, OverlapPolicy, ScheduleSpec, TriggerDocument
from processor.definitions.registry import Registry
from processor.matching.fires import ensure_enabled, new_fire
from processor.messages import Cause, CauseKind, Fire, as_utc

log = logging.getLogger(__name__)


def _seconds_first(expression: str) -> bool:
    return len(expression.split()) == 6


@dataclass(frozen=True)
class Schedule:
    trigger_id: str
    spec: ScheduleSpec

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.spec.timezone)

    def _bounds_ok(self, t: float) -> bool:
        start, end = self.spec.start_date, self.spec.end_date
        return (start is None or t >= start.timestamp()) and (end is None or t <= end.timestamp())

    def next_after(self, t: float) -> float | None:
        """The first scheduled time strictly after t, or None when there is none."""
        start = self.spec.start_date.timestamp() if self.spec.start_date else None
        if start is not None and t < start:
            t = start - 0.001  # just before: datetimes keep microseconds, not nanoseconds
        if self.spec.at is not None:
            at = self.spec.at.timestamp()
            found: float | None = at if at > t else None
        elif self.spec.every is not None:
            interval = self.spec.every.seconds
            anchor = start if start is not None else 0.0
            found = anchor + (math.floor((t - anchor) / interval) + 1) * interval
        else:
            found = self._cron_after(t)
        if found is None or not self._bounds_ok(found):
            return None
        return found

    def previous_at_or_before(self, t: float) -> float | None:
        """The last scheduled time at or before t (for `catch_up: latest`)."""
        if self.spec.at is not None:
            at = self.spec.at.timestamp()
            return at if at <= t and self._bounds_ok(at) else None
        if self.spec.every is not None:
            interval = self.spec.every.seconds
            start = self.spec.start_date.timestamp() if self.spec.start_date else 0.0
            found = start + math.floor((t - start) / interval) * interval
            return found if found >= start and self._bounds_ok(found) else None
        assert self.spec.cron is not None
        local = datetime.fromtimestamp(t, UTC).astimezone(self.zone).replace(tzinfo=None)
        it = croniter(
            self.spec.cron,
            local + timedelta(seconds=1),
            second_at_beginning=_seconds_first(self.spec.cron),
        )
        for _ in range(3):  # a wall time in a DST gap maps forward; step back past it
            try:
                found = self._to_utc(it.get_prev(datetime))
            except CroniterBadDateError:
                return None  # a date that never comes (30 February): see _cron_after
            if found <= t:
                return found if self._bounds_ok(found) else None
        return None

    def _cron_after(self, t: float) -> float | None:
        """None for an expression naming no date that exists (30 February), which
        validation refuses but a definition stored before that check may hold."""
        assert self.spec.cron is not None
        local = datetime.fromtimestamp(t, UTC).astimezone(self.zone).replace(tzinfo=None)
        it = croniter(self.spec.cron, local, second_at_beginning=_seconds_first(self.spec.cron))
        while True:
            try:
                found = self._to_utc(it.get_next(datetime))
            except CroniterBadDateError:
                return None
            if found > t:
                return found

    def _to_utc(self, wall: datetime) -> float:
        """A local wall time as a UTC instant: first occurrence if repeated; the jump if skipped."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        if first.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall:
            return first.timestamp()
        # In the spring-forward gap: find the instant the clock jumped (offset changes).
        low = wall.replace(tzinfo=self.zone, fold=1).timestamp()
        high = first.timestamp()
        after = datetime.fromtimestamp(high, self.zone).utcoffset()
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self.zone).utcoffset() == after:
                high = middle
            else:
                low = middle
        return float(high)

    def jitter(self, scheduled: float) -> float:
        if not self.spec.jitter_seconds:
            return 0.0
        digest = hashlib.sha256(f"{self.trigger_id}|{scheduled}".encode()).digest()
        return float(int.from_bytes(digest[:8], "big") % (self.spec.jitter_seconds + 1))


def _fires_between(schedule: Schedule, lower: float, upper: float, limit: int) -> list[float]:
    """Scheduled times whose (jittered) fire time is in (lower, upper], oldest first."""
    found: list[float] = []
    t = lower - schedule.spec.jitter_seconds
    while (s := schedule.next_after(t)) is not None and s <= upper:
        if lower < s + schedule.jitter(s) <= upper:
            found.append(s)
            if len(found) >= limit:
                break
        t = s
    return found


def scheduled_between(schedule: Schedule, start: float, end: float, limit: int) -> list[float]:
    """Scheduled times in [start, end), oldest first, at most `limit` (a backfill's
    range; the times themselves, not their jittered fire times)."""
    found: list[float] = []
    t = start - 1e-6
    while (s := schedule.next_after(t)) is not None and s < end and len(found) < limit:
        found.append(s)
        t = s
    return found


def due_fires(schedule: Schedule, previous_tick: float, tick: float) -> list[float]:
    """Scheduled times to fire at this tick (see the module docstring for the policy)."""
    spec = schedule.spec
    grace_start = tick - spec.grace_seconds
    on_time = _fires_between(schedule, max(previous_tick, grace_start), tick, 10_000)
    if previous_tick >= grace_start or spec.catch_up is CatchUp.SKIP:
        return on_time
    window_start = max(previous_tick, tick - spec.catch_up_window.seconds)
    if spec.catch_up is CatchUp.LATEST:
        latest = schedule.previous_at_or_before(grace_start)
        missed = [latest] if latest is not None and latest > window_start else []
    else:
        missed = _fires_between(schedule, window_start, grace_start, 1_000_000)[
            -spec.max_catch_up :
        ]
    return [*missed, *on_time]


def first_pending(schedule: Schedule, tick: float) -> float | None:
    """The first scheduled time whose fire time is after this tick."""
    t = tick - schedule.spec.jitter_seconds
    while (s := schedule.next_after(t)) is not None and s + schedule.jitter(s) <= tick:
        t = s
    return s


def schedule_of(document: TriggerDocument) -> Schedule | None:
    if not document.enabled or document.schedule is None:
        return None
    return Schedule(document.trigger_id, document.schedule)


def _uncomputable(schedule: Schedule, exc: Exception) -> None:
    """One schedule whose times cannot be computed (a bound near the calendar's end,
    year 9999) is left out, with the reason, instead of stopping every schedule's tick."""
    log.error(
        "schedule of trigger %s is left out: its next time cannot be computed (%s: %s); "
        "check its dates and expression, then apply it again",
        schedule.trigger_id,
        type(exc).__name__,
        exc,
    )


class DueIndex:
    """Schedule triggers ordered by their next fire time (a heap with lazy deletion).

    Work per tick grows with the fires due, not with the number of schedules.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, int]] = []
        self._current: dict[str, tuple[Schedule, int]] = {}
        self._versions = 0

    def __len__(self) -> int:
        return len(self._current)

    def put(self, schedule: Schedule, tick: float) -> None:
        """Add or replace a schedule; fires up to `tick` are taken as handled."""
        self._versions += 1
        self._current[schedule.trigger_id] = (schedule, self._versions)
        self._push(schedule, tick, self._versions)

    def remove(self, trigger_id: str) -> None:
        self._current.pop(trigger_id, None)

    def _push(self, schedule: Schedule, tick: float, version: int) -> None:
        try:
            found = first_pending(schedule, tick)
        except (ValueError, OverflowError) as exc:
            _uncomputable(schedule, exc)
            return
        if found is not None:
            heapq.heappush(
                self._heap, (found + schedule.jitter(found), schedule.trigger_id, version)
            )

    def pop_due(self, previous_tick: float, tick: float) -> list[tuple[Schedule, list[float]]]:
        """Every schedule with fires due at this tick, and those fires. An entry due in
        the past (after an outage) is handled by `due_fires`' catch-up policy."""
        due = []
        while self._heap and self._heap[0][0] <= tick:
            _, trigger_id, version = heapq.heappop(self._heap)
            current = self._current.get(trigger_id)
            if current is None or current[1] != version:
                continue  # removed or replaced since it was pushed
            schedule = current[0]
            try:
                fires = due_fires(schedule, previous_tick, tick)
            except (ValueError, OverflowError) as exc:
                _uncomputable(schedule, exc)
                continue
            if fires:
                due.append((schedule, fires))
            self._push(schedule, tick, version)
        return due


# -- the scheduler: ticks and backfills into fires -----------------------------------


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def schedule_fire(trigger: TriggerDocument, scheduled: float, now: float) -> Fire:
    return new_fire(
        trigger,
        CauseKind.SCHEDULE,
        iso(scheduled),
        Cause(type=CauseKind.SCHEDULE, scheduled_time=iso(scheduled)),
        {"scheduled_time": iso(scheduled), "actual_time": iso(now)},
    )


BACKFILL_MAX = 1000
"""The most fires one backfill makes (a longer range is refused with this number)."""


class NotBackfillable(ValueError):
    """A backfill that cannot be done as asked: the message says why and what to do."""


def backfill_fires(
    trigger: TriggerDocument,
    start: datetime,
    end: datetime,
    requested_by: str,
    overlap: OverlapPolicy | None = None,
) -> list[Fire]:
    """Every fire the trigger's schedule would have made for scheduled times in
    [start, end), oldest first, each with the execution id the scheduler gives that time
    (so what already ran, or a repeated backfill, starts nothing new) and its
    `scheduled_time`; `overlap` replaces the trigger's policy for these fires."""
    if trigger.schedule is None:
        raise NotBackfillable(
            f"trigger {trigger.name!r} is of type {trigger.type.value}; only schedule "
            "triggers can be backfilled (`triggers run` starts any trigger's agent now)"
        )
    ensure_enabled(trigger)
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        raise NotBackfillable(f"the range is empty: --to {end.isoformat()} is not after --from")
    times = scheduled_between(
        Schedule(trigger.trigger_id, trigger.schedule),
        start.timestamp(),
        end.timestamp(),
        BACKFILL_MAX + 1,
    )
    if len(times) > BACKFILL_MAX:
        raise NotBackfillable(
            f"the range holds more than {BACKFILL_MAX} scheduled times; one backfill makes "
            f"at most {BACKFILL_MAX}: split the range"
        )
    now = datetime.now(UTC).timestamp()
    fires = []
    for scheduled in times:
        fire = schedule_fire(trigger, scheduled, now)
        fire.cause = Cause(
            type=CauseKind.SCHEDULE,
            scheduled_time=iso(scheduled),
            backfill=True,
            requested_by=requested_by,
        )
        if overlap is not None:
            fire.overlap = overlap
        fires.append(fire)
    return fires


def previous_tick(last_tick: float | None, tick: float) -> float:
    """The tick handled before `tick`: the last one stored, or, on a first start ever
    (None), the second before it, so there is nothing to catch up on."""
    return tick - 1 if last_tick is None else last_tick


class Scheduler:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.index = DueIndex()
        self._synced_version = -1
        self._known: dict[str, TriggerDocument] = {}

    @property
    def in_step(self) -> bool:
        """Whether the due-index reflects the registry as it is now."""
        return self.registry.version == self._synced_version

    def sync(self, handled_until: float) -> None:
        """Bring the due-index in step with the registry. With 100k schedules the first
        sync takes seconds (a next time per schedule), so the worker runs it in a thread;
        it reads the registry only through `documents()`, a copy."""
        if self.in_step:
            return
        version = self.registry.version
        current = {}
        for document in self.registry.documents():
            if schedule_of(document) is not None:
                current[document.trigger_id] = document
        for trigger_id in self._known.keys() - current.keys():
            self.index.remove(trigger_id)
        for trigger_id, document in current.items():
            if self._known.get(trigger_id) is not document:
                assert document.schedule is not None
                self.index.put(Schedule(trigger_id, document.schedule), handled_until)
        self._known = current
        self._synced_version = version

    def fires_for_tick(
        self, previous: float, tick: float, now: float
    ) -> list[tuple[Fire, float]] | None:
        """The fires of a tick after the `previous` one handled (see `previous_tick`);
        None for a tick already handled (one from before a leader change), which leaves
        the last tick as it was."""
        if tick <= previous:
            return None
        return self.on_tick(previous, tick, now)

    def on_tick(self, previous_tick: float, tick: float, now: float) -> list[tuple[Fire, float]]:
        """Fires due at this tick, each with its (jittered) fire time."""
        self.sync(previous_tick)
        fires = []
        for schedule, scheduled_times in self.index.pop_due(previous_tick, tick):
            trigger = self._known[schedule.trigger_id]
            for scheduled in scheduled_times:
                fires.append(
                    (schedule_fire(trigger, scheduled, now), scheduled + schedule.jitter(scheduled))
                )
        return fires
