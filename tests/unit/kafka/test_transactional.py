from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer, TopicPartition

from processor.config import Settings
from processor.kafka.clients import producer_config
from processor.kafka.transactional import (
    TRANSACTION_TIMEOUT_MS,
    TransactionalLoop,
    Turn,
    transactional_config,
)


def test_a_loops_producer_retries_a_busy_coordinator_within_milliseconds() -> None:
    config = producer_config(Settings(), **transactional_config("g-host-1"))
    assert config["transactional.id"] == "g-host-1"
    assert config["transaction.timeout.ms"] == TRANSACTION_TIMEOUT_MS
    assert config["retry.backoff.ms"] <= 20  # librdkafka's 100 ms was a floor under latency
    assert config["enable.idempotence"] is True


def test_a_loops_producer_sends_a_turn_while_its_offsets_join_the_transaction() -> None:
    """A turn's records are produced as its transaction begins; a linger the length of a
    turn would hold them until the commit's flush, after the offsets' round trips."""
    config = producer_config(Settings(), **transactional_config("g-host-1"))
    assert config["linger.ms"] <= 5
    assert producer_config(Settings())["linger.ms"] == 5  # the gateway's and the CLI's


def test_a_turn_keeps_its_records_in_order_and_sends_them_as_given() -> None:
    """A turn is handled while the last one commits; its records reach the producer only
    once its own transaction has begun, in the order the handler produced them. Handed
    over positionally: a real producer's delivery reports say each value, key and
    partition arrived where it was meant to (a fake could not tell a swapped pair)."""
    reports: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        assert error is not None and error.code() == KafkaError._PURGE_QUEUE
        reports.append((message.topic() or "", message.key(), message.value(), message.partition()))

    turn = Turn()
    turn.produce("fires", key=b"t1", value=b"1", on_delivery=delivered)
    turn.produce("state", key=b"k", value=None, partition=3, on_delivery=delivered)
    turn.produce("fires", key=b"t2", value=b"2")
    assert len(turn) == 3
    assert turn.records == [
        ("fires", {"key": b"t1", "value": b"1", "on_delivery": delivered}),
        ("state", {"key": b"k", "value": None, "partition": 3, "on_delivery": delivered}),
        ("fires", {"key": b"t2", "value": b"2"}),
    ]
    # The producer's own callback reports the record that was given none. (A purge
    # reports by partition queue, not in the order produced: the order is the turn's.)
    producer = Producer(
        {"bootstrap.servers": "127.0.0.1:1", "on_delivery": delivered, "log_level": 0}
    )
    turn.send(producer)
    producer.purge()
    producer.poll(1)
    assert sorted(reports, key=repr) == [
        ("fires", b"t1", b"1", None),
        ("fires", b"t2", b"2", None),
        ("state", b"k", None, 3),
    ]


class _Positions:
    """What `_read_through` asks of a consumer: positions and cached high watermarks."""

    def __init__(self, partitions: dict[tuple[str, int], tuple[int, int]]) -> None:
        self.partitions = partitions  # (topic, partition) -> (position, high watermark)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for topic, p in self.partitions]

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.partitions[tp.topic, tp.partition][0])
            for tp in tps
        ]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        assert cached  # no round trip to the broker once a second
        return 0, self.partitions[tp.topic, tp.partition][1]


def test_time_is_read_through_the_oldest_sample_of_a_paced_partition_behind_its_end() -> None:
    loop = TransactionalLoop(Settings(), "g", ["events", "matches"])
    loop.paced_by = frozenset({"events"})
    loop._read_at = {("events", 0): 100.0, ("events", 1): 90.0, ("events", 2): 50.0}
    consumer = _Positions(
        {
            ("events", 0): (10, 20),  # behind: read up to 100
            ("events", 1): (10, 20),  # behind: up to 90, the oldest
            ("events", 2): (20, 21),  # at its end (a commit marker past it): the clock
            ("events", 3): (10, 20),  # behind, no sample yet: not known, not held
            ("matches", 0): (0, 99),  # not paced
        }
    )
    assert loop._read_through(consumer, 1000.0) == 90.0  # type: ignore[arg-type]
    assert loop._read_at == {("events", 0): 100.0, ("events", 1): 90.0}
    consumer.partitions = {("events", 0): (20, 20), ("events", 1): (20, 20)}
    assert loop._read_through(consumer, 1000.0) == 1000.0  # type: ignore[arg-type]
    assert loop._read_at == {}
