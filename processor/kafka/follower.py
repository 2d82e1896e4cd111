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
from processor.errors import KafkaUnavailable
from processor.kafka.clients import consumer_config
from processor.kafka.reader import partitions_of, take

log = logging.getLogger(__name__)


class Follower:
    def __init__(
        self,
        settings: Settings,
        topic: str,
        apply: Callable[[Message], None],
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.apply = apply
        self.on_ready = on_ready
        """Called once, in the follower's thread, when the first read reached the end."""
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
            partitions = self._partitions(consumer)
            if partitions is None:
                return
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            at_end: set[int] = set()
            while not self._stopping.is_set():
                for message in take(consumer, 0.2, 500):
                    error = message.error()
                    if error is None:
                        self.apply(message)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition() or 0)
                        if at_end >= set(partitions) and not self.ready.is_set():
                            self.on_ready()
                            self.ready.set()
                    else:
                        log.warning("following %s: %s", self.topic, error)
        except Exception:
            log.exception("stopped following %s", self.topic)
            raise
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        """The topic's partitions; a broker that is not ready yet or a topic that does
        not exist yet is waited for (logged), until stopped (None)."""
        while not self._stopping.is_set():
            try:
                return partitions_of(consumer, self.topic, 30.0)
            except KafkaUnavailable as exc:
                log.warning("following %s: %s; trying again", self.topic, exc)
                self._stopping.wait(1.0)
        return None
