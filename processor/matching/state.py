"""The state a stateful trigger keeps per key, as typed records, and the one place that
knows how they are keyed, encoded and stored.

A key is a (trigger, group) pair: the group is what `group_by` (or a pattern's `key`)
gives for an event, "" when there is none. Its state is one of three records, chosen by
the trigger's kind:

    WindowState    threshold windows (windows.py): events not yet counted, the ids a
                   fire counted, the newest event time, the last fire's window end
    SequenceState  followed_by / not_followed_by (sequences.py): the As waiting for
                   their B, the Bs kept for As that come after them, how many bytes
                   they take, the keys seen, the newest event time
    DebounceState  debounce (sequences.py): the burst so far and when it began and was
                   last added to

Where it lives and how it is written:

    trigger-matches[p]        key   StateKey.encode(): b"<trigger id>\\x1f<group>"
    trigger-window-state[p]   key   the same (compacted; same partition p)
                              value encode(): {"kind", "state", "deadline"} as JSON,
                                    null when the key's state is gone
    <data dir>/<app id>/window-state   the worker's RocksDB copy (local_state.py)

Records written before `kind` was part of the value are read by their fields.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from processor import topics
from processor.config import Settings
from processor.errors import TriggersError
from processor.kafka.clients import partition_of
from processor.kafka.reader import read_to_end, topic_partitions

SEPARATOR = "\x1f"
LOCAL_STORE = "window-state"
"""The directory of the worker's local copy, under its data directory and app id."""


class StateKey(NamedTuple):
    trigger_id: str
    group: str = ""

    def encode(self) -> bytes:
        return f"{self.trigger_id}{SEPARATOR}{self.group}".encode()

    def __str__(self) -> str:
        return f"{self.trigger_id}{SEPARATOR}{self.group}"

    @classmethod
    def parse(cls, key: bytes | str) -> StateKey:
        text = key.decode() if isinstance(key, bytes) else key
        return cls._make(text.partition(SEPARATOR)[::2])  # a restore parses millions


class PendingEvent(NamedTuple):
    """An event in a window, not yet counted by a fire."""

    time: float
    """Event time, seconds since the epoch."""
    id: str
    """source + id: what dedupes it."""
    value: float | None
    """The aggregated field's value, if the trigger aggregates."""
    summary: dict[str, Any] | None
    """The bounded summary a fire's sample shows; None once SAMPLE_KEPT newer events are
    pending (windows.py)."""


event_time = operator.itemgetter(0)
"""A PendingEvent's or PatternEvent's time (a sort or bisection key, in C)."""


class PatternEvent(NamedTuple):
    """An event a pattern holds: an A waiting for its B, or one of a debounced burst."""

    time: float
    """Event time (sequences) or when it was seen (debounce), seconds since the epoch."""
    key: str
    """source + id."""
    summary: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PatternFire:
    """A pattern's fire, remembered so that a replayed event returns the same one."""

    cause_key: str
    """Event key the execution id derives from (the B, the unanswered A, or the burst's first)."""
    details: dict[str, Any]


@dataclass(slots=True)
class WindowState:
    pending: list[PendingEvent] = field(default_factory=list)
    """By time; at most windows.MAX_PENDING."""
    consumed: dict[str, float] = field(default_factory=dict)
    """Id -> time of the events fires counted: the newest windows.MAX_CONSUMED, none a
    window or more behind `latest`, oldest first."""
    latest: float | None = None
    """The newest event time seen for the key."""
    last_fire_end: float | None = None
    """The end of the latest window that fired (what `cooldown` counts from)."""
    pending_ids: set[str] | None = field(default=None, repr=False, compare=False)
    """The ids in `pending`, once it holds more than windows.SCAN_MAX (a duplicate check
    by set instead of a pass over them); made again when needed, never written."""


@dataclass(slots=True)
class SequenceState:
    pending: list[PatternEvent] = field(default_factory=list)
    """The As not yet paired or answered, in order of event time; at most
    sequences.MAX_PENDING."""
    seen: list[str] = field(default_factory=list)
    """Keys of the events already taken, newest last (dedupe)."""
    fires: list[PatternFire] = field(default_factory=list)
    """Empty once the key fires again: versions before kept its last 20 fires here, the
    events of each (sequences.py)."""
    kept_bytes: int | None = None
    """The JSON size of the summaries in `pending` and `answers` (None: not yet measured,
    in a state of a version before it)."""
    answers: list[PatternEvent] = field(default_factory=list)
    """The Bs kept for As that come after them, in order of event time: a `followed_by`'s
    Bs that paired with no A, every B of a `not_followed_by` (its time and key); none
    more than the pattern's `within` older than `latest`. With `pending`, at most
    sequences.MAX_PENDING."""
    latest: float | None = None
    """The newest event time seen for the key (what lateness counts from)."""
    seen_keys: set[str] | None = field(default=None, repr=False, compare=False)
    """The keys in `seen`, once it holds more than sequences.SCAN_MAX (a repeat found by
    set instead of a pass over up to 2,000 keys); made again when needed, never written."""


