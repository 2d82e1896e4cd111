"""Reading and writing `trigger-definitions` (CLI and API).

The topic is compacted and keyed by trigger id, so its current content is "the last
value per key": reading it to the end gives every live trigger. A write returns only
once the broker acknowledged it (acks=all).
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer

from processor import topics
from processor.config import Settings
from processor.definitions.model import TriggerDocument, document_json
from processor.errors import KafkaUnavailable, RecordTooLarge
from processor.kafka.admin import wait_for_broker
from processor.kafka.clients import new_producer
from processor.kafka.reader import read_to_end


def read_all(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every live trigger document, by id, as stored."""
    wait_for_broker(settings)
    documents: dict[str, dict[str, Any]] = {}
    name = topics.topic_name(topics.TRIGGER_DEFINITIONS, settings)
    for message in read_to_end(settings, name):
        key = (message.key() or b"").decode()
        value = message.value()
        if value is None:
            documents.pop(key, None)
        else:
            documents[key] = orjson.loads(value)
    return documents


class DefinitionWriter:
    """Writes documents (None deletes); one producer for the life of the writer."""

    def __init__(self, settings: Settings) -> None:
        self.topic = topics.topic_name(topics.TRIGGER_DEFINITIONS, settings)
        self.producer: Producer = new_producer(settings, **{"message.timeout.ms": 10_000})

    def write(self, changes: dict[str, TriggerDocument | None]) -> dict[str, int]:
        """Write and wait until the broker has every change; KafkaUnavailable otherwise.
        Returns the offset each change got."""
        failures: list[str] = []
        offsets: dict[str, int] = {}

        too_large: list[str] = []

        def delivered(error: KafkaError | None, message: Any) -> None:
            if error is None:
                offsets[message.key().decode()] = message.offset()
            elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                too_large.append(
                    f"{message.key().decode()}: the definition is {len(message.value()):,} "
                    f"bytes, more than {self.topic} takes (its max.message.bytes, the "
                    "broker's 1 MiB by default); make its agent.input smaller"
                )
            else:
                failures.append(f"{message.key().decode()}: {error.str()}")

        for trigger_id, document in changes.items():
            value = orjson.dumps(document_json(document)) if document is not None else None
            self.producer.produce(
                self.topic, key=trigger_id.encode(), value=value, on_delivery=delivered
            )
        remaining = self.producer.flush(15)
        if too_large and not remaining and not failures:
            raise RecordTooLarge("; ".join(too_large))
        failures += too_large
        if remaining or failures:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge {remaining + len(failures)} write(s)"
                + (f": {'; '.join(failures)}" if failures else "")
            )
        return offsets


def write(settings: Settings, changes: dict[str, TriggerDocument | None]) -> None:
    DefinitionWriter(settings).write(changes)
