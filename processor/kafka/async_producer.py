"""An asyncio face on confluent-kafka's producer: `await send(...)` returns once the
broker acknowledged the record (acks=all, idempotent) or raises KafkaUnavailable."""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, Message

from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.kafka.clients import new_producer


class AsyncProducer:
    def __init__(self, settings: Settings, ack_timeout_seconds: float) -> None:
        self.timeout = ack_timeout_seconds
        self._producer = new_producer(
            settings,
            **{"message.timeout.ms": int(ack_timeout_seconds * 1000), "linger.ms": 1},
        )
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)

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
            def settle() -> None:
                if acked.done():
                    return
                if error is None:
                    acked.set_result(None)
                else:
                    acked.set_exception(KafkaUnavailable(f"Kafka did not take it: {error.str()}"))

            loop.call_soon_threadsafe(settle)

        try:
            self._producer.produce(
                topic, key=key, value=value, headers=headers, on_delivery=delivered
            )
        except BufferError:
            raise KafkaUnavailable("the producer queue is full") from None
        try:
            await asyncio.wait_for(acked, self.timeout + 1)
        except TimeoutError:
            raise KafkaUnavailable("Kafka did not acknowledge in time") from None

    def close(self) -> None:
        self._stopping.set()
        self._poller.join(5)
        self._producer.flush(5)
