"""Creating the product's topics (idempotent) and checking that the broker answers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from processor.config import Settings, replication
from processor.errors import KafkaUnavailable, TopicsRefused
from processor.kafka.clients import common_config
from processor.kafka.security import refusal
from processor.topics import ALL_TOPICS, partitions_for, topic_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    partitions: int
    created: bool


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(common_config(settings))


def wait_for_broker(settings: Settings, timeout_seconds: float = 10.0) -> None:
    """Return once the broker serves metadata. KafkaRefused at once if it refuses our
    credentials (or we its certificate), KafkaUnavailable if it does not answer in time."""
    reports: list[KafkaError] = []
    # A producer, not an admin client: only it (through poll) reports connection errors.
    probe = Producer({**common_config(settings), "error_cb": reports.append})
    deadline = time.monotonic() + timeout_seconds
    last: Any = None
    while True:
        try:
            probe.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last = exc.args[0]
        probe.poll(0)
        for report in reports:
            refused = refusal(settings, report)
            if refused is not None:
                raise refused
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(
                f"Kafka at {settings.kafka_bootstrap} did not answer in {timeout_seconds:.0f} s "
                f"({last}); start it with `make kafka-up` or set TRIGGERS_KAFKA_BOOTSTRAP"
            )


def refuse_early(settings: Settings) -> None:
    """Stop at start, saying which setting to fix, if the broker refuses our credentials
    (or we its certificate): every client would otherwise retry forever. A broker that
    does not answer yet is not an error: the clients wait for it."""
    try:
        wait_for_broker(settings, 10.0)
    except KafkaUnavailable as exc:
        log.warning("%s; starting anyway, the clients keep trying", exc)


def create_topics(settings: Settings, timeout_seconds: float = 30.0) -> list[TopicOutcome]:
    """Create every topic that does not exist yet; existing ones are left as they are."""
    wait_for_broker(settings)
    admin = _admin(settings)
    existing = admin.list_topics(timeout=timeout_seconds).topics
    wanted = []
    outcomes = []
    factor, replicated = replication(settings)
    for spec in ALL_TOPICS:
        name = topic_name(spec, settings)
        partitions = partitions_for(spec, settings)
        if name in existing:
            outcomes.append(TopicOutcome(name, len(existing[name].partitions), created=False))
            continue
        config = {**spec.config, **replicated}
        if spec.compacted:
            config["cleanup.policy"] = "compact"
        wanted.append(
            NewTopic(name, num_partitions=partitions, replication_factor=factor, config=config)
        )
    if not wanted:
        return sorted(outcomes, key=lambda o: o.name)
    for name, future in admin.create_topics(wanted, request_timeout=timeout_seconds).items():
        try:
            future.result()
            created = True
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.INVALID_REPLICATION_FACTOR:
                raise TopicsRefused(
                    f"cannot create {name} with {factor} replicas: {error.str()}; set "
                    "TRIGGERS_TOPIC_REPLICATION_FACTOR (or --replication-factor) to at most "
                    "the number of brokers"
                ) from None
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicsRefused(f"cannot create {name}: {error.str()}") from None
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
