"""The scheduler's due-index follows the registry, even one that changes mid-sync (the
worker syncs in a thread while definitions keep arriving)."""

from __future__ import annotations

from typing import Any

from processor.definitions.loader import parse_document
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.matching.scheduler import Scheduler

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
