"""`trigger-definitions` as a Faust GlobalTable that keeps a Registry current.

The table's changelog *is* the compacted `trigger-definitions` topic: every worker reads
all of it at start-up (before any agent runs) and then follows it, so an edit reaches the
matchers as soon as it is read. What stock Faust gets wrong for an external changelog,
fixed here:
- its partition assignor looks the changelog up by `<app>-<table>-changelog` whatever
  topic was given, and fails the whole assignment (silently) when it is missing;
- nothing tells the application that a record was applied; we index it as it is;
- records are applied in batches of 1000 by default, so a lone edit would sit unapplied;
- a global table's partition is both active and standby, and Faust reads it twice: once
  to recover, then again from the start as a standby, dropping every record as already
  seen. With 100k triggers that second pass held the consumer for about a minute after
  Ready and events waited behind it (p50 latency 1-4 s); the standby now starts where
  recovery ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, cast

import faust
from confluent_kafka import Consumer, TopicPartition
from faust.tables import GlobalTable, TableManager

from processor.config import Settings
from processor.definitions.registry import Registry
from processor.kafka.clients import consumer_config
from processor.metrics import REGISTRY_SIZE

log = logging.getLogger(__name__)


class DefinitionsTable(GlobalTable):
    registry: Registry
    applied_offset: int = -1
    """Offset of the last `trigger-definitions` record applied to the registry."""

    def _changelog_topic_name(self) -> str:
        name: str = self.changelog_topic.get_topic_name()
        return name

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events)
        for event in events:
            self.registry.apply(event.key, event.value)
            self.applied_offset = max(self.applied_offset, event.message.offset)
            log.info(
                "definition %r %s",
                event.key,
                "deleted" if event.value is None else "applied",
            )
        if events:
            self._standby_from(events[-1].message.tp, self.applied_offset)
        REGISTRY_SIZE.set(len(self.registry))

    def _standby_from(self, tp: Any, offset: int) -> None:
        """Let the standby reading of `tp` start after `offset`, already applied.

        Faust takes a standby's start offset when partitions are assigned (-1 here, as
        the memory store keeps none), recovers the same partition as active, and then
        seeks the standby back to it."""
        manager = cast(TableManager, self.app.tables)
        standby_offsets = manager.recovery.standby_offsets
        if tp in standby_offsets:
            standby_offsets[tp] = max(standby_offsets[tp] or -1, offset)


def definitions_table(app: faust.App, topic_name: str, registry: Registry) -> DefinitionsTable:
    source = app.topic(
        topic_name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=1,
    )
    table = DefinitionsTable(
        app,
        name="trigger-definitions",
        default=None,
        changelog_topic=source,
        partitions=1,
        is_global=True,
        synchronize_all_active_partitions=True,
        # Apply each change as it is read: the default buffers 1000 records, which for
        # a topic that changes rarely means an edit could wait indefinitely.
        recovery_buffer_size=1,
        standby_buffer_size=1,
        beacon=app.tables.beacon,
    )
    table.registry = registry
    app.tables.add(table)
    return table


def end_offset(settings: Settings, topic: str) -> int:
    """The offset the next record of the (single-partition) topic will get."""
    consumer = Consumer(consumer_config(settings, f"{settings.app_id}-watermarks"))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        return int(high)
    finally:
        consumer.close()


async def caught_up(table: DefinitionsTable, settings: Settings) -> None:
    """Return once every definition written before this call is in the registry.

    Faust may hand an agent its first records before a global table has applied what
    its changelog already held; a matcher running then would miss triggers that exist.
    """
    topic = table.changelog_topic.get_topic_name()
    target = await asyncio.to_thread(end_offset, settings, topic) - 1
    waited = 0.0
    while table.applied_offset < target:
        await asyncio.sleep(0.05)
        waited += 0.05
        if waited % 10 < 0.05:
            log.warning(
                "waiting for trigger definitions: applied %d of %d", table.applied_offset, target
            )
    table.registry.loaded()
    log.info("trigger definitions caught up (offset %d, %d triggers)", target, len(table.registry))
