"""`trigger-definitions` as a Faust GlobalTable that keeps a Registry current.

The table's changelog *is* the compacted `trigger-definitions` topic: every worker reads
all of it at start-up (before any agent runs) and then follows it, so an edit reaches the
matchers as soon as it is read. Two things stock Faust gets wrong for an external
changelog, fixed here:
- its partition assignor looks the changelog up by `<app>-<table>-changelog` whatever
  topic was given, and fails the whole assignment (silently) when it is missing;
- nothing tells the application that a record was applied; we index it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.tables import GlobalTable

from processor.definitions.registry import Registry
from processor.metrics import REGISTRY_SIZE


class DefinitionsTable(GlobalTable):
    registry: Registry

    def _changelog_topic_name(self) -> str:
        name: str = self.changelog_topic.get_topic_name()
        return name

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events)
        for event in events:
            self.registry.apply(event.key, event.value)
        REGISTRY_SIZE.set(len(self.registry))


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
        beacon=app.tables.beacon,
    )
    table.registry = registry
    app.tables.add(table)
    return table
