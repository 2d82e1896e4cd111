"""The ceiling: a confluent-kafka consume-count-produce loop for the Error Handler's rule.

No state store, no transactions, no definitions: decode each event, check type, source
and severity, count, and every 5th produce a command. Topics from BENCH_* variables.
"""

from __future__ import annotations

import os
import uuid

from confluent_kafka import Consumer, Producer
from error_rule import ErrorRule


def main() -> None:
    source, sink = os.environ["BENCH_EVENTS_TOPIC"], os.environ["BENCH_RUNS_TOPIC"]
    consumer = Consumer(
        {
            "bootstrap.servers": os.environ["TRIGGERS_KAFKA_BOOTSTRAP"],
            "group.id": f"passthrough-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            # Not librdkafka's 1 s pause once its queue is full (docs/benchmarks.md).
            "fetch.queue.backoff.ms": 10,
        }
    )
    producer = Producer(
        {"bootstrap.servers": os.environ["TRIGGERS_KAFKA_BOOTSTRAP"], "linger.ms": 5, "acks": "all"}
    )
    consumer.subscribe([source])
    print("peer ready", flush=True)
    errors = ErrorRule()
    while True:
        for message in consumer.consume(500, timeout=0.005):
            if message.error() is not None:
                continue
            command = errors.command_for(message.value())
            if command is not None:
                producer.produce(sink, key=command[0], value=command[1])
        producer.poll(0)


if __name__ == "__main__":
    main()
