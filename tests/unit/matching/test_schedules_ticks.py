"""The scheduler's due-index follows the registry, even one that changes mid-sync (the
worker syncs in a thread while definitions keep arriving)."""

from __future__ import annotations

from typing import Any

from processor.definitions.loader import parse_document
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.matching.schedules import Scheduler, previous_tick

START = 1_800_000_000.0  # a whole minute


def every_second(name: str) -> TriggerDocument:
    document = {
        "trigger": {
            "name": name,
            "type": "schedule",
            "agent": {"id": "a"},
            "schedule": {"cron": "* * * * * *"},
        }
    }
    return parse_document(document, name).resolved("default")


def fired(scheduler: Scheduler, tick: float) -> list[str]:
    return sorted(fire.trigger_id for fire, _ in scheduler.on_tick(tick - 1, tick, tick))


def test_sync_brings_the_index_in_step_and_the_next_tick_fires() -> None:
    registry = Registry()
    registry.put(every_second("one"))
    scheduler = Scheduler(registry)
    assert not scheduler.in_step
    scheduler.sync(START)
    assert scheduler.in_step
    assert fired(scheduler, START + 1) == [registry.documents()[0].trigger_id]


def test_a_change_made_during_a_sync_is_picked_up_by_the_next_one() -> None:
    registry = Registry()
    registry.put(every_second("one"))
    scheduler = Scheduler(registry)
    late = every_second("two")
    documents = registry.documents

    def documents_then_a_change() -> list[Any]:
        copy = documents()
        registry.put(late)  # applied by the event loop while the thread syncs
        return copy

    registry.documents = documents_then_a_change  # type: ignore[method-assign]
    scheduler.sync(START)
    registry.documents = documents  # type: ignore[method-assign]

    assert not scheduler.in_step
    assert len(fired(scheduler, START + 1)) == 2
    assert scheduler.in_step


def test_a_backfill_fires_each_scheduled_time_in_the_range_with_the_schedulers_ids() -> None:
    from datetime import UTC, datetime

    from processor.definitions.loader import parse_document
    from processor.definitions.model import OverlapPolicy
    from processor.matching.schedules import backfill_fires, schedule_fire

    hourly = parse_document(
        {
            "name": "Hourly",
            "type": "schedule",
            "schedule": {"cron": "0 * * * *"},
            "agent": {"id": "a"},
        },
        "t",
    ).resolved("default")
    start, end = datetime(2026, 11, 30, 9, tzinfo=UTC), datetime(2026, 11, 30, 12, tzinfo=UTC)
    fires = backfill_fires(hourly, start, end, "cli:ana", OverlapPolicy.ALLOW_ALL)
    assert [f.input["scheduled_time"] for f in fires] == [
        "2026-11-30T09:00:00+00:00",
        "2026-11-30T10:00:00+00:00",
        "2026-11-30T11:00:00+00:00",
    ]  # [from, to): 12:00 is left out
    live = schedule_fire(hourly, datetime(2026, 11, 30, 10, tzinfo=UTC).timestamp(), 0)
    assert fires[1].execution_id == live.execution_id  # what ran already is not run again
    assert all(f.overlap is OverlapPolicy.ALLOW_ALL for f in fires)
    extra = fires[0].cause.model_extra or {}
    assert extra["backfill"] is True and extra["requested_by"] == "cli:ana"


def test_a_backfill_refuses_what_it_cannot_do_and_says_what_to_do() -> None:
    from datetime import UTC, datetime

    import pytest

    from processor.definitions.loader import parse_document
    from processor.errors import TriggerDisabled
    from processor.matching.schedules import BACKFILL_MAX, NotBackfillable, backfill_fires

    def doc(**extra: object) -> object:
        return parse_document(
            {
                "name": "M",
                "type": "schedule",
                "schedule": {"cron": "* * * * *"},
                "agent": {"id": "a"},
                **extra,
            },
            "t",
        ).resolved("default")

    day = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    with pytest.raises(NotBackfillable, match=f"at most {BACKFILL_MAX}: split the range"):
        backfill_fires(doc(), *day, "x")  # type: ignore[arg-type]
    with pytest.raises(NotBackfillable, match="the range is empty"):
        backfill_fires(doc(), day[1], day[0], "x")  # type: ignore[arg-type]
    with pytest.raises(TriggerDisabled, match="triggers enable"):
        backfill_fires(doc(enabled=False), *day, "x")  # type: ignore[arg-type]
    event = parse_document(
        {"name": "E", "type": "event", "event": {"pattern": "a.*"}, "agent": {"id": "a"}}, "t"
    ).resolved("default")
    with pytest.raises(NotBackfillable, match="is of type event; only schedule triggers"):
        backfill_fires(event, *day, "x")


def test_a_tick_already_handled_makes_nothing_and_a_first_tick_catches_nothing_up() -> None:
    registry = Registry()
    registry.put(every_second("one"))
    scheduler = Scheduler(registry)
    scheduler.sync(START)
    first = scheduler.fires_for_tick(previous_tick(None, START + 1), START + 1, START + 1)
    assert first is not None and len(first) == 1  # only the tick's own second
    assert scheduler.fires_for_tick(START + 1, START + 1, START + 2) is None  # a replay
    assert scheduler.fires_for_tick(START + 5, START + 3, START + 6) is None  # older leader's
    later = scheduler.fires_for_tick(START + 1, START + 3, START + 3)
    assert later is not None and len(later) == 2  # seconds 2 and 3
