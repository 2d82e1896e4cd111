"""Following a whole topic from its beginning, in a thread (no consumer group).

Views of compacted topics (trigger definitions, execution records) use it: every
replica reads everything, `ready` is set once the first read reached the end.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from processor.config import Settings
from processor.kafka.clients import consumer_config

log = logging.getLogger(__name__)


class Follower:
    def __init__(self, settings: Settings, topic: str, apply: Callable[[Message], None]) -> None:
        self.settings = settings
        self.topic = topic
        self.apply = apply
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"follow-{topic}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

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
                    if error is None:
                        self.apply(message)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition() or 0)
                        if at_end >= set(partitions):
                            self.ready.set()
                    else:
                        log.warning("following %s: %s", self.topic, error)
        except Exception:
            log.exception("stopped following %s", self.topic)
            raise
        finally:
            consumer.close()
