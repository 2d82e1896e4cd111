"""An asyncio face on confluent-kafka's producer: `await send(...)` returns once the
broker acknowledged the record (acks=all, idempotent) or raises KafkaUnavailable.

One producer serves every request of the process (librdkafka batches what they send
within `linger.ms`). Its poll thread runs the delivery callbacks and hands each poll's
outcomes to the event loop in one call, so a batch of acks wakes the loop once."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from contextlib import suppress

from confluent_kafka import KafkaError, Message

from processor.config import Settings
from processor.errors import KafkaUnavailable, RecordTooLarge
from processor.kafka.clients import new_producer

Outcome = tuple[asyncio.Future[None], KafkaError | None]


class AsyncProducer:
    def __init__(self, settings: Settings, ack_timeout_seconds: float) -> None:
        self.timeout = ack_timeout_seconds
        self._producer = new_producer(
            settings,
            **{"message.timeout.ms": int(ack_timeout_seconds * 1000), "linger.ms": 1},
        )
        self._outcomes: list[Outcome] = []
        """Delivery reports of the current poll (only the poll thread touches it)."""
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)
            if self._outcomes:
                outcomes, self._outcomes = self._outcomes, []
                by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = defaultdict(list)
                for outcome in outcomes:
                    by_loop[outcome[0].get_loop()].append(outcome)
                for loop, settled in by_loop.items():
                    with suppress(RuntimeError):  # a closed loop: nobody waits any more
                        loop.call_soon_threadsafe(_settle, settled)

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()

        def delivered(error: KafkaError | None, _message: Message) -> None:
            self._outcomes.append((acked, error))

        try:
            self._producer.produce(
                topic, key=key, value=value, headers=headers, on_delivery=delivered
            )
        except BufferError:
            raise KafkaUnavailable("the producer queue is full") from None
        # librdkafka reports every record by message.timeout.ms; this is a backstop
        # (a timer on the future: asyncio.wait_for costs a task per call).
        timer = loop.call_later(self.timeout + 1, _give_up, acked)
        try:
            await acked
        except RecordTooLarge:
            raise RecordTooLarge(
                f"the record is {len(value):,} bytes, more than {topic} takes (its "
                "max.message.bytes, the broker's 1 MiB by default)"
            ) from None
        finally:
            timer.cancel()

    def close(self) -> None:
        self._stopping.set()
        self._poller.join(5)
        self._producer.flush(5)


def _settle(outcomes: list[Outcome]) -> None:
    for acked, error in outcomes:
        if acked.done():
            continue
        if error is None:
            acked.set_result(None)
        elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            acked.set_exception(RecordTooLarge(error.str()))
        else:
            acked.set_exception(KafkaUnavailable(f"Kafka did not take it: {error.str()}"))


def _give_up(acked: asyncio.Future[None]) -> None:
    if not acked.done():
        acked.set_exception(KafkaUnavailable("Kafka did not acknowledge in time"))
