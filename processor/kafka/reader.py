"""Reading partitions from their beginning to their current end (read_committed).

Used to restore state from compacted topics: the dispatcher's changelog, the trigger
definitions for the CLI and API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.kafka.clients import consumer_config


def read_to_end(
    settings: Settings,
    topic: str,
    partitions: list[int] | None = None,
    timeout_seconds: float = 30.0,
    start: Callable[[int, int, int], int] | None = None,
    positions: dict[int, int] | None = None,
) -> Iterator[Message]:
    """Yield every committed record of the partitions (all when None), then stop.

    `start(partition, low, high)` picks each partition's first offset (default: its
    beginning). If `positions` is given, it is updated with the offset after each
    record yielded, so a later read can start where this one stopped.
    """
    reader = Consumer(
        consumer_config(settings, f"{settings.app_id}-reader", **{"enable.partition.eof": True})
    )
    try:
        if partitions is None:
            metadata = reader.list_topics(topic, timeout=timeout_seconds).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise KafkaUnavailable(
                    f"topic {topic} does not exist; run `triggers topics create`"
                )
            partitions = sorted(metadata.partitions)
        pending = set()
        assignment = []
        for partition in partitions:
            low, high = reader.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_seconds
            )
            first = max(low, start(partition, low, high)) if start is not None else low
            if high > first:
                pending.add(partition)
                offset = first if start is not None else OFFSET_BEGINNING
                assignment.append(TopicPartition(topic, partition, offset))
        reader.assign(assignment)
        while pending:
            for message in reader.consume(500, timeout=1.0):
                error = message.error()
                if error is None:
                    if positions is not None:
                        positions[message.partition() or 0] = (message.offset() or 0) + 1
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
    finally:
        reader.close()


def read_tail(settings: Settings, topic: str, per_partition: int) -> list[Message]:
    """The last `per_partition` committed records of each partition (fewer if aborted
    transactions hold some of those offsets), oldest first within a partition; none if
    the topic does not exist."""
    try:
        return list(read_to_end(settings, topic, start=lambda _, low, high: high - per_partition))
    except KafkaUnavailable:
        return []


def wait_until_no_open_transactions(
    settings: Settings, topic: str, partitions: list[int], timeout_seconds: float
) -> bool:
    """Wait until no transaction is open on these partitions: the read_committed end (the
    last stable offset) has caught up with the high watermark. False on timeout.

    A process killed mid-transaction leaves its transaction open until the broker aborts
    it (`transaction.timeout.ms`). Until then a read_committed reader stops at its first
    record and misses anything committed after it, e.g. by the partition's next owner.
    """
    committed = Consumer(consumer_config(settings, f"{settings.app_id}-reader"))
    everything = Consumer(
        consumer_config(
            settings, f"{settings.app_id}-reader", **{"isolation.level": "read_uncommitted"}
        )
    )
    deadline = time.monotonic() + timeout_seconds
    try:
        while True:
            try:
                open_ = [
                    p
                    for p in partitions
                    if committed.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    < everything.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                ]
            except KafkaException:  # e.g. a broker restarting: not known to be closed yet
                open_ = partitions
            if not open_ or time.monotonic() > deadline:
                return not open_
            time.sleep(0.5)
    finally:
        committed.close()
        everything.close()