@dataclass(slots=True)
class DebounceState:
    pending: list[PatternEvent] = field(default_factory=list)
    """The burst so far; at most the trigger's `max_events`."""
    seen: list[str] = field(default_factory=list)
    fires: list[PatternFire] = field(default_factory=list)
    """Always empty now (a debounce's fire comes from a tick, not an event a replay could
    repeat); versions before kept its last fires here, every event of each."""
    first_seen: float | None = None
    """When the burst's first event was seen (what `max_wait` counts from)."""
    last_seen: float | None = None
    """When its latest event was seen (what `quiet` counts from)."""
    dropped: int = 0
    """Events of the burst beyond `max_events` or sequences.DEBOUNCE_KEPT_MAX_BYTES:
    counted, not kept."""
    kept_bytes: int | None = None
    """The JSON size of the summaries in `pending` (None: not yet measured, in a state
    of a version before it)."""
    seen_keys: set[str] | None = field(default=None, repr=False, compare=False)
    """As SequenceState's: never written."""


KeyState = WindowState | SequenceState | DebounceState

_KINDS: dict[str, type[KeyState]] = {
    "window": WindowState,
    "sequence": SequenceState,
    "debounce": DebounceState,
}
_KIND_OF = {kind: name for name, kind in _KINDS.items()}


def _as_array(value: Any) -> Any:
    if isinstance(value, tuple):  # PendingEvent, PatternEvent
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


_WRITTEN = {
    kind: tuple(
        name for name in kind.__dataclass_fields__ if name not in ("pending_ids", "seen_keys")
    )
    for kind in _KINDS.values()
}
"""Each kind's fields as written: all but the indexes made from them."""


def encode(state: KeyState, deadline: float | None) -> bytes:
    kind = type(state)
    fields = {name: getattr(state, name) for name in _WRITTEN[kind]}
    return orjson.dumps(
        {"kind": _KIND_OF[kind], "state": fields, "deadline": deadline}, default=_as_array
    )


WINDOW_RECORD = b'{"kind":"window",'
"""How every window's record begins (`is_window_record`)."""


def is_window_record(value: bytes) -> bool:
    """Whether a record (as `encode` writes it) holds a WindowState, without reading it:
    a window's deadline is always null, so a restore can keep its record as it is until
    the key is next used (most keys of a large state are not, for a while)."""
    return value.startswith(WINDOW_RECORD)


def decode(value: bytes) -> tuple[KeyState, float | None]:
    """A changelog record's state and deadline (when `on_tick` next has work for it)."""
    found = orjson.loads(value)
    fields = found["state"]
    kind = found.get("kind") or _kind_by_fields(fields)
    state: KeyState
    if kind == "window":
        state = WindowState(
            [PendingEvent._make(p) for p in fields["pending"]],
            fields["consumed"],
            fields["latest"],
            fields["last_fire_end"],
        )
    else:
        pending = [PatternEvent._make(p) for p in fields["pending"]]
        fires = [PatternFire(f["cause_key"], f["details"]) for f in fields["fires"]]
        if kind == "debounce":
            state = DebounceState(
                pending,
                fields["seen"],
                fires,
                fields.get("first_seen"),
                fields.get("last_seen"),
                fields.get("dropped", 0),
                fields.get("kept_bytes"),
            )
        else:
            # in order of event time (versions before kept them as they came)
            pending.sort(key=event_time)
            state = SequenceState(
                pending,
                fields["seen"],
                fires,
                fields.get("kept_bytes"),
                [PatternEvent._make(p) for p in fields.get("answers", ())],
                fields.get("latest"),
            )
    return state, found.get("deadline")


def _kind_by_fields(fields: dict[str, Any]) -> str:
    if "consumed" in fields:
        return "window"
    return "debounce" if "first_seen" in fields else "sequence"


def changelog_topic(settings: Settings) -> str:
    return topics.topic_name(topics.WINDOW_STATE, settings)


def local_store(settings: Settings) -> Path:
    return settings.data_dir / settings.app_id / LOCAL_STORE


def committed_states_of(settings: Settings, keys: Iterable[StateKey]) -> dict[StateKey, KeyState]:
    """The committed state of these keys only (`triggers explain`'s): the changelog
    partitions that hold them (each key's `trigger-matches` partition) are read, and only
    their records decoded, whatever else the changelog holds (a million keys took a read
    and a decode of every one for each explain)."""
    wanted = {key.encode(): key for key in keys}
    if not wanted:
        return {}
    try:
        count = len(topic_partitions(settings, topics.topic_name(topics.TRIGGER_MATCHES, settings)))
    except TriggersError:
        return {}
    return _committed(settings, wanted.get, sorted({partition_of(raw, count) for raw in wanted}))


def committed_states(settings: Settings) -> dict[StateKey, KeyState]:
    """Every key's state as committed to the changelog (empty when the topic does not
    exist): what the chaos verifier reads, so no worker is asked."""
    return _committed(settings, StateKey.parse)


def _committed(
    settings: Settings,
    key_of: Callable[[bytes], StateKey | None],
    partitions: list[int] | None = None,
) -> dict[StateKey, KeyState]:
    """The latest committed state of each key `key_of` names (None: skipped, not
    decoded) in these changelog partitions (all when None)."""
    states: dict[StateKey, KeyState] = {}
    try:
        for message in read_to_end(settings, changelog_topic(settings), partitions):
            key = key_of(message.key() or b"")
            if key is None:
                continue
            value = message.value()
            if value is None:
                states.pop(key, None)
            else:
                states[key] = decode(value)[0]
    except TriggersError:
        return {}
    return states
