"""Sliding event-time windows for threshold triggers: count and aggregate, per group.

The window evaluator sees the events that passed a trigger's condition, keyed by
(trigger, group). It fires when some window of length W (event time) holds at least
`count_threshold` events (and, if set, the aggregate holds over them):

    W = 5m, count_threshold = 3
    time ──────|──a────b─────────c──|──────d──►       a, b, c inside one 5m window: fire
               end - W             end                 when c arrives (c "crossed" it)

Rules, in order, for an event e with time t:
1. Dedupe: an event id already seen (pending or consumed by a fire) is not counted
   again. If e crossed a threshold before, the same fire is returned again: after a
   crash the matcher replays its input, and the dispatcher drops the repeat by its
   deterministic execution id. So a replay neither double-counts nor fires anew.
   A fire consumes every pending event up to its window's end, so an event older than
   the last fire's end is not counted either (`before_fire`), whether it is a replay
   or news: the state keeps ids only for the events at exactly that end. This keeps a
   key's state (read and written whole for every event) as small as its pending events,
   instead of growing with every event of the last window.
2. Late: an event older than one window behind the newest event seen for the key is
   ignored (it can no longer share a window with anything kept).
3. Out of order: e is inserted by time; every window that contains e is checked, the
   windows ending at e and at each later event less than W after it.
4. After a fire the window resets: the events up to the end of the firing window are
   consumed, so the next fire needs `count_threshold` new events. With `cooldown`, no
   window ending earlier than `cooldown` after the last fire's end fires.
Memory per key is bounded: at most MAX_PENDING events are kept (the oldest go first).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from processor.matching.conditions import Threshold

MAX_PENDING = 5000
SAMPLE_SIZE = 10
MAX_FIRES_REMEMBERED = 20


class Outcome(StrEnum):
    """What one event did to its window."""

    FIRED = "fired"
    COUNTED = "counted"
    """Counted; no threshold reached yet."""
    DUPLICATE = "duplicate"
    LATE = "late"
    BEFORE_FIRE = "before_fire"
    """Older than the end of the last fire's window, whose events that fire consumed."""
    COOLDOWN = "cooldown"
    """A window reached the threshold, but the cooldown after the last fire holds it."""
    REPLAYED_FIRE = "replayed_fire"
    """A duplicate of the event that crossed a threshold: its fire is returned again."""


@dataclass(frozen=True)
class WindowEvent:
    time: float
    id: str
    value: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    fire: WindowFire | None = None
    count: int = 0
    """Events in the window ending at the newest event, after this one."""


def empty_state() -> dict[str, Any]:
    return {"pending": [], "consumed": [], "fires": [], "latest": None, "last_fire_end": None}


def _aggregate(threshold: Threshold, values: list[float | None]) -> tuple[bool, float | None]:
    aggregate = threshold.aggregate
    if aggregate is None:
        return True, None
    numbers = [v for v in values if v is not None]
    if not numbers:
        return False, None
    return aggregate.holds(numbers), aggregate.value(numbers)


def window_count(state: dict[str, Any], threshold: Threshold) -> int:
    """Events in the window ending at the newest event of the key."""
    latest = state["latest"]
    if latest is None:
        return 0
    return sum(1 for p in state["pending"] if p[0] > latest - threshold.window_seconds)


def observe(state: dict[str, Any], threshold: Threshold, event: WindowEvent) -> Decision:
    """Add an event to a key's window state (mutated in place) and decide."""
    width = threshold.window_seconds
    pending: list[list[Any]] = state["pending"]  # [time, id, value, summary], by time
    for fire in state["fires"]:
        if fire["crossing_id"] == event.id:
            return Decision(
                Outcome.REPLAYED_FIRE, WindowFire(**fire), window_count(state, threshold)
            )
    if any(p[1] == event.id for p in pending) or any(c[1] == event.id for c in state["consumed"]):
        return Decision(Outcome.DUPLICATE, count=window_count(state, threshold))
    last_end = state["last_fire_end"]
    if last_end is not None and event.time < last_end:
        return Decision(Outcome.BEFORE_FIRE, count=window_count(state, threshold))
    latest = event.time if state["latest"] is None else max(state["latest"], event.time)
    if event.time <= latest - width:
        return Decision(Outcome.LATE, count=window_count(state, threshold))
    state["latest"] = latest
    times = [p[0] for p in pending]
    pending.insert(
        bisect.bisect_right(times, event.time), [event.time, event.id, event.value, event.summary]
    )
    horizon = latest - width
    state["pending"] = pending = [p for p in pending if p[0] > horizon][-MAX_PENDING:]

    decision = _first_window_reaching(state, threshold, event)
    if decision is None:
        return Decision(Outcome.COUNTED, count=window_count(state, threshold))
    if decision.outcome is Outcome.COOLDOWN:
        return decision
    fire = decision.fire
    assert fire is not None
    # Events before the window's end are told apart by time from now on (rule 1); those
    # at exactly the end are remembered by id.
    at_end = [c for c in state["consumed"] if c[0] == fire.window_end]
    state["consumed"] = at_end + [[p[0], p[1]] for p in pending if p[0] == fire.window_end]
    state["pending"] = [p for p in pending if p[0] > fire.window_end]
    state["last_fire_end"] = fire.window_end
    state["fires"] = [*state["fires"], fire.as_json()][-MAX_FIRES_REMEMBERED:]
    return Decision(Outcome.FIRED, fire, window_count(state, threshold))


def _first_window_reaching(
    state: dict[str, Any], threshold: Threshold, event: WindowEvent
) -> Decision | None:
    width = threshold.window_seconds
    pending = state["pending"]
    held_by_cooldown = False
    ends = [p[0] for p in pending if event.time <= p[0] < event.time + width]
    for end in ends:
        inside = [p for p in pending if end - width < p[0] <= end]
        if len(inside) < threshold.count:
            continue
        holds, aggregate = _aggregate(threshold, [p[2] for p in inside])
        if not holds:
            continue
        last = state["last_fire_end"]
        if (
            threshold.cooldown_seconds
            and last is not None
            and end < last + threshold.cooldown_seconds
        ):
            held_by_cooldown = True
            continue
        sample = [p[3] for p in inside[:SAMPLE_SIZE]]
        return Decision(
            Outcome.FIRED,
            WindowFire(event.id, len(inside), end - width, end, sample, aggregate),
        )
    if held_by_cooldown:
        return Decision(Outcome.COOLDOWN, count=window_count(state, threshold))
    return None
