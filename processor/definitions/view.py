"""A live, thread-safe view of `trigger-definitions` for the HTTP service.

A background thread reads the compacted topic from the beginning (no consumer group:
every replica reads everything) and then follows it. `ready` is set once the first
read reached the end, so the service never answers from a half-loaded view.
"""

from __future__ import annotations

import threading

from confluent_kafka import Message

from processor import topics
from processor.config import Settings
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.kafka.follower import Follower


class DefinitionsView:
    def __init__(self, settings: Settings) -> None:
        self.registry = Registry()
        self._lock = threading.Lock()
        # Offsets of our own writes already shown; older records for the key are stale.
        self._shown: dict[str, int] = {}
        self._follower = Follower(
            settings,
            topics.topic_name(topics.TRIGGER_DEFINITIONS, settings),
            self._apply,
            self._loaded,
        )
        self.ready = self._follower.ready
        self._by_name: dict[str, tuple[list[tuple[str, str]], list[TriggerDocument]]] = {}
        self._by_name_version = -1

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

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

    def by_name(self, workspace: str) -> tuple[list[tuple[str, str]], list[TriggerDocument]]:
        """The workspace's triggers sorted by (name, id), with those keys, kept until the
        next change: a listing's pages bisect into it instead of each sorting every
        trigger (the console lists them all, 200 a page)."""
        with self._lock:
            if self._by_name_version != self.registry.version:
                self._by_name = {}
                self._by_name_version = self.registry.version
            found = self._by_name.get(workspace)
            if found is None:
                documents = sorted(
                    (d for d in self.registry.documents() if d.workspace == workspace),
                    key=lambda d: (d.name, d.trigger_id),
                )
                found = [(d.name, d.trigger_id) for d in documents], documents
                self._by_name[workspace] = found
            return found

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

    def _loaded(self) -> None:
        with self._lock:
            self.registry.loaded()

    def _apply(self, message: Message) -> None:
        key = (message.key() or b"").decode(errors="replace")  # the registry refuses bad keys
        with self._lock:
            shown = self._shown.get(key)
            if shown is not None and (message.offset() or 0) < shown:
                return
            self._shown.pop(key, None)
            self.registry.apply(key, message.value())
