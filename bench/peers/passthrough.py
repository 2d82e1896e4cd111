"""The ceiling: a confluent-kafka consume-count-produce loop for the Error Handler's rule.

No state store, no transactions, no definitions: decode each event, check type, source
and severity, count, and every 5th produce a command. Topics from BENCH_* variables.
"""

from __future__ import annotations

import os
import time
import uuid

import orjson
from confluent_kafka import Consumer, Producer

RANKS = {"high": 7, "critical": 8, "alert": 9, "emergency": 10}


def main() -> None:
    source, sink = os.environ["BENCH_EVENTS_TOPIC"], os.environ["BENCH_RUNS_TOPIC"]
    consumer = Consumer(
        {
            "bootstrap.servers": os.environ["TRIGGERS_KAFKA_BOOTSTRAP"],
            "group.id": f"passthrough-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )
    producer = Producer(
        {"bootstrap.servers": os.environ["TRIGGERS_KAFKA_BOOTSTRAP"], "linger.ms": 5, "acks": "all"}
    )
    consumer.subscribe([source])
    print("peer ready", flush=True)
    window: list[float] = []
    while True:
        for message in consumer.consume(500, timeout=0.005):
            if message.error() is not None:
                continue
            event = orjson.loads(message.value() or b"{}")
            if not event.get("type", "").startswith("error."):
                continue
            if event.get("source") not in ("system", "agents"):
                continue
            if (event.get("data") or {}).get("severity") not in RANKS:
                continue
            now = time.time()
            window = [t for t in window if now - t < 300] + [now]
            if len(window) >= 5:
                window = []
                command = {"execution_id": uuid.uuid4().hex, "cause": {"event_id": event["id"]}}
                producer.produce(
                    sink, key=command["execution_id"].encode(), value=orjson.dumps(command)
                )
        producer.poll(0)


if __name__ == "__main__":
    main()
