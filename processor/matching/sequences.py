"""Sequence, absence and debounce patterns, per (trigger, key): pure state machines.

    followed_by      "A then B within T":        fires when B arrives within T after an
                                                 A with the same key (one fire per A).
    not_followed_by  "A not followed by B in T": fires when T passes after an A (its
                                                 event time + T, against the clock) with
                                                 no B of the same key in between.
    debounce         fires once the key has been quiet for `quiet` (or `max_wait` after
                                                 its first event), handing over the
                                                 burst's events (at most `max_events`).

State is a typed record (state.py: SequenceState, DebounceState), updated in place;
every event is deduplicated by its key (source + id). Past fires are not remembered: the
state commits with the fires it made and the input offsets, so a crash's replay meets the
state as it was before the event and makes the same fire again, with the same execution
id (earlier versions kept the last 20 fires, every event of each, in the key's record).
What a key holds is bounded in bytes, so its record stays under the broker's limit: the
As a sequence waits on (SEQUENCE_WHOLE_MAX_BYTES, SEQUENCE_KEPT_MAX_BYTES) and a
debounce's burst (DEBOUNCE_KEPT_MAX_BYTES).
Absence and debounce need time to pass with no event: the caller also
calls `on_tick` with the clock.
Debounce measures quiet on the processing clock (when events were seen). Times in a
fire's details are ISO 8601 in UTC, as a window fire's `window_start`.
"""

from __future__ import annotations

import bisect
from typing import Any

import orjson

from processor.matching.decode import iso_time
from processor.matching.state import (
    DebounceState,
    PatternEvent,
    PatternFire,
    SequenceState,
    event_time,
)

MAX_PENDING = 1000
"""The most As a sequence key waits on: past it, the oldest is pushed out."""
SEQUENCE_WHOLE_MAX_BYTES = 384 * 1024
"""The most JSON of waiting As a sequence key keeps whole. An A past it waits with its
attributes only (`data_left_out`), so its fire still says which event it was."""
SEQUENCE_KEPT_MAX_BYTES = 512 * 1024
"""The most JSON of waiting As a sequence key keeps in all: past it (or past MAX_PENDING
As) the oldest are pushed out. With `seen` (at most SEEN_KEPT keys of at most 48
characters), a sequence's record stays under window_state.MAX_STATE_BYTES whatever its
events are (hundreds of As of 4 KiB passed it, and the key started afresh)."""
DEBOUNCE_KEPT_MAX_BYTES = 512 * 1024
"""The most JSON of a burst's events a debounce keeps to hand over: the burst is in its
key's state record and in its fire's input, both under the broker's bound on a record.
Events past it are counted in `dropped`, as those past `max_events` are."""


SEEN_KEPT = MAX_PENDING * 2
"""How many of a key's newest event keys it remembers, to take each event once."""
SCAN_MAX = 16
"""Past this many, a repeat is looked for in a set of them (state.seen_keys)."""


def _seen(state: SequenceState | DebounceState, event_key: str) -> bool:
    """Whether the key took this event before; remembers it if not."""
    seen = state.seen
    if len(seen) <= SCAN_MAX:
        if event_key in seen:
            return True
    else:
        index = state.seen_keys
        if index is None:
            index = state.seen_keys = set(seen)
        if event_key in index:
            return True
        index.add(event_key)
    seen.append(event_key)
    if len(seen) > SEEN_KEPT:
        forgotten = seen.pop(0)
        if state.seen_keys is not None:
            state.seen_keys.discard(forgotten)
    return False


def _size(summary: dict[str, Any]) -> int:
    return len(orjson.dumps(summary))


def _without_data(summary: dict[str, Any]) -> dict[str, Any]:
    kept = {name: value for name, value in summary.items() if name not in _DATA_FIELDS}
    kept["data_left_out"] = True
    return kept


_DATA_FIELDS = frozenset(("data", "data_truncated", "data_bytes"))


def on_first(state: SequenceState, event_key: str, time: float, summary: dict[str, Any]) -> str:
    """An A event (followed_by / not_followed_by), and what became of it: `first` (it
    waits), `first_without_data` (it waits without its data: the key's As hold
    SEQUENCE_WHOLE_MAX_BYTES), `pushed_out` (it waits, and the oldest As made room for
    it), or `duplicate` (taken before). The As wait in order of event time."""
    if _seen(state, event_key):
        return "duplicate"
    kept = state.kept_bytes
    if kept is None:  # a state from before this was measured
        kept = sum(_size(p.summary) for p in state.pending)
    size = _size(summary)
    outcome = "first"
    if kept + size > SEQUENCE_WHOLE_MAX_BYTES:
        summary = _without_data(summary)
        size, outcome = _size(summary), "first_without_data"
    pending = state.pending
    bisect.insort(pending, PatternEvent(time, event_key, summary), key=event_time)
    kept += size
    cut = 0
    while cut < len(pending) - 1 and (
        len(pending) - cut > MAX_PENDING or kept > SEQUENCE_KEPT_MAX_BYTES
    ):
        kept -= _size(pending[cut].summary)
        cut += 1
    del pending[:cut]
    state.kept_bytes = kept
    return "pushed_out" if cut else outcome


