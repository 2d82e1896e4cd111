"""Dead letters on the real broker: kept whole, shown, and sent back once."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, TopicPartition

from processor import topics
from tests.integration.kafka import Pipeline, start_serve

OPS = {"Authorization": "Bearer k-ops"}
OTHER = {"Authorization": "Bearer k-beta"}


def records(pipeline: Pipeline, topic: str) -> list[Any]:
    """Every committed record of `topic`, with its headers."""
    reader = Consumer(
        {
            "bootstrap.servers": pipeline.bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, 0) for p in partitions])
    found, pending = [], set(partitions)
    while pending:
        for message in reader.consume(100, timeout=5):
            if message.error() is None:
                found.append(message)
            elif message.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
    reader.close()
    return found


def test_a_rejected_record_is_kept_whole_and_redriven_byte_for_byte_once(
    pipeline: Pipeline,
) -> None:
    base = start_serve(
        pipeline, extra_env={"TRIGGERS_API_KEYS": '{"k-ops": "default", "k-beta": "beta"}'}
    )
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    poison = b'{"type": "order.created", "data": ' + b"x" * 100_000  # not JSON; 100 KB
    headers = [("trace-id", b"t-123"), ("binary", b"\x00\xff")]
    pipeline.produce(topics.EVENTS, poison, key=b"order-7", headers=headers)

    deadline = time.monotonic() + 60
    while True:
        letters = httpx.get(f"{base}/v1/dead-letters", headers=OPS, timeout=20).json()
        mine = [letter for letter in letters if letter["topic"] == pipeline.topic(topics.EVENTS)]
        if mine:
            break
        assert time.monotonic() < deadline, letters
        time.sleep(0.5)
    [letter] = mine
    assert letter["value_bytes"] == len(poison) and not letter["redriven"]
    assert letter["headers"]["trace-id"] == "t-123"
    whole = httpx.get(f"{base}/v1/dead-letters/{letter['id']}", headers=OPS, timeout=20).json()
    assert base64.b64decode(whole["value_base64"]) == poison  # the old 64 KiB cap is gone
    assert httpx.get(f"{base}/v1/dead-letters/{letter['id']}", headers=OTHER).status_code == 404
    assert httpx.get(f"{base}/v1/dead-letters/0:999999", headers=OPS).status_code == 404

    answer = httpx.post(f"{base}/v1/dead-letters/{letter['id']}/redrive", headers=OPS, timeout=30)
    assert answer.status_code == 202, answer.text
    assert answer.json()["topic"] == pipeline.topic(topics.EVENTS)
    [original, copy] = [
        m for m in records(pipeline, pipeline.topic(topics.EVENTS)) if m.key() == b"order-7"
    ]
    assert copy.value() == original.value() == poison
    assert copy.partition() == original.partition()
    dead_letters = pipeline.topic(topics.DEAD_LETTERS)
    assert copy.headers() == [
        *headers,
        ("triggers-redriven-from", f"{dead_letters}/{letter['id']}".encode()),
    ]

    again = httpx.post(f"{base}/v1/dead-letters/{letter['id']}/redrive", headers=OPS, timeout=30)
    assert again.status_code == 409 and "redriven already" in again.text
    refused = pipeline.cli("dead-letters", "redrive", letter["id"], check=False)
    assert refused.returncode == 1 and "redriven already" in refused.stderr
    listed = pipeline.cli("dead-letters", "list").stdout
    assert letter["id"] in listed and "redriven" in listed
    shown = pipeline.cli("dead-letters", "show", letter["id"]).stdout
    assert '"trace-id": "t-123"' in shown and '"redriven": true' in shown
    nowhere = pipeline.cli("dead-letters", "redrive", "99:0", check=False)
    assert nowhere.returncode == 1 and "no dead letter 99:0: " in nowhere.stderr
    assert "has partitions 0 to" in nowhere.stderr  # not a wait for a partition that never comes
    missing = httpx.get(f"{base}/v1/dead-letters/99:0", headers=OPS, timeout=30)
    assert missing.status_code == 404 and "has partitions 0 to" in missing.text
    # Still not JSON: the copy is dead-lettered again, and says where it came from.
    deadline = time.monotonic() + 60
    while True:
        letters = httpx.get(f"{base}/v1/dead-letters", headers=OPS, timeout=20).json()
        second = [x for x in letters if "triggers-redriven-from" in x["headers"]]
        if second:
            break
        assert time.monotonic() < deadline, letters
        time.sleep(0.5)
    assert second[0]["id"] != letter["id"] and not second[0]["redriven"]
