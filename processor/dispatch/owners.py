"""Which trigger an execution belongs to, for results that do not say (docs/architecture.md: a
result without `trigger_id` is joined with `trigger-executions`).

The dispatcher writes each execution's `pending` record in the same transaction as its
command, so by the time a runtime can report on it, the record is readable. A miss
therefore reads `trigger-executions` on from where the last read stopped, once, and
looks again; only results without `trigger_id` pay for it. The map holds one entry per
execution in the compacted topic (about 100 bytes each).
"""

from __future__ import annotations

import orjson

from processor.config import Settings
from processor.kafka.reader import read_to_end


class ExecutionOwners:
    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._owners: dict[str, str] = {}
        self._positions: dict[int, int] = {}
        """Per partition, the offset after the last record read."""

    def trigger_of(self, execution_id: str) -> str | None:
        if execution_id not in self._owners:
            self._catch_up()
        return self._owners.get(execution_id)

    def _catch_up(self) -> None:
        for message in read_to_end(
            self.settings,
            self.topic,
            start=lambda partition, low, _: self._positions.get(partition, low),
            positions=self._positions,
        ):
            key, value = message.key(), message.value()
            if key is None or value is None:
                continue
            trigger_id = orjson.loads(value).get("trigger_id")
            if isinstance(trigger_id, str):
                self._owners[key.decode()] = trigger_id
