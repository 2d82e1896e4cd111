from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.errors import KafkaUnavailable
from processor.kafka.reader import retry_transient, take


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


class Queue:
    """A consumer's fetched queue: poll waits for one message, consume takes up to n."""

    def __init__(self, fetched: list[str]) -> None:
        self.fetched = fetched
        self.calls: list[tuple[str, float, int]] = []

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", timeout, 1))
        return self.fetched.pop(0) if self.fetched else None

    def consume(self, n: int, timeout: float) -> list[str]:
        self.calls.append(("consume", timeout, n))
        taken, self.fetched = self.fetched[:n], self.fetched[n:]
        return taken


def test_take_waits_for_the_first_message_only_then_takes_what_is_fetched() -> None:
    queue = Queue(["a", "b", "c"])
    assert take(queue, 1.0, 2) == ["a", "b"]  # type: ignore[arg-type]
    assert take(queue, 1.0, 500) == ["c"]  # type: ignore[arg-type]
    assert take(queue, 1.0, 500) == []  # type: ignore[arg-type]
    # consume(n, timeout) waits for n or the timeout: it is never asked to wait.
    assert [c for c in queue.calls if c[0] == "consume"] == [("consume", 0, 1), ("consume", 0, 499)]
