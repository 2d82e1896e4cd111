"""The scheduler's reaction to one tick, given the registry (no Kafka here).

It keeps the due-index in step with the registry (re-synced only when the registry
changed) and turns due scheduled times into fires whose execution ids come from the
trigger and the scheduled time: a second scheduler, or a replayed tick, makes the
same ids, which the dispatcher drops.
"""

from __future__ import annotations

from datetime import UTC, datetime

from processor.definitions.model import OverlapPolicy, TriggerDocument
from processor.definitions.registry import Registry
from processor.matching.fires import ensure_enabled, new_fire
from processor.matching.schedules import DueIndex, Schedule, schedule_of, scheduled_between
from processor.messages import Cause, CauseKind, Fire, as_utc


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
            f"trigger {trigger.name!r} is a {trigger.type.value} trigger; only schedule "
            "triggers can be backfilled"
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
