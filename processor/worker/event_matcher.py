"""The event matcher as a transactional batch loop (confluent-kafka), not a Faust agent.

Events are most of what a worker reads, and Faust hands them over one `await` at a
time (a no-op Faust agent reads about 0.085x what a confluent-kafka consumer reads on
the same topic). Here a batch of records is decoded and matched in a tight loop, and
its fires, window matches and dead letters are written in one transaction with the
batch's input offsets (TransactionalLoop): a worker killed mid-batch leaves nothing
behind that a `read_committed` reader sees, and the batch is matched again, once.

    events (+ TRIGGERS_EVENT_TOPICS) ─► [batch] ─ decode, match_event ─┬─► trigger-fires
                                                                      ├─► trigger-matches
                                                                      └─► trigger-dead-letters
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from processor import topics
from processor.config import Settings
from processor.deadletters import dead_letter_for
from processor.definitions.registry import Registry
from processor.errors import BadRecord
from processor.kafka.clients import new_consumer
from processor.kafka.transactional import TransactionalLoop
from processor.matching.decode import decode_event
from processor.matching.events import Match, match_event
from processor.metrics import EVENT_TO_FIRE, EVENTS, FIRES, MATCH_VERDICTS
from processor.serde import to_json

log = logging.getLogger(__name__)
COMPONENT = "event-matcher"
BATCH_SIZE = 2000


def match_record(registry: Registry, message: Message, data_max_bytes: int) -> list[Match]:
    """The verdict of every candidate trigger on one record; BadRecord if it is no event."""
    timestamp_type, timestamp_ms = message.timestamp()
    return match_event(
        registry,
        decode_event(
            message.value(),
            _headers(message),
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            timestamp_ms=timestamp_ms if timestamp_type else None,
        ),
        data_max_bytes=data_max_bytes,
    )


def _headers(message: Message) -> list[tuple[str, bytes | None]]:
    headers: Any = message.headers() or []
    return [(name, _bytes(value)) for name, value in headers]


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class EventMatcher(TransactionalLoop):
    """Stateless: nothing to restore on assignment, so any member can take any partition."""

    name = COMPONENT
    batch_size = BATCH_SIZE

    def __init__(
        self, settings: Settings, registry: Registry, definitions_ready: threading.Event
    ) -> None:
        inputs = [topics.topic_name(topics.EVENTS, settings), *settings.event_topics]
        super().__init__(settings, f"{settings.app_id}-matcher", inputs)
        self.registry = registry
        self.definitions_ready = definitions_ready
        self.fires_topic = topics.topic_name(topics.TRIGGER_FIRES, settings)
        self.matches_topic = topics.topic_name(topics.TRIGGER_MATCHES, settings)
        self.dead_letters_topic = topics.topic_name(topics.DEAD_LETTERS, settings)
        self.data_max_bytes = settings.event_data_max_bytes

    def before_start(self) -> bool:
        """A matcher running before the definitions are loaded would miss triggers."""
        while not self.definitions_ready.wait(0.5):
            if self.stopping:
                return False
        return True

    def handle(self, messages: list[Message], producer: Producer) -> None:
        outcomes: Counter[str] = Counter()
        verdicts: Counter[tuple[str, str]] = Counter()
        fired_at = time.time()
        for message in messages:
            try:
                matches = match_record(self.registry, message, self.data_max_bytes)
            except BadRecord as exc:
                self._dead_letter(message, str(exc), producer)
                outcomes["dead_letter"] += 1
                continue
            fired = 0
            for match in matches:
                verdicts[match.trigger.trigger_id, match.verdict.value] += 1
                if match.window is not None:
                    producer.produce(
                        self.matches_topic, key=match.window.key(), value=to_json(match.window)
                    )
                if match.fire is not None:
                    producer.produce(
                        self.fires_topic,
                        key=match.fire.trigger_id.encode(),
                        value=to_json(match.fire),
                    )
                    fired += 1
            outcomes["fired" if fired else "no_fire"] += 1
            if fired:
                FIRES.labels("event").inc(fired)
                _, timestamp_ms = message.timestamp()
                if timestamp_ms > 0:
                    EVENT_TO_FIRE.observe(max(0.0, fired_at - timestamp_ms / 1000))
        for outcome, count in outcomes.items():
            EVENTS.labels(outcome).inc(count)
        for (trigger_id, verdict), count in verdicts.items():
            MATCH_VERDICTS.labels(trigger_id, verdict).inc(count)

    def _dead_letter(self, message: Message, reason: str, producer: Producer) -> None:
        log.warning(
            "dead letter from %s[%d]@%d: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            reason,
        )
        key, value = dead_letter_for(message, reason, COMPONENT)
        producer.produce(self.dead_letters_topic, key=key, value=value)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions this group never committed start where the Faust agent that matched
        events before this loop existed (the app's own group) left off, so an upgraded
        deployment does not match its whole history again."""
        committed = self.retrying(lambda: consumer.committed(partitions, timeout=60)) or []
        fresh = [tp for tp in committed if tp.offset < 0]
        if fresh:
            legacy = self.retrying(lambda: _committed_by(self.settings, fresh)) or []
            starts = {(tp.topic, tp.partition): tp.offset for tp in legacy if tp.offset >= 0}
            if starts:
                log.info("event matcher starts %d partitions where Faust left off", len(starts))
                for tp in partitions:
                    tp.offset = starts.get((tp.topic, tp.partition), tp.offset)
        consumer.assign(partitions)


def _committed_by(settings: Settings, partitions: list[TopicPartition]) -> Any:
    """The offsets the app's Faust consumer group committed for these partitions."""
    legacy = new_consumer(settings, settings.app_id)
    try:
        return legacy.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions], 30)
    finally:
        legacy.close()
