"""How long a read of a whole topic takes on the local broker: what every window-state
restore, dispatcher restore, `triggers explain` and CLI read (`executions`, `get`, ...)
pays before it has its answer.

`read_to_end` (processor/kafka/reader.py) against the loop it replaced, in alternating
rounds on the same topic: `consume(500, timeout=1.0)` until every partition's end, with
librdkafka's default `fetch.wait.max.ms` (500). `consume(n, timeout)` returns when n
records arrived or the timeout passed, so the last, short batch of a read waited the
whole second; and the end of a partition is known only from a fetch answered at its
end, which the broker holds back up to `fetch.wait.max.ms` when there is no data.

    .venv/bin/python bench/reads.py [--records 600] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processor.config import Settings  # noqa: E402
from processor.kafka.clients import consumer_config  # noqa: E402
from processor.kafka.reader import read_to_end  # noqa: E402
from tests.integration.kafka import delete_topics  # noqa: E402

BOOTSTRAP = os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 6


def read_as_before(settings: Settings, topic: str) -> int:
    """The loop `read_to_end` ran before: consume(500, timeout=1.0), default fetch wait."""
    reader = Consumer(
        consumer_config(settings, f"{settings.app_id}-reader", **{"enable.partition.eof": True})
    )
    try:
        pending, assignment = set(), []
        for partition in range(PARTITIONS):
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high > low:
                pending.add(partition)
                assignment.append(TopicPartition(topic, partition, low))
        reader.assign(assignment)
        count = 0
        while pending:
            for message in reader.consume(500, timeout=1.0):
                error = message.error()
                if error is None:
                    count += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
        return count
    finally:
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(kafka_bootstrap=BOOTSTRAP)
    topic = f"bench-reads-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)
    try:
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
        for n in range(args.records):
            producer.produce(topic, key=f"k{n}".encode(), value=b'{"n": %d}' % n)
        assert producer.flush(30) == 0
        seconds: dict[str, list[float]] = {"before": [], "read_to_end": []}
        for _ in range(args.rounds):
            started = time.perf_counter()
            assert read_as_before(settings, topic) == args.records
            seconds["before"].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert sum(1 for _ in read_to_end(settings, topic)) == args.records
            seconds["read_to_end"].append(time.perf_counter() - started)
    finally:
        delete_topics(BOOTSTRAP, topic)
    medians = {name: statistics.median(found) for name, found in seconds.items()}
    result: dict[str, Any] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "records": args.records,
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "seconds": {name: [round(s, 3) for s in found] for name, found in seconds.items()},
        "median_seconds": {name: round(m, 3) for name, m in medians.items()},
        "read_to_end_vs_before": round(medians["read_to_end"] / medians["before"], 3),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "reads.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
