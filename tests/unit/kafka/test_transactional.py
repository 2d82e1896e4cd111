from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from processor.config import Settings
from processor.kafka.clients import producer_config
from processor.kafka.transactional import TRANSACTION_TIMEOUT_MS, Turn, transactional_config


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
