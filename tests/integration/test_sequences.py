"""Sequence, absence and debounce triggers on the real broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from processor import topics
from tests.integration.kafka import Pipeline, reading, settle

TRIGGERS = """
trigger:
  id: paid-fast
  name: Paid soon after created
  type: event
  event:
    pattern: order.created
    followed_by: {pattern: order.paid, within: 1m, key: data.order_id}
  agent: {id: thank-you}
---
trigger:
  id: unpaid
  name: Created but not paid
  type: event
  event:
    pattern: order.created
    not_followed_by: {pattern: order.paid, within: 3s, key: data.order_id}
  agent: {id: reminder}
---
trigger:
  id: saves
  name: Burst of saves
  type: event
  event:
    pattern: file.saved
    debounce: {quiet: 2s, max_wait: 30s, key: data.user}
  agent: {id: summarizer}
"""


def event(type_: str, event_id: str, **data: str) -> dict:
    return {
        "type": type_,
        "source": "shop",
        "id": event_id,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }


def test_sequence_absence_and_debounce(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TRIGGERS)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        pipeline.produce(
            topics.EVENTS, orjson.dumps(event("order.created", "c1", order_id="o1")), key=b"o1"
        )
        pipeline.produce(
            topics.EVENTS, orjson.dumps(event("order.created", "c2", order_id="o2")), key=b"o2"
        )
        pipeline.produce(
            topics.EVENTS, orjson.dumps(event("order.paid", "p1", order_id="o1")), key=b"o1"
        )
        for i in range(3):
            # Keyed by user: Kafka orders events per key, and the burst keeps that order.
            pipeline.produce(
                topics.EVENTS, orjson.dumps(event("file.saved", f"s{i}", user="ann")), key=b"ann"
            )
            time.sleep(0.3)
        runs(lambda cs: len(cs) >= 3, timeout=60)
        commands = settle(runs, 5)
    by_agent: dict[str, list[dict]] = {}
    for command in commands:
        by_agent.setdefault(command["agent_id"], []).append(command)
    [thanks] = by_agent["thank-you"]
    assert thanks["input"]["followed_by"]["first"]["id"] == "c1"
    assert thanks["input"]["followed_by"]["then"]["id"] == "p1"
    [reminder] = by_agent["reminder"]  # o1 was paid; only o2 is reminded
    absence = reminder["input"]["not_followed_by"]
    assert absence["first"]["id"] == "c2"
    deadline = datetime.fromisoformat(absence["deadline"])  # ISO 8601, as event times
    assert deadline - datetime.fromisoformat(absence["first"]["time"]) == timedelta(seconds=3)
    [summary] = by_agent["summarizer"]
    burst = summary["input"]["debounce"]
    assert [e["id"] for e in burst["events"]] == ["s0", "s1", "s2"]
    first_seen, last_seen = (datetime.fromisoformat(burst[k]) for k in ("first_seen", "last_seen"))
    assert timedelta(0) <= last_seen - first_seen < timedelta(seconds=30)
    assert 0 < thanks["input"]["followed_by"]["seconds_between"] < 60
