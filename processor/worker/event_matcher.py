"""The event path as a transactional batch loop (confluent-kafka), not Faust agents.

Events are most of what a worker reads, and Faust hands them over one `await` at a
time (a no-op Faust agent reads about 0.085x what a confluent-kafka consumer reads on
the same topic). Here one consumer reads a batch of events and window matches; events
are decoded and matched in a tight loop, matches update the window state of their key
in memory (window_state.py), and the batch's fires, new matches, dead letters, one
state record per changed key and the input offsets commit in one transaction
(TransactionalLoop). A worker killed mid-batch leaves nothing a `read_committed`
reader sees; the batch is read again against the state as of the last commit, and
makes the same output once.

    events (+ TRIGGERS_EVENT_TOPICS) ─► decode, match_event ─┬─► trigger-fires
                                                             ├─► trigger-matches ─┐
                                                             └─► dead letters     │
    trigger-matches (key trigger+group) ◄─────────────────────────────────────────┘
      └─► WindowPartitions.observe_all ─┬─► trigger-fires
                                        └─► trigger-window-state (once per key per batch)

A match whose key's `trigger-matches` partition this worker owns updates its window at
once, in the same transaction; any other makes one hop through `trigger-matches`, so
that all events of a window key meet in one partition whatever partition of `events`
they came from. After each commit the state records it wrote go to the worker's local
copy (local_state.py), from which a restart restores before reading the topic's tail.
Events no trigger's pattern can match are passed over once their `type` is read, and
events every candidate turns away on their JSON once that is seen; the candidates that
take an event are judged once, on its JSON when it tells (`judged_on_json`).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from pydantic import ValidationError

from processor import topics
from processor.config import Settings
from processor.deadletters import dead_letter, dead_letter_for, oversized_fire
from processor.definitions.registry import Registry
from processor.errors import BadRecord
from processor.kafka.clients import new_consumer, partition_of
from processor.kafka.reader import read_to_end, wait_until_no_open_transactions
from processor.kafka.transactional import TransactionalLoop, Turn
from processor.matching.decode import (
    event_type,
    header_pairs,
    plain_event_type,
    read_event,
    structured_body,
)
from processor.matching.events import (
    Matched,
    counts_by_event_time,
    judged_on_json,
    match_event,
    taken_by,
    too_far_ahead,
)
from processor.matching.fires import EncodedFire, encoded
from processor.matching.state import StateKey, changelog_topic, local_store
from processor.matching.window_state import MAX_STATE_BYTES, WindowPartitions
from processor.messages import FIRE_MAX_BYTES, WindowMatch
from processor.metrics import (
    EVENT_TO_FIRE,
    EVENTS,
    FIRES,
    MATCH_VERDICTS,
    MATCHES_IN_PLACE,
    OVERSIZED_STATES,
    READ_BEHIND,
    STATE_KEYS,
    STATE_KEYS_FORGOTTEN,
    WINDOW_OUTCOMES,
    observe_all,
    trigger_label,
)
from processor.serde import from_json, to_json
from processor.worker.local_state import LocalWindowStore

log = logging.getLogger(__name__)
COMPONENT = "event-matcher"
WINDOW_COMPONENT = "window-evaluator"
BATCH_SIZE = 10000
TICK_SECONDS = 1.0
"""How often absence and debounce deadlines are checked."""
RESTORE_WAIT_SECONDS = 10.0
PARTITIONS_KEPT = 100_000
Windowed = dict[tuple[int, StateKey], list[Matched]]
"""A batch's window matches by (`trigger-matches` partition, key), in their order: each
key's are then decided together (`WindowPartitions.observe_all`), its trigger looked up
and its state read and marked changed once."""


class EventMatcher(TransactionalLoop):
    """Matching is stateless; the window state of each owned `trigger-matches` partition
    is restored from `trigger-window-state` when the partition is assigned."""

    name = COMPONENT
    batch_size = BATCH_SIZE
    periodic_seconds = TICK_SECONDS

    def __init__(
        self, settings: Settings, registry: Registry, definitions_ready: threading.Event
    ) -> None:
        self.matches_topic = topics.topic_name(topics.TRIGGER_MATCHES, settings)
        inputs = [
            topics.topic_name(topics.EVENTS, settings),
            *settings.event_topics,
            self.matches_topic,
        ]
        super().__init__(settings, f"{settings.app_id}-matcher", inputs)
        self.paced_by = frozenset(inputs) - {self.matches_topic}
        self.registry = registry
        self.definitions_ready = definitions_ready
        self.fires_topic = topics.topic_name(topics.TRIGGER_FIRES, settings)
        self.state_topic = changelog_topic(settings)
        self.dead_letters_topic = topics.topic_name(topics.DEAD_LETTERS, settings)
        self.data_max_bytes = settings.event_data_max_bytes
        self.windows = WindowPartitions(max_ahead=settings.event_time_max_ahead_seconds)
        self.owned_matches: set[int] = set()
        """The `trigger-matches` partitions this member owns (their windows are here)."""
        self.matches_partitions = 0
        self._routes: dict[tuple[str, str], tuple[bytes, tuple[int, StateKey]]] = {}
        """Per (trigger, group) seen: its state key encoded, and its place in a batch's
        `Windowed`: its `trigger-matches` partition (murmur2 is slow) and its state key."""
        self._fires: Counter[str] = Counter()
        """Window fires of this transaction by cause, counted once per checkpoint."""
        self.local: LocalWindowStore | None = LocalWindowStore(local_store(settings))
        """The state's copy on this worker's disk (None if it failed: then the topic alone)."""
        self._unsaved: list[tuple[int, bytes, bytes | None]] = []
        """State records of the turn being handled, for the local store once it commits."""
        self._peek = True
        """Whether a batch's events have their `type` read alone first (`plain_event_type`),
        so that those no pattern matches are passed over without parsing the rest: set
        when most of the last batch's events had no candidate. Where most have one (a
        topic of errors the Error Handler reads) that first read is wasted: each event
        is parsed at once instead."""
        self._sealed: list[tuple[int, bytes, bytes | None]] = []
        """State records of the transaction committing."""
        self._reached: dict[int, int] = {}
        """Per partition, the changelog offset after the committing transaction's last record."""

    def before_start(self) -> bool:
        """A matcher running before the definitions are loaded would miss triggers."""
        while not self.definitions_ready.wait(0.5):
            if self.stopping:
                return False
        return True

    def handle(self, messages: list[Message], producer: Turn) -> None:
        matches_topic = self.matches_topic
        windowed: Windowed = {}
        events = [m for m in messages if m.topic() != matches_topic]
        if events:
            self._match(events, windowed, producer)
        if len(events) != len(messages):
            for message in messages:
                if message.topic() == matches_topic:
                    self._gather(message, windowed, producer)
        now = time.time()
        observe = self.windows.observe_encoded
        for (partition, state_key), matches in windowed.items():
            self._send(observe(self.registry, partition, state_key, matches, now), producer)

    def periodic(self, producer: Turn) -> None:
        """Absence and debounce fire when time passes, without an event, once the events
        have been read up to that time (`read_through`: after a restart with a backlog,
        an order's deadline had passed on the clock while its payment was still to be
        read, and it was reminded); keys no event has reached for their idle time are
        forgotten (their tombstones go with this turn's checkpoint)."""
        now = time.time()
        READ_BEHIND.set(now - self.read_through)  # set just before, never past the clock
        fires = self.windows.expire(self.registry, self.read_through)
        self._send([encoded(fire) for fire in fires], producer)
        forgotten = self.windows.forget_idle(self.registry, now, self.settings.state_idle_seconds)
        if forgotten:
            STATE_KEYS_FORGOTTEN.inc(forgotten)
        STATE_KEYS.set(self.windows.keys())

    def _gather(self, message: Message, windowed: Windowed, producer: Turn) -> None:
        """A match read from `trigger-matches` joins its key's matches of the batch."""
        try:
            match = Matched.of(from_json(WindowMatch, message.value() or b""))
        except (ValidationError, ValueError) as exc:
            self._dead_letter(message, f"not a window match: {exc}", producer, WINDOW_COMPONENT)
            return
        key = StateKey(match.trigger_id, match.group)
        windowed.setdefault((message.partition() or 0, key), []).append(match)

    def _route(self, match: Matched, windowed: Windowed, producer: Turn) -> bool:
        """A match goes to the window of its key: in place when this worker owns that
        key's `trigger-matches` partition (it joins its key's matches of the batch, and
        the state and the input offsets then commit in this one transaction), through the
        topic otherwise. True when in place."""
        route = self._routes.get((match.trigger_id, match.group))
        if route is None:
            state_key = StateKey(match.trigger_id, match.group)
            key = state_key.encode()
            count = self.matches_partitions
            route = (key, (partition_of(key, count) if count else -1, state_key))
            if len(self._routes) >= PARTITIONS_KEPT:
                self._routes.clear()
            self._routes[state_key] = route
        key, where = route
        if where[0] in self.owned_matches:
            found = windowed.get(where)
            if found is None:
                windowed[where] = [match]
            else:
                found.append(match)
            return True
        producer.produce(self.matches_topic, key=key, value=to_json(match.message()))
        return False

    def _send(self, fires: list[EncodedFire], producer: Turn) -> None:
        for trigger_id, cause_type, value in fires:
            if len(value) > FIRE_MAX_BYTES:
                self._oversized(trigger_id, value, producer)
                continue
            producer.produce(self.fires_topic, key=trigger_id.encode(), value=value)
            self._fires[cause_type] += 1

    def _oversized(self, trigger_id: str, value: bytes, producer: Turn) -> None:
        """A fire the broker could refuse, and the transaction with it at every try: a
        dead letter holding the fire whole instead."""
        reason, letter_key, letter = oversized_fire(self.fires_topic, trigger_id, value, COMPONENT)
        log.warning("%s", reason)
        producer.produce(self.dead_letters_topic, key=letter_key, value=letter)

    def checkpoint(self, producer: Turn) -> None:
        """One record per key changed in this transaction (write-behind), and the
        turn's outcome counts. Once per transaction, not per batch: below full load a
        turn takes in a batch per millisecond poll while the last commit runs, and a
        record for each wrote the same key a dozen times a turn (70-100 µs each)."""
        records, oversized = self.windows.changelog()
        for partition, key, value in records:
            producer.produce(
                self.state_topic,
                key=key,
                value=value,
                partition=partition,
                on_delivery=self._delivered,
            )
        self._unsaved += records
        for grown in oversized:
            reason = (
                f"window state of trigger {grown.key.trigger_id!r}, group "
                f"{grown.key.group!r} reached {grown.size} bytes (limit {MAX_STATE_BYTES}); "
                "it starts afresh"
            )
            log.warning("%s", reason)
            OVERSIZED_STATES.inc()
            letter_key, letter = dead_letter(
                topic=self.state_topic,
                partition=0,
                offset=-1,
                key=grown.key.encode(),
                value=None,
                error=reason,
                component=WINDOW_COMPONENT,
            )
            producer.produce(self.dead_letters_topic, key=letter_key, value=letter)
        for outcome, count in self.windows.take_outcomes().items():
            WINDOW_OUTCOMES.labels(outcome).inc(count)
        for cause, count in self._fires.items():
            FIRES.labels(cause).inc(count)
        self._fires.clear()

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            partition, offset = message.partition() or 0, message.offset() or 0
            self._reached[partition] = max(self._reached.get(partition, 0), offset + 1)

    def sealed(self) -> None:
        self._sealed, self._unsaved = self._unsaved, []

    def after_commit(self, producer: Producer) -> None:
        """The committed state records go to the local store, with the offsets reached
        (delivery reports come with the commit's flush; poll serves any left)."""
        producer.poll(0)
        records, reached = self._sealed, self._reached
        self._sealed, self._reached = [], {}
        if self.local is not None and (records or reached):
            try:
                self.local.write(records, reached)
            except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
                # (a full or broken disk): the topic still has it all
                self._local_failed(exc)

    def after_abort(self) -> None:
        self._unsaved, self._sealed, self._reached = [], [], {}

    def _local_failed(self, exc: Exception) -> None:
        log.warning(
            "local window state at %s failed (%s); restoring from %s only from now on",
            self.local.path if self.local else "?",
            exc,
            self.state_topic,
        )
        if self.local is not None:
            self.local.close()
        self.local = None

    def restore(self, partitions: list[TopicPartition]) -> None:
        owned = sorted({tp.partition for tp in partitions if tp.topic == self.matches_topic})
        if not owned:
            return
        self.owned_matches.update(owned)
        # A predecessor killed mid-transaction leaves it open until the broker aborts it;
        # reading before then would miss what it had committed after that.
        while not wait_until_no_open_transactions(
            self.settings, self.state_topic, owned, RESTORE_WAIT_SECONDS
        ):
            if self.stopping:
                return
            log.warning("window state %s: waiting for a stopped worker's transaction", owned)
        started = time.monotonic()
        with collection_paused():
            self.windows.drop(owned)
            local = self._restore_local(owned)
            kept: set[int] = set()
            """Partitions whose local copy is used: read from its offset on."""
            reached: dict[int, int] = {}
            tail: list[tuple[int, bytes, bytes | None]] = []

            def start(partition: int, low: int, high: int) -> int:
                position = None
                if partition in local and self.local is not None:
                    position = self.local.position(partition, low, high)
                if position is None:
                    self.windows.drop([partition])  # from the topic's beginning instead
                    return low
                kept.add(partition)
                return position

            load = self.windows.load
            for message in read_to_end(
                self.settings, self.state_topic, owned, start=start, positions=reached
            ):
                key = message.key()
                if key is not None:
                    partition, value = message.partition() or 0, message.value()
                    load(partition, key, value)
                    tail.append((partition, key, value))
            self._save_restored([p for p in owned if p not in kept], tail, reached)
            self.windows.restored(owned, time.time())
        log.info(
            "window state of partitions %s restored: %d keys from the local store and %d "
            "records of %s in %.1f s",
            owned,
            sum(local[p] for p in kept),
            len(tail),
            self.state_topic,
            time.monotonic() - started,
        )

    def _restore_local(self, owned: list[int]) -> dict[int, int]:
        """Load the local copy of each owned partition that has one; how many keys each."""
        loaded: dict[int, int] = {}
        if self.local is None:
            return loaded
        try:
            for partition in owned:
                if not self.local.has(partition):
                    continue
                loaded[partition] = self.windows.load_all(partition, self.local.records(partition))
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
            self._local_failed(exc)
            self.windows.drop(owned)
            return {}
        return loaded

    def _save_restored(
        self,
        replaced: list[int],
        tail: list[tuple[int, bytes, bytes | None]],
        reached: dict[int, int],
    ) -> None:
        """What was read from the topic joins the local copy: the partitions read from
        their beginning replace theirs, the others get their tail."""
        if self.local is None:
            return
        try:
            for partition in replaced:
                self.local.clear(partition)
            self.local.write(tail, reached)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
            self._local_failed(exc)

    def forget(self, partitions: list[TopicPartition] | None) -> None:
        if partitions is None:
            self.windows.drop(None)
            self.owned_matches.clear()
        else:
            gone = [tp.partition for tp in partitions if tp.topic == self.matches_topic]
            self.windows.drop(gone)
            self.owned_matches.difference_update(gone)

    def _match(self, messages: list[Message], windowed: Windowed, producer: Turn) -> None:
        verdicts: Counter[tuple[str, str]] = Counter()
        passed = dead = fired_events = fires = in_place = 0
        fired_at = time.time()
        max_ahead = self.settings.event_time_max_ahead_seconds
        ahead_of = fired_at + max_ahead
        waits: list[float] = []
        registry = self.registry
        candidates = registry.candidates
        data_max = self.data_max_bytes
        peek, wanted = self._peek, 0
        for message in messages:
            value, headers = message.value(), header_pairs(message.headers())
            if peek:
                type_ = plain_event_type(value, headers)
                if type_ is not None and not candidates(type_):
                    passed += 1  # no pattern matches it: nothing more to check
                    continue
            body = structured_body(value, headers)
            judged = None
            if body is not None:
                type_ = event_type(body)
                if type_ is not None:
                    entries = candidates(type_)
                    if not entries:
                        passed += 1
                        continue
                    wanted += 1
                    judged = judged_on_json(registry, entries, body)
                    if judged is not None:
                        refused, taking = judged
                        if not taking:  # every candidate turns it away on its JSON
                            for refusal in refused:
                                verdicts[refusal] += 1
                            passed += 1
                            continue
            timestamp_type, timestamp_ms = message.timestamp()
            try:
                event = read_event(
                    value,
                    headers,
                    topic=message.topic() or "",
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    timestamp_ms=timestamp_ms if timestamp_type else None,
                    body=body,
                )
            except BadRecord as exc:
                self._dead_letter(message, str(exc), producer)
                dead += 1
                continue
            try:
                if judged is None:
                    matches = match_event(registry, event, data_max_bytes=data_max, encode=True)
                else:  # judged on its JSON: the candidates that take it make their matches
                    for refusal in refused:
                        verdicts[refusal] += 1
                    matches = taken_by(taking, event, data_max, encode=True)
            except Exception as exc:  # this event's doing: it must not stop the worker
                log.exception(
                    "matching the event at %s[%d]@%d failed",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                )
                why = f"its matches could not be made ({type(exc).__name__}: {exc})"
                self._dead_letter(message, why, producer)
                dead += 1
                continue
            if event.time is not None and event.time > ahead_of:
                reason = too_far_ahead(matches, event.time, fired_at, max_ahead)
                if reason is not None:  # the triggers counting by event time do not take it
                    self._dead_letter(message, reason, producer)
                    matches = [m for m in matches if not counts_by_event_time(m)]
                    if not any(m.window is not None or m.encoded is not None for m in matches):
                        dead += 1
                        continue
            fired = 0
            for match in matches:
                verdicts[match.trigger_id, match.verdict] += 1
                if match.window is not None:
                    in_place += self._route(match.window, windowed, producer)
                if match.encoded is not None:
                    trigger_id, _, value = match.encoded
                    if len(value) > FIRE_MAX_BYTES:
                        self._oversized(trigger_id, value, producer)
                        continue
                    producer.produce(self.fires_topic, key=trigger_id.encode(), value=value)
                    fired += 1
            if fired:
                fired_events += 1
                fires += fired
                if timestamp_ms > 0:
                    waits.append(max(0.0, fired_at - timestamp_ms / 1000))
            else:
                passed += 1
        self._peek = 2 * wanted < len(messages)
        self._count(passed, dead, fired_events, fires)
        observe_all(EVENT_TO_FIRE, waits)
        if in_place:
            MATCHES_IN_PLACE.inc(in_place)
        for (trigger_id, verdict), count in verdicts.items():
            MATCH_VERDICTS.labels(trigger_label(trigger_id), verdict).inc(count)

    def _count(self, passed: int, dead: int, fired_events: int, fires: int) -> None:
        """A batch's events by outcome, and its direct fires (one metric update each)."""
        for outcome, count in (("no_fire", passed), ("dead_letter", dead), ("fired", fired_events)):
            if count:
                EVENTS.labels(outcome).inc(count)
        if fires:
            FIRES.labels("event").inc(fires)

    def _dead_letter(
        self, message: Message, reason: str, producer: Turn, component: str = COMPONENT
    ) -> None:
        log.warning(
            "dead letter from %s[%d]@%d: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            reason,
        )
        key, value = dead_letter_for(message, reason, component)
        producer.produce(self.dead_letters_topic, key=key, value=value)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions this group never committed start where the Faust agent that matched
        events before this loop existed (the app's own group) left off, so an upgraded
        deployment does not match its whole history again."""
        if not self.matches_partitions:
            metadata = self.retrying(
                lambda: consumer.list_topics(self.matches_topic, timeout=30).topics
            )
            found = (metadata or {}).get(self.matches_topic)
            self.matches_partitions = len(found.partitions) if found is not None else 0
        # A stable offset fetch also waits for a fenced predecessor's open transaction.
        committed = self.retrying(lambda: consumer.committed(partitions, timeout=60)) or []
        fresh = [tp for tp in committed if tp.offset < 0]
        if fresh:
            legacy = self.retrying(lambda: _committed_by(self.settings, fresh)) or []
            starts = {(tp.topic, tp.partition): tp.offset for tp in legacy if tp.offset >= 0}
            if starts:
                log.info("event matcher starts %d partitions where Faust left off", len(starts))
                for tp in partitions:
                    tp.offset = starts.get((tp.topic, tp.partition), tp.offset)
        self.retrying(lambda: self.restore(partitions))
        consumer.assign(partitions)


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic collector is off while a restore builds window state, and what it
    built is then left out of its reach (`gc.freeze`), as the worker does with what
    start-up loaded. A million keys are millions of objects; with the collector on, the
    collections their allocations set off walked them again and again: two thirds of
    the restore's time in `bench/worker_scale.py`."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


def _committed_by(settings: Settings, partitions: list[TopicPartition]) -> Any:
    """The offsets the app's Faust consumer group committed for these partitions."""
    legacy = new_consumer(settings, settings.app_id)
    try:
        return legacy.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions], 30)
    finally:
        legacy.close()
