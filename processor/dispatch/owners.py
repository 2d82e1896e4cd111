"""Which trigger an execution belongs to, for results that do not say (DESIGN.md: a
result without `trigger_id` is joined with `trigger-executions`).

The dispatcher writes each execution's `pending` record in the same transaction as its
command, so by the time a runtime can report on it, the record is readable. A miss
therefore reads `trigger-executions` on from where the last read stopped, once, and
looks again; only results without `trigger_id` pay for it. The map holds one entry per
execution in the compacted topic (about 100 bytes each).
"""

from __future__ import annotations

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from processor.config import Settings
from processor.kafka.clients import consumer_config


class ExecutionOwners:
    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._owners: dict[str, str] = {}
        self._positions: dict[int, int] = {}
        self._consumer: Consumer | None = None

    def trigger_of(self, execution_id: str) -> str | None:
        if execution_id not in self._owners:
            self._catch_up()
        return self._owners.get(execution_id)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _catch_up(self, timeout_seconds: float = 10.0) -> None:
        consumer = self._consumer or Consumer(
            consumer_config(
                self.settings,
                f"{self.settings.app_id}-owners",
                **{"enable.partition.eof": True},
            )
        )
        self._consumer = consumer
        metadata = consumer.list_topics(self.topic, timeout=timeout_seconds).topics[self.topic]
        pending: set[int] = set()
        assignment = []
        for partition in sorted(metadata.partitions):
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=timeout_seconds
            )
            start = self._positions.get(partition, OFFSET_BEGINNING)
            if high > max(start, 0):
                pending.add(partition)
                assignment.append(TopicPartition(self.topic, partition, start))
        if not assignment:
            return
        consumer.assign(assignment)
        while pending:
            messages = consumer.consume(500, timeout=timeout_seconds)
            if not messages:
                break  # nothing more within the timeout: keep what was read
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition() or 0)
                    continue
                self._positions[message.partition() or 0] = (message.offset() or 0) + 1
                key, value = message.key(), message.value()
                if key is None or value is None:
                    continue
                trigger_id = orjson.loads(value).get("trigger_id")
                if isinstance(trigger_id, str):
                    self._owners[key.decode()] = trigger_id
        consumer.unassign()
