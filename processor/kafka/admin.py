"""Creating the product's topics (idempotent) and checking that the broker answers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.kafka.clients import common_config
from processor.topics import ALL_TOPICS, partitions_for, topic_name


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    partitions: int
    created: bool


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(common_config(settings))


def wait_for_broker(settings: Settings, timeout_seconds: float = 10.0) -> None:
    """Return once the broker serves metadata; raise KafkaUnavailable otherwise."""
    try:
        _admin(settings).list_topics(timeout=timeout_seconds)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"Kafka at {settings.kafka_bootstrap} did not answer in {timeout_seconds:.0f} s "
            f"({exc.args[0]}); start it with `make kafka-up` or set TRIGGERS_KAFKA_BOOTSTRAP"
        ) from None


def create_topics(settings: Settings, timeout_seconds: float = 30.0) -> list[TopicOutcome]:
    """Create every topic that does not exist yet; existing ones are left as they are."""
    wait_for_broker(settings)
    admin = _admin(settings)
    existing = admin.list_topics(timeout=timeout_seconds).topics
    wanted = []
    outcomes = []
    for spec in ALL_TOPICS:
        name = topic_name(spec, settings)
        partitions = partitions_for(spec, settings)
        if name in existing:
            outcomes.append(TopicOutcome(name, len(existing[name].partitions), created=False))
            continue
        config = dict(spec.config)
        if spec.compacted:
            config["cleanup.policy"] = "compact"
        wanted.append(
            NewTopic(name, num_partitions=partitions, replication_factor=-1, config=config)
        )
    if not wanted:
        return sorted(outcomes, key=lambda o: o.name)
    for name, future in admin.create_topics(wanted, request_timeout=timeout_seconds).items():
        try:
            future.result()
            created = True
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            created = False
        partitions = next(t.num_partitions for t in wanted if t.topic == name)
        outcomes.append(TopicOutcome(name, partitions, created))
    _wait_until_visible(admin, {t.topic: t.num_partitions for t in wanted}, timeout_seconds)
    return sorted(outcomes, key=lambda o: o.name)


def _wait_until_visible(
    admin: AdminClient, partitions: dict[str, int], timeout_seconds: float
) -> None:
    """Creation is acknowledged before metadata shows every partition with a leader; a
    producer that sees fewer partitions hashes keys to the wrong ones. Return only once
    every created topic has all its partitions led."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        topics = admin.list_topics(timeout=timeout_seconds).topics
        if all(_all_led(topics.get(name), count) for name, count in partitions.items()):
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"created topics did not get all partitions led: {list(partitions)}"
            )
        time.sleep(0.1)


def _all_led(topic: Any, count: int) -> bool:
    if topic is None or topic.error is not None or len(topic.partitions) != count:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
