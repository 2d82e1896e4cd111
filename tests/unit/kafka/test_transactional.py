from __future__ import annotations

from processor.config import Settings
from processor.kafka.clients import producer_config
from processor.kafka.transactional import TRANSACTION_TIMEOUT_MS, transactional_config


def test_a_loops_producer_retries_a_busy_coordinator_within_milliseconds() -> None:
    config = producer_config(Settings(), **transactional_config("g-host-1"))
    assert config["transactional.id"] == "g-host-1"
    assert config["transaction.timeout.ms"] == TRANSACTION_TIMEOUT_MS
    assert config["retry.backoff.ms"] <= 20  # librdkafka's 100 ms was a floor under latency
    assert config["enable.idempotence"] is True
