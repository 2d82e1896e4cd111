"""Our producers compress their batches (TRIGGERS_KAFKA_COMPRESSION), and every client
the product reads with, librdkafka's and Faust's aiokafka, reads each codec back."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from processor import topics
from processor.config import Compression, Settings
from processor.kafka.admin import create_topics
from processor.kafka.clients import new_consumer, produce_and_wait


async def _read_with_aiokafka(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        found: list[bytes] = []
        while len(found) < count:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            found += [r.value for records in batches.values() for r in records if r.value]
        return found
    finally:
        await consumer.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("codec", list(Compression))
def test_each_codec_is_read_back_by_both_clients(kafka_bootstrap: str, codec: Compression) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"z{uuid.uuid4().hex[:8]}.",
        kafka_compression=codec,
    )
    create_topics(settings)
    topic = topics.topic_name(topics.TRIGGER_DEFINITIONS, settings)  # one partition
    values = [b'{"n": %d, "text": "%s"}' % (n, b"repeated " * 20) for n in range(50)]
    produce_and_wait(settings, topic, [(b"k", v) for v in values])

    assert asyncio.run(_read_with_aiokafka(kafka_bootstrap, topic, len(values))) == values
    consumer = new_consumer(settings, f"compression-{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    try:
        found: list[bytes] = []
        for _ in range(60):
            found += [m.value() for m in consumer.consume(100, 1.0) if m.error() is None]
            if len(found) >= len(values):
                break
        assert found == values
    finally:
        consumer.close()
