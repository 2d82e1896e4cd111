from __future__ import annotations

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
    once its own transaction has begun, in the order the handler produced them."""

    class Sent:
        def __init__(self) -> None:
            self.records: list[tuple[str, dict[str, object]]] = []

        def produce(self, topic: str, **record: object) -> None:
            self.records.append((topic, record))

    turn = Turn()
    turn.produce("fires", key=b"t1", value=b"1")
    turn.produce("state", key=b"k", value=None, partition=3)
    turn.produce("fires", key=b"t2", value=b"2")
    sent = Sent()
    turn.send(sent)  # type: ignore[arg-type]
    assert sent.records == [
        ("fires", {"key": b"t1", "value": b"1"}),
        ("state", {"key": b"k", "value": None, "partition": 3}),
        ("fires", {"key": b"t2", "value": b"2"}),
    ]
