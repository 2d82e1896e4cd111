"""The worker's low-volume flows, each run without Faust or a broker: what they send."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pytest

from processor.definitions.loader import parse_document
from processor.definitions.registry import Registry
from processor.errors import BadRecord
from processor.matching.schedules import Scheduler
from processor.messages import CronTick, Fire, WebhookDelivery
from processor.metrics import WEBHOOK_MAPPING_MISSES
from processor.serde import to_json
from processor.worker import flows


@dataclass
class Record:
    value: bytes
    topic: str = "webhooks"
    partition: int = 2
    offset: int = 7
    key: bytes | None = b"k"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Sent:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.fires: list[Fire] = []

    async def record(self, key: bytes | None, value: bytes) -> None:
        self.records.append((key, value))

    async def fire(self, fire: Fire) -> None:
        self.fires.append(fire)


def registry_of(*documents: dict) -> Registry:
    registry = Registry()
    for document in documents:
        registry.put(parse_document(document, "t").resolved("default"))
    return registry


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (BadRecord("not a delivery: no trigger_id"), "not a delivery: no trigger_id"),
        (ValueError("bad tick"), "bad tick"),
        (RuntimeError("boom"), "internal error: RuntimeError('boom')"),
    ],
)
async def test_a_record_a_flow_cannot_use_is_a_dead_letter_with_the_reason(
    error: Exception, reason: str
) -> None:
    sent = Sent()

    async def handle(message: Record) -> None:
        raise error

    await flows.guarded(Record(b"{}"), handle, sent.record, "webhook-mapper")
    [(key, value)] = sent.records
    letter = orjson.loads(value)
    assert key == b"k" and letter["error"] == reason
    assert letter["component"] == "webhook-mapper"
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("webhooks", 2, 7)


async def test_a_record_a_flow_handles_sends_no_letter() -> None:
    sent, handled = Sent(), []

    async def handle(message: Record) -> None:
        handled.append(message.value)

    await flows.guarded(Record(b"ok"), handle, sent.record, "scheduler")
    assert handled == [b"ok"] and sent.records == []


HOOK = {
    "id": "hook",
    "name": "Hook",
    "type": "webhook",
    "webhook": {},
    "agent": {"id": "a", "input_mapping": {"text": "$.body.text", "gone": "$.body.nope"}},
}


def delivery(trigger_id: str) -> bytes:
    return to_json(
        WebhookDelivery(
            delivery_id="d-1",
            trigger_id=trigger_id,
            method="POST",
            path="/webhooks/hook",
            body={"text": "hi"},
            received_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )


async def test_a_delivery_becomes_its_triggers_fire_and_a_missing_path_is_counted() -> None:
    registry, sent = registry_of(HOOK), Sent()
    [trigger] = registry.documents()
    misses = WEBHOOK_MAPPING_MISSES.labels(trigger.trigger_id)
    before = misses._value.get()
    await flows.map_webhook(registry, delivery(trigger.trigger_id), sent.fire)
    [fire] = sent.fires
    assert fire.trigger_id == trigger.trigger_id and fire.input == {"text": "hi", "gone": None}
    assert misses._value.get() == before + 1
    await flows.map_webhook(registry, delivery("no-such-trigger"), sent.fire)
    assert len(sent.fires) == 1  # a trigger gone: no fire, no error


def test_the_leader_ticks_just_after_each_second_for_that_second() -> None:
    assert flows.tick_delay(100.25) == pytest.approx(0.755)
    assert flows.tick_delay(100.0) == pytest.approx(1.005)
    assert flows.tick_of(100.99).tick == datetime.fromtimestamp(100, UTC)


def tick(at: datetime) -> bytes:
    return to_json(CronTick(tick=at))


async def test_a_tick_fires_what_is_due_once_and_remembers_it() -> None:
    registry = registry_of(
        {
            "id": "minutely",
            "name": "Minutely",
            "type": "schedule",
            "schedule": {"cron": "* * * * *"},
            "agent": {"id": "a"},
        }
    )
    scheduler, last, sent = Scheduler(registry), {}, Sent()
    minute = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    await flows.schedule_tick(scheduler, last, tick(minute), sent.fire)
    [fire] = sent.fires
    assert fire.cause.scheduled_time == minute.isoformat()
    assert last[flows.LAST_TICK] == minute.timestamp()
    # The same tick again (a leader change resends it) and an older one change nothing.
    await flows.schedule_tick(scheduler, last, tick(minute), sent.fire)
    await flows.schedule_tick(scheduler, last, tick(datetime(2026, 1, 1, tzinfo=UTC)), sent.fire)
    assert len(sent.fires) == 1 and last[flows.LAST_TICK] == minute.timestamp()


async def test_a_fire_over_its_bound_is_a_dead_letter_holding_it_and_the_next_one_is_sent() -> None:
    registry, records, letters = registry_of(HOOK), Sent(), Sent()
    [trigger] = registry.documents()
    send_fire = flows.counted(records.record, letters.record, "trigger-fires")
    fire = flows.map_delivery(registry, delivery(trigger.trigger_id))
    assert fire is not None
    large = fire[0].model_copy(update={"input": {"text": "x" * 1_000_000}})
    await send_fire(large)
    await send_fire(fire[0])
    assert [orjson.loads(value)["input"]["text"] for _, value in records.records] == ["hi"]
    [(_, letter)] = letters.records
    kept = orjson.loads(letter)
    assert (
        kept["topic"] == "trigger-fires" and "over the 1,000,000 a fire may take" in kept["error"]
    )
