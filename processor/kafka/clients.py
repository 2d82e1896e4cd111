"""confluent-kafka client configurations shared by every component.

Keyed records must land on the same partition whoever writes them (Faust/aiokafka and
the Java clients hash keys with murmur2), so librdkafka is told to do the same.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer

from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.kafka.security import librdkafka_security

PARTITIONER = "murmur2_random"
PRODUCER_MAX_BYTES = 6 * 1024 * 1024
LIBRDKAFKA_LOG = logging.getLogger("processor.kafka.librdkafka")
"""librdkafka's own log lines (connection failures and the like), as Python logging, so
components show them in their log format and the CLI keeps them off the terminal."""


def common_config(settings: Settings) -> dict[str, Any]:
    """What every client of ours, producer, consumer or admin, is configured with."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": LIBRDKAFKA_LOG,
        **librdkafka_security(settings),
    }


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        **common_config(settings),
        "partitioner": PARTITIONER,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # A fire and the records it becomes (command, execution, dispatch state) are
        # ~2 KB of JSON each that repeat one another; lz4 takes a third of the broker's
        # CPU off the event path (docs/benchmarks.md) for little of ours.
        "compression.type": settings.kafka_compression.value,
        # Dead letters keep rejected records whole (trigger-dead-letters allows 5 MiB);
        # every other topic keeps the broker's limit, checked before we write.
        "message.max.bytes": PRODUCER_MAX_BYTES,
        **extra,
    }


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **common_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "range",
        # A killed process's partitions move to the others after this long.
        "session.timeout.ms": 15_000,
        "heartbeat.interval.ms": 3_000,
        # Once a loop has more than `queued.min.messages` fetched and not yet taken,
        # librdkafka stops fetching and waits this long (1 s by default) before it looks
        # again: a loop that takes 10,000 records a turn emptied its queue and then sat
        # idle for most of a second, two or three times per 200,000-event backlog.
        "fetch.queue.backoff.ms": 10,
        **extra,
    }


def new_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(producer_config(settings, **extra))


def partition_of(key: bytes, partitions: int) -> int:
    """The partition a keyed record goes to: murmur2, as librdkafka's `murmur2_random`
    (our producers), Faust/aiokafka and the Java clients all place it."""
    from aiokafka.partitioner import murmur2  # imports aiokafka (0.26 s): not in every CLI run

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def new_consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **extra))


def produce_and_wait(
    settings: Settings,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    timeout_seconds: float = 15.0,
) -> None:
    """Write (key, value) records and return once the broker acknowledged every one;
    KafkaUnavailable otherwise (for one-shot writers: the CLI, scripts)."""
    producer = new_producer(settings)
    errors: list[str] = []
    for key, value in records:
        producer.produce(
            topic,
            key=key,
            value=value,
            on_delivery=lambda error, _msg: errors.append(error.str()) if error else None,
        )
    if producer.flush(timeout_seconds) or errors:
        raise KafkaUnavailable(
            f"Kafka did not acknowledge the write to {topic}: {'; '.join(errors) or 'timed out'}"
        )
