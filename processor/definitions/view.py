"""A live, thread-safe view of `trigger-definitions` for the HTTP service.

A background thread reads the compacted topic from the beginning (no consumer group:
every replica reads everything) and then follows it. `ready` is set once the first
read reached the end, so the service never answers from a half-loaded view.
"""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from processor import topics
from processor.config import Settings
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.kafka.clients import consumer_config

log = logging.getLogger(__name__)


class DefinitionsView:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topics.topic_name(topics.TRIGGER_DEFINITIONS, settings)
        self.registry = Registry()
        self.ready = threading.Event()
        self._lock = threading.Lock()
        # Offsets of our own writes already shown; older records for the key are stale.
        self._shown: dict[str, int] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="definitions-view", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    # -- reads (any thread) ------------------------------------------------------------

    def get(self, trigger_id: str) -> TriggerDocument | None:
        with self._lock:
            return self.registry.get(trigger_id)

    def route(self, path: str) -> dict[str, str]:
        with self._lock:
            return self.registry.webhook_route(path)

    def documents(self) -> list[TriggerDocument]:
        with self._lock:
            return self.registry.documents()

    # -- writes ------------------------------------------------------------------------

    def apply_local(self, trigger_id: str, document: TriggerDocument | None, offset: int) -> None:
        """Show our own acknowledged write at once. The follower reads it again later,
        and skips the records of that trigger that are older than it meanwhile."""
        with self._lock:
            self._shown[trigger_id] = max(offset, self._shown.get(trigger_id, -1))
            if document is None:
                self.registry.apply(trigger_id, None)
            else:
                self.registry.put(document)

    def _follow(self) -> None:
        consumer = Consumer(
            consumer_config(
                self.settings,
                f"{self.settings.app_id}-view-{uuid.uuid4().hex[:8]}",
                **{"enable.partition.eof": True},
            )
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
            partitions = sorted(metadata.partitions)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            at_end: set[int] = set()
            while not self._stopping.is_set():
                for message in consumer.consume(500, timeout=0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            at_end.add(message.partition() or 0)
                            if at_end >= set(partitions):
                                self.ready.set()
                        else:
                            log.warning("definitions view: %s", error)
                        continue
                    key = (message.key() or b"").decode()
                    with self._lock:
                        shown = self._shown.get(key)
                        if shown is not None and (message.offset() or 0) < shown:
                            continue
                        self._shown.pop(key, None)
                        self.registry.apply(key, message.value())
        except Exception:
            log.exception("definitions view stopped following %s", self.topic)
            raise
        finally:
            consumer.close()
