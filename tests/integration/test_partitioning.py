"""Where the broker's clients put a keyed record is where the matcher expects it."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from processor import topics
from processor.kafka.clients import producer_config
from processor.worker.event_matcher import partition_of
from tests.integration.kafka import Pipeline


def test_partition_of_agrees_with_our_producers(pipeline: Pipeline) -> None:
    keys = [f"{uuid.uuid4()}\x1fgroup-{n}".encode() for n in range(60)]
    producer = Producer(producer_config(pipeline.settings))
    name = pipeline.topic(topics.TRIGGER_MATCHES)
    for key in keys:
        producer.produce(name, key=key, value=b"{}")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": f"p-{uuid.uuid4()}"})
    placed: dict[bytes, int] = {}
    try:
        for partition in range(pipeline.settings.topic_partitions):
            consumer.assign([TopicPartition(name, partition, 0)])
            _, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
            while sum(1 for p in placed.values() if p == partition) < high:
                for message in consumer.consume(100, timeout=1):
                    if message.error() is None:
                        placed[message.key()] = partition
    finally:
        consumer.close()
    assert placed == {key: partition_of(key, pipeline.settings.topic_partitions) for key in keys}
