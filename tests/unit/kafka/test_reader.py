from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.errors import KafkaUnavailable
from processor.kafka.reader import retry_transient


def failing(times: int, code: int) -> object:
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise KafkaException(KafkaError(code))
        return "read"

    call.calls = calls  # type: ignore[attr-defined]
    return call


def test_a_young_topics_missing_leader_is_waited_for() -> None:
    call = failing(3, KafkaError.NOT_LEADER_FOR_PARTITION)
    slept: list[float] = []
    assert retry_transient("reading t", call, 30, sleep=slept.append) == "read"  # type: ignore[arg-type]
    assert slept == [0.1, 0.2, 0.4]


def test_an_error_that_will_not_pass_is_not_retried() -> None:
    call = failing(1, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaUnavailable, match=r"reading t: .*TOPIC_AUTHORIZATION_FAILED"):
        retry_transient("reading t", call, 30, sleep=lambda _: None)  # type: ignore[arg-type]
    assert call.calls["n"] == 1  # type: ignore[attr-defined]


def test_a_transient_error_that_lasts_ends_in_a_message_saying_what_to_check() -> None:
    call = failing(10**6, KafkaError.LEADER_NOT_AVAILABLE)
    with pytest.raises(KafkaUnavailable) as raised:
        retry_transient("reading t", call, 0.0, sleep=lambda _: None)  # type: ignore[arg-type]
    assert "LEADER_NOT_AVAILABLE" in str(raised.value)
    assert "triggers topics create" in str(raised.value)
