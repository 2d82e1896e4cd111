"""Sequence, absence and debounce patterns, per (trigger, key): pure state machines.

    followed_by      "A then B within T":        fires when a B is at most T after an
                                                 A with the same key (one fire per A and
                                                 per B), whichever of the two came first.
    not_followed_by  "A not followed by B in T": fires when T passes after an A (its
                                                 event time + T, against the clock) with
                                                 no B of the same key in between, whether
                                                 that B came before the A or after it.
    debounce         fires once the key has been quiet for `quiet` (or `max_wait` after
                                                 its first event), handing over the
                                                 burst's events (at most `max_events`).

State is a typed record (state.py: SequenceState, DebounceState), updated in place;
every event is deduplicated by its key (source + id). Past fires are not remembered: the
state commits with the fires it made and the input offsets, so a crash's replay meets the
state as it was before the event and makes the same fire again, with the same execution
id (earlier versions kept the last 20 fires, every event of each, in the key's record).
What a key holds is bounded in bytes, so its record stays under the broker's limit: the
As and Bs a sequence keeps (SEQUENCE_WHOLE_MAX_BYTES, SEQUENCE_KEPT_MAX_BYTES) and a
debounce's burst (DEBOUNCE_KEPT_MAX_BYTES). Allowed lateness is a sequence's `within`:
a key keeps its newest event time, and an A more than `within` older is `late`.
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
"""The most events (As waiting for a B, Bs kept for an A) a sequence key holds: past
it, the oldest by event time is pushed out."""
SEQUENCE_WHOLE_MAX_BYTES = 384 * 1024
"""The most JSON of the events a sequence key keeps whole. An A (or B) past it is kept
with its attributes only (`data_left_out`), so its fire still says which event it was."""
SEQUENCE_KEPT_MAX_BYTES = 512 * 1024
"""The most JSON of the events a sequence key keeps in all: past it (or past MAX_PENDING
events) the oldest are pushed out. With `seen` (at most SEEN_KEPT keys of at most 48
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


def on_first_followed(
    state: SequenceState, within: float, event_key: str, time: float, summary: dict[str, Any]
) -> tuple[str, PatternFire | None]:
    """An A of a `followed_by`: it pairs with the oldest B that came before it, at most
    `within` after it (`fired`), or waits (`_wait`), or is `duplicate` or `late`."""
    outcome = _first_taken(state, within, event_key, time, 2 * within)
    if outcome is not None:
        return outcome, None
    found = _answer(state, within, time)
    if found is not None:
        [then] = _take(state, state.answers, found, found + 1)
        return "fired", _paired(PatternEvent(time, event_key, summary), then)
    return _wait(state, event_key, time, summary), None


def on_first_absence(
    state: SequenceState, within: float, event_key: str, time: float, summary: dict[str, Any]
) -> str:
    """An A of a `not_followed_by`: `answered` when a B that came before it is at most
    `within` after it, else it waits (`_wait`), or is `duplicate` or `late`."""
    outcome = _first_taken(state, within, event_key, time, None)
    if outcome is not None:
        return outcome
    if _answer(state, within, time) is not None:
        return "answered"
    return _wait(state, event_key, time, summary)


def _answer(state: SequenceState, within: float, time: float) -> int | None:
    """Where the oldest B kept for an A at `time` is (at most `within` after it), if any."""
    answers = state.answers
    found = _at(answers, time)
    return found if found < len(answers) and answers[found].time <= time + within else None


def _first_taken(
    state: SequenceState, within: float, event_key: str, time: float, keep_as: float | None
) -> str | None:
    """`duplicate` (taken before) or `late` (more than `within` older than the key's
    newest event: the Bs that could answer it are no longer kept) for an A that goes no
    further; else None, with the key's newest event time moved on and what is now too
    old for it let go."""
    if _seen(state, event_key):
        return "duplicate"
    if _late(state, within, time):
        return "late"
    _newest(state, within, time, keep_as)
    return None


def _late(state: SequenceState, within: float, time: float) -> bool:
    """Whether an event at `time` is more than `within` older than the key's newest."""
    return state.latest is not None and time < state.latest - within


def _newest(state: SequenceState, within: float, time: float, keep_as: float | None) -> None:
    """The key saw an event at `time`: the newest moves on, and the Bs too old to answer
    an A that is not late go (and a `followed_by`'s As too old for a B that is not late:
    `keep_as` behind the newest)."""
    latest = state.latest
    if latest is not None and time <= latest:
        return
    state.latest = time
    _take(state, state.answers, 0, _at(state.answers, time - within))
    if keep_as is not None:
        _take(state, state.pending, 0, _at(state.pending, time - keep_as))


def _wait(state: SequenceState, event_key: str, time: float, summary: dict[str, Any]) -> str:
    """The A waits for its B, in order of event time: `first`, `first_without_data` (it
    waits without its data: the key's events hold SEQUENCE_WHOLE_MAX_BYTES) or
    `pushed_out` (the oldest events made room for it)."""
    return _keep(state, state.pending, PatternEvent(time, event_key, summary), "first")


def _keep(
    state: SequenceState, entries: list[PatternEvent], entry: PatternEvent, outcome: str
) -> str:
    """`entry` kept among the As or Bs waiting (`entries`), whole while the key's events
    hold SEQUENCE_WHOLE_MAX_BYTES or less, without its data past that
    (`<outcome>_without_data`); past MAX_PENDING events or SEQUENCE_KEPT_MAX_BYTES the
    oldest of them by event time are pushed out (`pushed_out`)."""
    kept = state.kept_bytes
    if kept is None:  # a state from before this was measured
        kept = sum(_size(p.summary) for p in (*state.pending, *state.answers))
    size = _size(entry.summary)
    if kept + size > SEQUENCE_WHOLE_MAX_BYTES:
        entry = entry._replace(summary=_without_data(entry.summary))
        size, outcome = _size(entry.summary), f"{outcome}_without_data"
    bisect.insort(entries, entry, key=event_time)
    state.kept_bytes = kept + size
    pending, answers = state.pending, state.answers
    pushed = False
    while len(pending) + len(answers) > 1 and (
        len(pending) + len(answers) > MAX_PENDING or state.kept_bytes > SEQUENCE_KEPT_MAX_BYTES
    ):
        older = (
            pending if not answers or (pending and pending[0].time <= answers[0].time) else answers
        )
        _take(state, older, 0, 1)
        pushed = True
    return "pushed_out" if pushed else outcome


def _take(
    state: SequenceState, entries: list[PatternEvent], start: int, stop: int
) -> list[PatternEvent]:
    """entries[start:stop] (the waiting As or Bs), out of the list, and their bytes out
    of `kept_bytes`."""
    taken = entries[start:stop]
    if taken:
        del entries[start:stop]
        if state.kept_bytes is not None:
            state.kept_bytes -= sum(_size(entry.summary) for entry in taken)
    return taken


def _at(entries: list[PatternEvent], time: float, after: bool = False) -> int:
    """Where `time` goes among the waiting As or Bs (after those at that very time if
    `after`)."""
    find = bisect.bisect_right if after else bisect.bisect_left
    return find(entries, time, key=event_time)


def _paired(first: PatternEvent, then: PatternEvent) -> PatternFire:
    """A `followed_by`'s fire: its execution id derives from the B (each B pairs once)."""
    details = {
        "first": first.summary,
        "then": then.summary,
        # Event times are seconds since the epoch: their difference is exact to
        # about 1e-7 s only, so it is given to the microsecond events carry.
        "seconds_between": round(then.time - first.time, 6),
    }
    return PatternFire(then.key, details)


def on_second_followed(
    state: SequenceState, within: float, event_key: str, time: float, summary: dict[str, Any]
) -> PatternFire | None:
    """A B event for `followed_by`: pairs with the oldest A at most `within` before it;
    with none, it waits for an A that comes after it (an A's events may reach the key
    after its B: from another partition, or another producer), unless it is more than
    `within` older than the key's newest event (late). As wait in order of event time,
    so its A is found by bisection (a pass over every A waiting, for every B, cost a key
    with 1,000 As waiting 80 µs a B)."""
    if _seen(state, event_key):
        return None
    _newest(state, within, time, 2 * within)
    pending = state.pending
    found = _at(pending, time - within)
    if found < len(pending) and pending[found].time <= time:
        [first] = _take(state, pending, found, found + 1)
        state.fires = []
        return _paired(first, PatternEvent(time, event_key, summary))
    if not _late(state, within, time):
        _keep(state, state.answers, PatternEvent(time, event_key, summary), "second")
    return None


def on_second_absence(state: SequenceState, within: float, event_key: str, time: float) -> None:
    """A B event for `not_followed_by`: answers every A of the key within `within` before
    it, and (its time only) any that comes after it, unless it is late."""
    if _seen(state, event_key):
        return
    _newest(state, within, time, None)
    pending = state.pending
    _take(state, pending, _at(pending, time - within), _at(pending, time, after=True))
    if not _late(state, within, time):
        _keep(state, state.answers, PatternEvent(time, event_key, {}), "second")


def on_tick_absence(state: SequenceState, within: float, now: float) -> list[PatternFire]:
    """As whose time ran out unanswered."""
    fires = [
        PatternFire(first.key, {"first": first.summary, "deadline": iso_time(first.time + within)})
        for first in _take(state, state.pending, 0, _at(state.pending, now - within, after=True))
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
