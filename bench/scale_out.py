"""Scale out: backlog throughput of 1, 2 and 3 workers on topics with 6 partitions.

Each run has its own topics (6 partitions), the chaos run's triggers (thresholds grouped
by host, and a stateless one) and 100,000 events keyed by 50 hosts, so they spread over
every partition. The workers start and are paused (SIGSTOP) while the backlog is written,
then resumed; throughput is events / (resumption -> every expected command on
`agent-runs`, read_committed). Ratios are against one worker in the same run.

    .venv/bin/python bench/scale_out.py [--events 100000]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processor import topics  # noqa: E402
from processor.kafka.admin import create_topics  # noqa: E402
from tests.integration import chaos  # noqa: E402
from tests.integration.kafka import Pipeline  # noqa: E402

BOOTSTRAP = "127.0.0.1:9092"


def commands_seen(pipeline: Pipeline, want: int, timeout: float) -> float:
    """When the `want`-th command became visible (read_committed), by this clock."""
    reader = Consumer(
        {
            "bootstrap.servers": pipeline.bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    reader.subscribe([pipeline.topic(topics.AGENT_RUNS)])
    seen, deadline = 0, time.monotonic() + timeout
    try:
        while seen < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {seen} of {want} commands in {timeout:.0f} s")
            seen += sum(m.error() is None for m in reader.consume(1000, timeout=0.2))
        return time.monotonic()
    finally:
        reader.close()


def one(workers: int, events: int, seed: int) -> dict[str, Any]:
    pipeline = Pipeline(bootstrap=BOOTSTRAP, workdir=Path(tempfile.mkdtemp(prefix="scale-")))
    settings = pipeline.settings
    assert settings.topic_partitions == 6
    create_topics(settings)
    _, stream, expected, _ = chaos.prepare(pipeline, events, 50, seed)
    processes = []
    try:
        for n in range(workers):
            name = f"w{n}"
            disk = {"TRIGGERS_DATA_DIR": str(pipeline.workdir / f"data-{name}")}
            processes.append(pipeline.start("worker", name=name, extra_env=disk))
        for n in range(workers):
            pipeline.wait_ready(f"w{n}", "[^Worker]: Ready", timeout=180)
            pipeline.wait_ready(f"w{n}", "dispatcher restored", timeout=180)
        time.sleep(5)  # the group settles: every member has its partitions
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        producer = Producer(
            {"bootstrap.servers": BOOTSTRAP, "partitioner": "murmur2_random", "linger.ms": 20}
        )
        topic = pipeline.topic(topics.EVENTS)
        for key, value in stream:
            producer.produce(topic, value=value, key=key)
            producer.poll(0)
        producer.flush(60)
        resumed = time.monotonic()
        for process in processes:
            process.send_signal(signal.SIGCONT)
        done = commands_seen(pipeline, len(expected), 600)
        seconds = done - resumed
        return {
            "workers": workers,
            "events": events,
            "commands": len(expected),
            "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds, 1),
        }
    finally:
        pipeline.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rows = [one(n, args.events, args.seed) for n in (1, 2, 3)]
    base = rows[0]["events_per_s"]
    for row in rows:
        row["vs_one_worker"] = round(row["events_per_s"] / base, 3)
        print(json.dumps(row))
    results = {"partitions": 6, "rows": rows}
    (ROOT / "bench" / "results" / "scale_out.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
