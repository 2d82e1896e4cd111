"""Reading partitions from their beginning to their current end (read_committed).

Used to restore state from compacted topics: the dispatcher's changelog, the trigger
definitions for the CLI and API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

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

T = TypeVar("T")


# Errors a young topic or a moving leader gives for a while (a topic just created has no
# leader for its first moments); anything else is not worth waiting for.
TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._WAIT_COORD,
    }
)


def is_transient(error: KafkaError) -> bool:
    return error.code() in TRANSIENT or bool(error.retriable())


def retry_transient(
    what: str,
    call: Callable[[], T],
    timeout_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, tried again on transient broker errors until `timeout_seconds` passed;
    then KafkaUnavailable saying what could not be read and what to check."""
    deadline = time.monotonic() + timeout_seconds
    delay = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or not is_transient(error):
                raise KafkaUnavailable(f"{what}: {exc}") from None
            if time.monotonic() + delay > deadline:
                raise KafkaUnavailable(
                    f"{what}: Kafka kept answering {error.name()} ({error.str()}) for "
                    f"{timeout_seconds:g} s; check that the broker is up and that the topics "
                    "exist (`triggers topics create`)"
                ) from None
        sleep(delay)
        delay = min(delay * 2, 1.0)


def partitions_of(reader: Consumer, topic: str, timeout_seconds: float) -> list[int]:
    """The topic's partitions, once every one of them has a leader."""

    def fetch() -> list[int]:
        metadata = reader.list_topics(topic, timeout=timeout_seconds).topics.get(topic)
        if metadata is None:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        if any(p.leader < 0 for p in metadata.partitions.values()):
            raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))
        return sorted(metadata.partitions)

    try:
        # A topic that does not exist is not worth 30 s; one just created gets a few.
        return retry_transient(f"reading {topic}", fetch, min(timeout_seconds, 5.0))
    except KafkaUnavailable as exc:
        if "UNKNOWN_TOPIC" in str(exc):
            raise KafkaUnavailable(
                f"topic {topic} does not exist; run `triggers topics create`"
            ) from None
        raise


def topic_partitions(settings: Settings, topic: str, timeout_seconds: float = 30.0) -> list[int]:
    """`partitions_of` with a reader of its own, for a caller that has none."""
    reader = Consumer(consumer_config(settings, f"{settings.app_id}-reader"))
    try:
        return partitions_of(reader, topic, timeout_seconds)
    finally:
        reader.close()


READER_FETCH_WAIT_MS = 20
"""How long a fetch at a partition's end waits for data before the broker answers, in
`read_to_end`."""


def take(consumer: Consumer, timeout: float, limit: int) -> list[Message]:
    """Wait up to `timeout` for the first message only, then take what is already
    fetched, up to `limit` in all. `consume(n, timeout)` waits until n arrive or the
    timeout passes: a reader near its end paid the whole timeout (a second, for every
    restore and CLI read) for the last few records and the end-of-partition events."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)]


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
    record yielded, so a later read can start where this one stopped. Transient broker
    errors (a young topic without a leader yet, a leader moving) are retried for up to
    `timeout_seconds`; then KafkaUnavailable says what failed.
    """
    reader = Consumer(
        consumer_config(
            settings,
            f"{settings.app_id}-reader",
            # A fetch at a partition's end waits this long for data before the broker
            # answers, and only that answer tells the reader it reached the end (500 ms
            # by default: half a second on every read).
            **{"enable.partition.eof": True, "fetch.wait.max.ms": READER_FETCH_WAIT_MS},
        )
    )
    try:
        if partitions is None:
            partitions = partitions_of(reader, topic, timeout_seconds)
        pending = set()
        assignment = []
        for partition in partitions:
            low, high = retry_transient(
                f"reading {topic} [{partition}]",
                partial(
                    reader.get_watermark_offsets,
                    TopicPartition(topic, partition),
                    timeout=timeout_seconds,
                ),
                timeout_seconds,
            )
            first = max(low, start(partition, low, high)) if start is not None else low
            if high > first:
                pending.add(partition)
                offset = first if start is not None else OFFSET_BEGINNING
                assignment.append(TopicPartition(topic, partition, offset))
        reader.assign(assignment)
        while pending:
            for message in take(reader, 1.0, 500):
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
