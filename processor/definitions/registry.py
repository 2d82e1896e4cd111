"""The live set of triggers, as every component sees it from `trigger-definitions`.

The topic is compacted and keyed by trigger id; a null value (tombstone) deletes. The
registry keeps the parsed documents and an index of event patterns, updated one record
at a time, so a change is visible to the next event.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from processor.definitions.endpoints import endpoint_of
from processor.definitions.loader import parse_document
from processor.definitions.model import TriggerDocument, TriggerType
from processor.errors import DefinitionError
from processor.language.conditions import Condition, ConditionError, parse_condition
from processor.language.patterns import PatternIndex
from processor.logs import about

log = logging.getLogger(__name__)
SECOND_ROLE = "\x1fsecond"
"""Index entries of a sequence's B pattern are the trigger id plus this suffix."""
CANDIDATE_TYPES_KEPT = 50_000
"""Event types whose candidates are remembered (a busy topic has far fewer types)."""


def _ignoring(trigger_id: str, reason: str) -> None:
    log.error("ignoring invalid definition %s: %s", trigger_id, reason, extra=about(trigger_id))


class Registry:
    def __init__(self) -> None:
        self._documents: dict[str, TriggerDocument] = {}
        self._conditions: dict[str, Condition] = {}
        self.event_patterns = PatternIndex()
        self._endpoints: dict[str, dict[str, str]] = {}  # path -> method -> trigger id
        self.version = 0
        """Changes with every applied record, so readers can tell when to re-sync."""
        self._candidates: dict[str, tuple[str, ...]] = {}
        self.plans: dict[str, Any] = {}
        """What the matcher read from each index entry's trigger (matching/events.py
        fills it), dropped with every change like the candidates memo."""
        self._invalid: dict[str, str] = {}
        """Why each stored definition that fails validation is ignored, while the topic's
        first read runs: only those still invalid at its end are logged (`loaded`), not
        one deleted or replaced later in the topic, at every start."""
        self._loaded = False

    def __len__(self) -> int:
        return len(self._documents)

    def get(self, trigger_id: str) -> TriggerDocument | None:
        return self._documents.get(trigger_id)

    def candidates(self, event_type: str) -> tuple[str, ...]:
        """The index entries whose pattern matches `event_type`, in order; remembered per
        type until the next change. Safe to call from another thread than the one that
        applies changes: a change swaps in a new memo only after the index has changed,
        so what a reader computed meanwhile lands in the memo being thrown away."""
        memo = self._candidates
        found = memo.get(event_type)
        if found is None:
            found = tuple(sorted(self.event_patterns.candidates(event_type)))
            if len(memo) < CANDIDATE_TYPES_KEPT:
                memo[event_type] = found
        return found

    def condition(self, trigger_id: str) -> Condition:
        """The parsed condition of an event trigger (parsed once, when it is applied)."""
        return self._conditions.get(trigger_id) or Condition()

    def webhook_route(self, path: str) -> dict[str, str]:
        """Enabled webhook triggers answering at `path`, by method: the custom endpoint,
        or `/webhooks/{trigger_id}`."""
        path = path.rstrip("/") or "/"
        found = dict(self._endpoints.get(path, {}))
        if not found and path.startswith("/webhooks/") and path.count("/") == 2:
            document = self._documents.get(path.removeprefix("/webhooks/"))
            if document is not None and document.enabled and document.webhook is not None:
                found[document.webhook.method] = document.trigger_id
        return found

    def documents(self) -> list[TriggerDocument]:
        return list(self._documents.values())

    def apply(self, key: bytes | str | None, value: bytes | None) -> None:
        """Apply one `trigger-definitions` record; a bad one is logged and ignored
        (the CLI and API validate before writing, so it can only come from elsewhere)."""
        try:
            trigger_id = key.decode() if isinstance(key, bytes) else key
        except UnicodeDecodeError:
            trigger_id = None
        if not trigger_id:
            log.error("ignoring a trigger-definitions record without a UTF-8 key (the trigger id)")
            return
        self._invalid.pop(trigger_id, None)
        if value is None:
            self._remove(trigger_id)
            return
        try:
            document = parse_document(orjson.loads(value), f"trigger-definitions[{trigger_id}]")
        except (orjson.JSONDecodeError, DefinitionError, RecursionError) as exc:
            if self._loaded:
                _ignoring(trigger_id, str(exc))
            else:
                self._invalid[trigger_id] = str(exc)
            self._remove(trigger_id)
            return
        self.put(document.model_copy(update={"id": trigger_id}))

    def loaded(self) -> None:
        """The topic's first read reached its end: log each definition ignored as invalid
        then, and from now on each as it comes."""
        if self._loaded:
            return
        self._loaded = True
        for trigger_id, reason in self._invalid.items():
            _ignoring(trigger_id, reason)
        self._invalid = {}

    def put(self, document: TriggerDocument) -> None:
        self.version += 1
        trigger_id = document.trigger_id
        self._remove(trigger_id)
        endpoint = endpoint_of(document)
        if document.enabled and document.type is TriggerType.WEBHOOK and endpoint is not None:
            method, path = endpoint
            self._endpoints.setdefault(path, {})[method] = trigger_id
        if document.enabled and document.type is TriggerType.EVENT and document.event:
            try:
                self._conditions[trigger_id] = parse_condition(document.event.condition, "")
                self.event_patterns.add(trigger_id, document.event.pattern)
                follow = document.event.followed_by or document.event.not_followed_by
                if follow is not None:
                    self.event_patterns.add(trigger_id + SECOND_ROLE, follow.pattern)
            except (ValueError, ConditionError) as exc:
                log.error("trigger %s: %s", trigger_id, exc, extra=about(trigger_id))
                self._conditions.pop(trigger_id, None)
        # The document last: a matcher thread that finds it finds its condition too.
        self._documents[trigger_id] = document
        self._candidates = {}
        self.plans = {}

    def _remove(self, trigger_id: str) -> None:
        self.version += 1
        previous = self._documents.pop(trigger_id, None)
        endpoint = endpoint_of(previous) if previous is not None else None
        if (
            endpoint is not None
            and self._endpoints.get(endpoint[1], {}).get(endpoint[0]) == trigger_id
        ):
            del self._endpoints[endpoint[1]][endpoint[0]]
            if not self._endpoints[endpoint[1]]:
                del self._endpoints[endpoint[1]]
        self._conditions.pop(trigger_id, None)
        self.event_patterns.remove(trigger_id)
        self.event_patterns.remove(trigger_id + SECOND_ROLE)
        self._candidates = {}
        self.plans = {}