def _take(state: SequenceState, start: int, stop: int) -> list[PatternEvent]:
    """The waiting As pending[start:stop], out of `pending` (and their bytes out of
    `kept_bytes`)."""
    pending = state.pending
    taken = pending[start:stop]
    if taken:
        del pending[start:stop]
        if state.kept_bytes is not None:
            state.kept_bytes -= sum(_size(first.summary) for first in taken)
    return taken


def _at(state: SequenceState, time: float, after: bool = False) -> int:
    """Where `time` goes among the waiting As (after those at that very time if `after`)."""
    find = bisect.bisect_right if after else bisect.bisect_left
    return find(state.pending, time, key=event_time)


def on_second_followed(
    state: SequenceState, within: float, event_key: str, time: float, summary: dict[str, Any]
) -> PatternFire | None:
    """A B event for `followed_by`: pairs with the oldest A within `within` before it.
    The As older than that go: too old for this B, and for any B after it when Bs come
    in time order (a B that comes late pairs with what is still waiting). As wait in
    order of event time, so both are at the head of the list (a pass over every A
    waiting, for every B, cost a key with 1,000 As waiting 80 µs a B)."""
    if _seen(state, event_key):
        return None
    _take(state, 0, _at(state, time - within))
    pending = state.pending
    if not pending or pending[0].time > time:
        return None
    [first] = _take(state, 0, 1)
    details = {
        "first": first.summary,
        "then": summary,
        # Event times are seconds since the epoch: their difference is exact to
        # about 1e-7 s only, so it is given to the microsecond events carry.
        "seconds_between": round(time - first.time, 6),
    }
    state.fires = []
    return PatternFire(event_key, details)


def on_second_absence(state: SequenceState, within: float, event_key: str, time: float) -> None:
    """A B event for `not_followed_by`: answers every A of the key within `within` before it."""
    if _seen(state, event_key):
        return
    _take(state, _at(state, time - within), _at(state, time, after=True))


def on_tick_absence(state: SequenceState, within: float, now: float) -> list[PatternFire]:
    """As whose time ran out unanswered."""
    fires = [
        PatternFire(first.key, {"first": first.summary, "deadline": iso_time(first.time + within)})
        for first in _take(state, 0, _at(state, now - within, after=True))
    ]
    if fires:
        state.fires = []
    return fires


def absence_deadline(state: SequenceState, within: float) -> float | None:
    """When the first A waiting runs out."""
    return state.pending[0].time + within if state.pending else None


def on_debounced_event(
    state: DebounceState, event_key: str, summary: dict[str, Any], now: float, max_events: int
) -> None:
    if _seen(state, event_key):
        return
    if not state.pending:
        state.first_seen = now
    state.last_seen = now
    if len(state.pending) < max_events:
        kept = state.kept_bytes
        if kept is None:  # a state from before this was measured
            kept = sum(_size(p.summary) for p in state.pending)
        size = _size(summary)
        if not state.pending or kept + size <= DEBOUNCE_KEPT_MAX_BYTES:
            state.pending.append(PatternEvent(now, event_key, summary))
            state.kept_bytes = kept + size
            return
    state.dropped += 1


def debounce_deadline(state: DebounceState, quiet: float, max_wait: float | None) -> float | None:
    if not state.pending or state.last_seen is None:
        return None
    deadline = state.last_seen + quiet
    if max_wait is not None and state.first_seen is not None:
        deadline = min(deadline, state.first_seen + max_wait)
    return float(deadline)


def on_tick_debounce(
    state: DebounceState, quiet: float, max_wait: float | None, now: float
) -> PatternFire | None:
    deadline = debounce_deadline(state, quiet, max_wait)
    if deadline is None or now < deadline:
        return None
    events = [p.summary for p in state.pending]
    events_key = state.pending[0].key
    details = {
        "events": events,
        "count": len(events) + state.dropped,
        "dropped": state.dropped,
        "first_seen": iso_time(now if state.first_seen is None else state.first_seen),
        "last_seen": iso_time(now if state.last_seen is None else state.last_seen),
    }
    state.pending, state.dropped, state.kept_bytes, state.fires = [], 0, 0, []
    return PatternFire(events_key, details)
