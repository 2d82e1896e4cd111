"""The worker's low-volume flows, one function each: what a Faust agent or task of
app.py runs for a record or a second. They take what they send through as callables, so
each is tested without a broker (tests/unit/worker/test_flows.py).

    webhooks    ─► map_webhook     ─► trigger-fires     a delivery becomes its trigger's fire
    (the clock) ─► tick_delay, tick_of ─► cron-ticks    the leader's tick, once a second
    cron-ticks  ─► schedule_tick   ─► trigger-fires     the schedules due at that second
    any of them ─► guarded         ─► trigger-dead-letters   a record a flow cannot use
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from processor.deadletters import dead_letter, oversized_fire
from processor.definitions.registry import Registry
from processor.errors import BadRecord
from processor.matching.decode import header_pairs
from processor.matching.schedules import Scheduler, previous_tick
from processor.messages import FIRE_MAX_BYTES, CronTick, Fire
from processor.metrics import (
    FIRES,
    SCHEDULE_LATENESS,
    SCHEDULER_TICK,
    WEBHOOK_MAPPING_MISSES,
    trigger_label,
)
from processor.serde import from_json, to_json
from processor.webhooks.mapping import map_delivery

log = logging.getLogger(__name__)

Send = Callable[[bytes | None, bytes], Awaitable[Any]]
"""Sends one record (key, value) to the topic a flow writes."""
SendFire = Callable[[Fire], Awaitable[Any]]

TICK_SECONDS = 1.0
TICK_AFTER_SECONDS = 0.005
"""How long after a second begins the leader ticks for it."""
LAST_TICK = "last_tick"
"""The scheduler table's one key: the tick handled last (epoch seconds)."""


async def guarded(
    message: Any, handle: Callable[[Any], Awaitable[None]], send_letter: Send, component: str
) -> None:
    """Run `handle` on a record: one it cannot use (BadRecord, a validation error) becomes
    a dead letter with the reason, and a bug is logged and dead-lettered too, so the
    stream never stops."""
    try:
        await handle(message)
    except (BadRecord, ValidationError, ValueError) as exc:
        await _dead_letter(send_letter, message, str(exc), component)
    except Exception as exc:
        log.exception(
            "%s failed on %s[%d]@%d", component, message.topic, message.partition, message.offset
        )
        await _dead_letter(send_letter, message, f"internal error: {exc!r}", component)


async def _dead_letter(send_letter: Send, message: Any, reason: str, component: str) -> None:
    log.warning(
        "dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
    )
    key, value = dead_letter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        error=reason,
        component=component,
        headers=header_pairs(message.headers),
    )
    await send_letter(key, value)


async def map_webhook(registry: Registry, value: bytes, send_fire: SendFire) -> None:
    """A webhook delivery: its trigger's fire (none for a trigger gone or disabled), with
    the mapping paths it did not find counted."""
    mapped = map_delivery(registry, value)
    if mapped is None:
        return
    fire, missing = mapped
    if missing:
        WEBHOOK_MAPPING_MISSES.labels(trigger_label(fire.trigger_id)).inc(len(missing))
    await send_fire(fire)


def tick_delay(now: float) -> float:
    """Seconds from `now` until the leader's next tick: just after the next second begins.
    (A Faust timer ticks every second too, but at whatever fraction of a second the
    worker started: schedules fired up to a second late, 0.85 s at p50 in the scheduler
    bench.)"""
    return TICK_SECONDS - now % TICK_SECONDS + TICK_AFTER_SECONDS


def tick_of(now: float) -> CronTick:
    """The tick for the second `now` is in."""
    return CronTick(tick=datetime.fromtimestamp(math.floor(now), UTC))


async def schedule_tick(
    scheduler: Scheduler, last: MutableMapping[str, Any], value: bytes, send_fire: SendFire
) -> None:
    """A tick: the fires of the schedules due since the tick handled last (`last`, the
    scheduler's table), then that tick becomes the last. A tick already handled (from
    before a leader change) changes nothing."""
    tick_at = from_json(CronTick, value).tick.timestamp()
    previous = previous_tick(last.get(LAST_TICK), tick_at)
    started = time.perf_counter()
    if not scheduler.in_step:
        # Off the event loop: with 100k schedules the first sync blocked every agent of
        # the worker for ~13 s after Ready.
        await asyncio.to_thread(scheduler.sync, previous)
    now = time.time()
    due = scheduler.fires_for_tick(previous, tick_at, now)
    if due is None:
        return
    for fire, fire_time in due:
        await send_fire(fire)
        SCHEDULE_LATENESS.observe(max(0.0, now - fire_time))
    last[LAST_TICK] = tick_at
    SCHEDULER_TICK.observe(time.perf_counter() - started)


def counted(send: Send, send_letter: Send, fires_topic: str) -> SendFire:
    """A fire's sender over a record sender: keyed by trigger id, counted by cause. A fire
    over FIRE_MAX_BYTES is a dead letter holding it (the broker refused such a fire after
    the send, and Faust only logged it: the fire was lost, the webhook's caller holding an
    execution id that never came to be)."""

    async def send_fire(fire: Fire) -> None:
        value = to_json(fire)
        if len(value) > FIRE_MAX_BYTES:
            component = f"{fire.cause.type.value}-fires"
            reason, key, letter = oversized_fire(fires_topic, fire.trigger_id, value, component)
            log.warning("%s", reason)
            await send_letter(key, letter)
            return
        await send(fire.trigger_id.encode(), value)
        FIRES.labels(fire.cause.type.value).inc()

    return send_fire
