"""Sliding event-time windows for threshold triggers: count and aggregate, per group.

The window evaluator sees the events that passed a trigger's condition, keyed by
(trigger, group). It fires when some window of length W (event time) holds at least
`count_threshold` events (and, if set, the aggregate holds over them):

    W = 5m, count_threshold = 3
    time ──────|──a────b─────────c──|──────d──►       a, b, c inside one 5m window: fire
               end - W             end                 when c arrives (c "crossed" it)

Rules, in order, for an event e with time t:
1. Dedupe: an event id already pending, or consumed by a fire within the last window of
   event time, is not counted again (`duplicate`): a producer that sends an event twice
   does not count it twice. Crash replays never get here: the state commits in the same
   transaction as the fires and the input offsets (event_matcher.py), so after a crash
   the input is read again against the state as of that commit.
2. Late: an event a whole window or more behind the newest event seen for the key is
   not counted (`late`): it can no longer share a window with the newest one. That
   window is the allowed lateness.
3. Out of order: e is inserted by time; every window that contains e is checked, the
   windows ending at e and at each later event less than W after it. Arrival order
   does not change what is counted: N events inside one window span, in any order,
   give floor(N / count_threshold) fires.
4. After a fire the window resets: the events it counted are consumed, so the next fire
   needs `count_threshold` new events. With `cooldown`, no window ending earlier than
   `cooldown` after the last fire's end fires.
Memory per key is bounded whatever the input: at most MAX_PENDING pending events and the
ids of the last MAX_CONSUMED consumed ones (a burst of events sharing one time included).
A pending event is its time, id and aggregated value; only the newest SAMPLE_KEPT also
keep their summary, since a fire's sample shows the newest SAMPLE_SIZE events it counted
(kept for every pending event, summaries of 4 KiB of data passed the state's bound at
about 150 events, and a threshold of 2,000 small events never fired).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from processor.language.conditions import COUNT_THRESHOLD_MAX, Threshold
from processor.matching.state import PendingEvent, WindowState, event_time

MAX_PENDING = COUNT_THRESHOLD_MAX
MAX_CONSUMED = 1000
SAMPLE_SIZE = 10
SAMPLE_KEPT = 2 * SAMPLE_SIZE
"""Pending events that keep their summary: the newest, with room for some that arrive out
of order after a window's end."""
SCAN_MAX = 16
"""Up to this many pending events a duplicate is looked for by a pass over them; past
it, in a set of their ids (`WindowState.pending_ids`)."""


class Outcome(StrEnum):
    """What one event did to its window."""

    FIRED = "fired"
    COUNTED = "counted"
    """Counted; no threshold reached yet."""
    DUPLICATE = "duplicate"
    LATE = "late"
    """A window or more behind the newest event of its key: past the allowed lateness."""
    COOLDOWN = "cooldown"
    """A window reached the threshold, but the cooldown after the last fire holds it."""


@dataclass(frozen=True)
class WindowFire:
    crossing_id: str
    count: int
    window_start: float
    window_end: float
    sample: list[dict[str, Any]]
    aggregate: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "crossing_id": self.crossing_id,
            "count": self.count,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "sample": self.sample,
            "aggregate": self.aggregate,
        }


@dataclass(slots=True)
class Decision:
    outcome: Outcome
    fire: WindowFire | None = None


_DECIDED = {outcome: Decision(outcome) for outcome in Outcome if outcome is not Outcome.FIRED}
"""The decisions without a fire, made once: one per event would cost more than the rest."""


def aggregate_over(threshold: Threshold, values: list[float | None]) -> tuple[bool, float | None]:
    """Whether the aggregate holds over these values (None: no number), and its value."""
    aggregate = threshold.aggregate
    if aggregate is None:
        return True, None
    numbers = [v for v in values if v is not None]
    if not numbers:
        return False, None
    return aggregate.holds(numbers), aggregate.value(numbers)


def window_count(state: WindowState, threshold: Threshold) -> int:
    """Events in the window ending at the newest event of the key."""
    latest = state.latest
    if latest is None:
        return 0
    return sum(1 for p in state.pending if p.time > latest - threshold.window_seconds)


def behind_newest(state: WindowState, at: float) -> float:
    """How far an event at `at` is behind the newest event of its key (0 when it is the
    newest): a whole window or more is past the allowed lateness (rule 2)."""
    latest = state.latest
    return 0.0 if latest is None or at >= latest else latest - at


