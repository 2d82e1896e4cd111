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
Absence and debounce need time to pass with no event: the caller also
calls `on_tick` with the clock.
Debounce measures quiet on the processing clock (when events were seen). Times in a
fire's details are ISO 8601 in UTC, as a window fire's `window_start`.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.matching.decode import iso_time
from processor.matching.state import DebounceState, PatternEvent, PatternFire, SequenceState

MAX_PENDING = 1000
DEBOUNCE_KEPT_MAX_BYTES = 512 * 1024
"""The most JSON of a burst's events a debounce keeps to hand over: the burst is in its
key's state record and in its fire's input, both under the broker's bound on a record.
Events past it are counted in `dropped`, as those past `max_events` are."""


def _seen(state: SequenceState | DebounceState, event_key: str) -> bool:
    if event_key in state.seen:
        return True
    state.seen = [*state.seen, event_key][-MAX_PENDING * 2 :]
    return False


def on_first(state: SequenceState, event_key: str, time: float, summary: dict[str, Any]) -> None:
    """An A event (followed_by / not_followed_by)."""
    if _seen(state, event_key):
        return
    state.pending = [*state.pending, PatternEvent(time, event_key, summary)][-MAX_PENDING:]


def on_second_followed(
    state: SequenceState, within: float, event_key: str, time: float, summary: dict[str, Any]
) -> PatternFire | None:
    """A B event for `followed_by`: pairs with the oldest A within `within` before it."""
    if _seen(state, event_key):
        return None
    state.pending = [p for p in state.pending if p.time >= time - within or p.time > time]
    for index, first in enumerate(state.pending):
        if time - within <= first.time <= time:
            del state.pending[index]
            details = {
                "first": first.summary,
                "then": summary,
                # Event times are seconds since the epoch: their difference is exact to
                # about 1e-7 s only, so it is given to the microsecond events carry.
                "seconds_between": round(time - first.time, 6),
            }
            state.fires = []
            return PatternFire(event_key, details)
    return None


def on_second_absence(state: SequenceState, within: float, event_key: str, time: float) -> None:
    """A B event for `not_followed_by`: answers every A of the key within `within` before it."""
    if _seen(state, event_key):
        return
    state.pending = [p for p in state.pending if not (time - within <= p.time <= time)]


def on_tick_absence(state: SequenceState, within: float, now: float) -> list[PatternFire]:
    """As whose time ran out unanswered."""
    fires = []
    keep = []
    for first in state.pending:
        if first.time + within <= now:
            details = {"first": first.summary, "deadline": iso_time(first.time + within)}
            fires.append(PatternFire(first.key, details))
        else:
            keep.append(first)
    state.pending = keep
    if fires:
        state.fires = []
    return fires


def absence_deadline(state: SequenceState, within: float) -> float | None:
    return min((p.time + within for p in state.pending), default=None)


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
            kept = sum(len(orjson.dumps(p.summary)) for p in state.pending)
        size = len(orjson.dumps(summary))
        if not state.pending or kept + size <= DEBOUNCE_KEPT_MAX_BYTES:
            state.pending = [*state.pending, PatternEvent(now, event_key, summary)]
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
