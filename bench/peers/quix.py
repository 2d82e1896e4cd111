"""The peer: the Error Handler's rule written with Quix Streams, as a user would.

A stateful `apply` (RocksDB state with a changelog, at-least-once) keeps the times of
the matching events of the last 5 minutes per key, fires at 5 and resets. Runs in
`.bench/quix` (Quix Streams pins an older confluent-kafka than the product uses).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any

from quixstreams import Application, State

RANKS = {"high", "critical", "alert", "emergency"}


def interesting(event: dict[str, Any]) -> bool:
    return (
        str(event.get("type", "")).startswith("error.")
        and event.get("source") in ("system", "agents")
        and (event.get("data") or {}).get("severity") in RANKS
    )


def threshold(event: dict[str, Any], state: State) -> dict[str, Any] | None:
    now = time.time()
    times = [t for t in state.get("times", []) if now - t < 300] + [now]
    if len(times) >= 5:
        state.set("times", [])
        return {"execution_id": uuid.uuid4().hex, "cause": {"event_id": event["id"]}}
    state.set("times", times)
    return None


def main() -> None:
    app = Application(
        broker_address=os.environ["TRIGGERS_KAFKA_BOOTSTRAP"],
        consumer_group=os.environ["BENCH_GROUP"],  # its changelog: changelog__<group>...
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        # As every contender's consumer: fetch again 10 ms after the queue was full,
        # not librdkafka's 1 s (the product's consumers do the same; docs/benchmarks.md).
        consumer_extra_config={"fetch.queue.backoff.ms": 10},
    )
    source = app.topic(os.environ["BENCH_EVENTS_TOPIC"], value_deserializer="json")
    sink = app.topic(os.environ["BENCH_RUNS_TOPIC"], value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.filter(interesting)
    sdf = sdf.apply(threshold, stateful=True)
    sdf = sdf.filter(lambda command: command is not None)
    sdf.to_topic(sink)
    print("peer ready", flush=True)
    app.run()


if __name__ == "__main__":
    main()