def observe(
    state: WindowState,
    threshold: Threshold,
    at: float,
    event_id: str,
    value: float | None = None,
    summary: dict[str, Any] | None = None,
) -> Decision:
    """Add an event (its time, id, aggregated value and summary) to a key's window
    state, mutated in place, and decide."""
    width = threshold.window_seconds
    pending = state.pending
    consumed = state.consumed
    if event_id in consumed:
        return _DECIDED[Outcome.DUPLICATE]
    ids = state.pending_ids
    if ids is None and len(pending) > SCAN_MAX:
        ids = state.pending_ids = {p.id for p in pending}
    if ids is not None:
        if event_id in ids:
            return _DECIDED[Outcome.DUPLICATE]
    else:
        for p in pending:
            if p.id == event_id:
                return _DECIDED[Outcome.DUPLICATE]
    latest = state.latest
    if latest is None or at > latest:
        state.latest = latest = at
    elif latest - at >= width:
        return _DECIDED[Outcome.LATE]  # rule 2: behind_newest(state, at) >= width
    horizon = latest - width
    if summary is None:
        summary = {}
    if not pending or pending[-1].time <= at:
        pending.append(_pending(PendingEvent, (at, event_id, value, summary)))  # in order
    else:
        index = bisect.bisect_right(pending, at, key=event_time)
        if index < len(pending) - SAMPLE_KEPT:  # not among the newest once inserted
            summary = None
        pending.insert(index, _pending(PendingEvent, (at, event_id, value, summary)))
    if ids is not None:
        ids.add(event_id)
    if len(pending) > SAMPLE_KEPT and pending[-SAMPLE_KEPT - 1].summary is not None:
        _forget_summaries(pending)
    if pending[0].time <= horizon:
        _remove(state, 0, bisect.bisect_right(pending, horizon, key=event_time))
    if len(pending) > MAX_PENDING:
        _remove(state, 0, len(pending) - MAX_PENDING)
    if len(pending) < threshold.count:
        return _DECIDED[Outcome.COUNTED]  # no window can reach the threshold yet

    decision = _first_window_reaching(state, threshold, at, event_id)
    if decision is None:
        return _DECIDED[Outcome.COUNTED]
    if decision.outcome is Outcome.COOLDOWN:
        return decision
    fire = decision.fire
    assert fire is not None
    first, after = _inside(pending, fire.window_start, fire.window_end)
    consumed.update((p.id, p.time) for p in pending[first:after])
    _remove(state, first, after)
    _forget_oldest(consumed, horizon)
    end, last = fire.window_end, state.last_fire_end
    state.last_fire_end = end if last is None else max(last, end)
    return decision


def _sample(inside: list[PendingEvent]) -> list[dict[str, Any]]:
    """The summaries of the newest SAMPLE_SIZE events of a window that keep one, oldest
    first."""
    sample = []
    for entry in reversed(inside):
        if entry.summary is not None:
            sample.append(entry.summary)
            if len(sample) == SAMPLE_SIZE:
                break
    sample.reverse()
    return sample


def drop_ahead(state: WindowState, limit: float) -> int:
    """Remove the entries of a key's window stamped after `limit` (events taken before
    the matcher refused events too far ahead of its clock), and what they set: the newest
    time, and a fire's end their window reached. How many entries were removed (1 when
    only the newest time was ahead); 0 when nothing was, and the state is untouched."""
    latest = state.latest
    if latest is None or latest <= limit:
        return 0
    kept = [p for p in state.pending if p.time <= limit]
    ahead = {i for i, t in state.consumed.items() if t > limit}
    dropped = len(state.pending) - len(kept) + len(ahead)
    state.pending, state.pending_ids = kept, None
    for event_id in ahead:
        del state.consumed[event_id]
    times = [p.time for p in kept] + list(state.consumed.values())
    state.latest = max(times, default=None)
    if state.last_fire_end is not None and state.last_fire_end > limit:
        state.last_fire_end = None
    return max(dropped, 1)


_pending = tuple.__new__
"""PendingEvent made without its Python-level __new__ (one per matching event)."""


def _inside(pending: list[PendingEvent], start: float, end: float) -> tuple[int, int]:
    """Where the events of the window (start, end] are in `pending` (sorted by time)."""
    return bisect.bisect_right(pending, start, key=event_time), bisect.bisect_right(
        pending, end, key=event_time
    )


def _remove(state: WindowState, first: int, after: int) -> None:
    """Remove pending[first:after], and their ids from the index when there is one."""
    pending = state.pending
    ids = state.pending_ids
    if ids is not None:
        ids.difference_update([p.id for p in pending[first:after]])
    del pending[first:after]


def _forget_summaries(pending: list[PendingEvent]) -> None:
    """Keep the summaries of the newest SAMPLE_KEPT pending events only: the entries
    before them lose theirs, up to the first that had none (all of them, once, in a state
    written by a version that kept every summary)."""
    index = len(pending) - SAMPLE_KEPT - 1
    while index >= 0 and (entry := pending[index]).summary is not None:
        pending[index] = _pending(PendingEvent, (entry.time, entry.id, entry.value, None))
        index -= 1


def _forget_oldest(consumed: dict[str, float], horizon: float) -> None:
    """Keep the newest MAX_CONSUMED ids, none from before the horizon: the oldest come
    first in the dict, so this costs what it removes, not what it keeps."""
    for old in list(itertools.islice(consumed, max(0, len(consumed) - MAX_CONSUMED))):
        del consumed[old]
    while consumed:
        first = next(iter(consumed))
        if consumed[first] > horizon:
            return
        del consumed[first]


def _first_window_reaching(
    state: WindowState, threshold: Threshold, at: float, event_id: str
) -> Decision | None:
    width = threshold.window_seconds
    pending = state.pending
    held_by_cooldown = False
    previous = None
    lowest = bisect.bisect_left(pending, at, key=event_time)
    for entry in pending[lowest : bisect.bisect_left(pending, at + width, key=event_time)]:
        end = entry.time
        if end == previous:
            continue  # the same window as the last: events sharing one time
        previous = end
        first, after = _inside(pending, end - width, end)
        if after - first < threshold.count:
            continue
        inside = pending[first:after]
        holds, aggregate = aggregate_over(threshold, [p.value for p in inside])
        if not holds:
            continue
        last = state.last_fire_end
        if (
            threshold.cooldown_seconds
            and last is not None
            and end < last + threshold.cooldown_seconds
        ):
            held_by_cooldown = True
            continue
        return Decision(
            Outcome.FIRED,
            WindowFire(event_id, len(inside), end - width, end, _sample(inside), aggregate),
        )
    if held_by_cooldown:
        return _DECIDED[Outcome.COOLDOWN]
    return None
