"""Sequence, absence and debounce patterns, per (trigger, key): pure state machines.

    followed_by      "A then B within T":        fires when B arrives within T after an
                                                 A with the same key (one fire per A).
    not_followed_by  "A not followed by B in T": fires when T passes after an A (its
                                                 event time + T, against the clock) with
                                                 no B of the same key in between.
    debounce         fires once the key has been quiet for `quiet` (or `max_wait` after
                                                 its first event), handing over the
                                                 burst's events (at most `max_events`).

State is a JSON-able dict, updated in place; every event is deduplicated by its key
(source + id), and a replayed event that caused a fire returns the same fire, so the
dispatcher drops the repeat by its deterministic execution id. Absence and debounce
need time to pass with no event: the caller also calls `on_tick` with the clock.
Debounce measures quiet on the processing clock (when events were seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_PENDING = 1000
MAX_FIRES_REMEMBERED = 20


@dataclass(frozen=True)
class PatternFire:
    cause_key: str
    """Event key the execution id derives from (the B, the unanswered A, or the burst's first)."""
    details: dict[str, Any]


def empty_state() -> dict[str, Any]:
    return {"pending": [], "seen": [], "fires": []}


STATE_KEYS = frozenset(empty_state())


def _replayed(state: dict[str, Any], event_key: str) -> PatternFire | None:
    for fire in state["fires"]:
        if fire["cause_key"] == event_key:
            return PatternFire(fire["cause_key"], fire["details"])
    return None


def _remember(state: dict[str, Any], fire: PatternFire) -> PatternFire:
    state["fires"] = [*state["fires"], {"cause_key": fire.cause_key, "details": fire.details}][
        -MAX_FIRES_REMEMBERED:
    ]
    return fire


def _seen(state: dict[str, Any], event_key: str) -> bool:
    if event_key in state["seen"]:
        return True
    state["seen"] = [*state["seen"], event_key][-MAX_PENDING * 2 :]
    return False


def on_first(state: dict[str, Any], event_key: str, time: float, summary: dict[str, Any]) -> None:
    """An A event (followed_by / not_followed_by)."""
    if _seen(state, event_key):
        return
    state["pending"] = [*state["pending"], [time, event_key, summary]][-MAX_PENDING:]


def on_second_followed(
    state: dict[str, Any], within: float, event_key: str, time: float, summary: dict[str, Any]
) -> PatternFire | None:
    """A B event for `followed_by`: pairs with the oldest A within `within` before it."""
    replay = _replayed(state, event_key)
    if replay is not None or _seen(state, event_key):
        return replay
    state["pending"] = [p for p in state["pending"] if p[0] >= time - within or p[0] > time]
    for index, (first_time, _, first_summary) in enumerate(state["pending"]):
        if time - within <= first_time <= time:
            del state["pending"][index]
            details = {
                "first": first_summary,
                "then": summary,
                "seconds_between": time - first_time,
            }
            return _remember(state, PatternFire(event_key, details))
    return None


def on_second_absence(state: dict[str, Any], within: float, event_key: str, time: float) -> None:
    """A B event for `not_followed_by`: answers every A of the key within `within` before it."""
    if _seen(state, event_key):
        return
    state["pending"] = [p for p in state["pending"] if not (time - within <= p[0] <= time)]


def on_tick_absence(state: dict[str, Any], within: float, now: float) -> list[PatternFire]:
    """As whose time ran out unanswered."""
    fires = []
    keep = []
    for first_time, first_key, first_summary in state["pending"]:
        if first_time + within <= now:
            details = {"first": first_summary, "deadline": first_time + within}
            fires.append(_remember(state, PatternFire(first_key, details)))
        else:
            keep.append([first_time, first_key, first_summary])
    state["pending"] = keep
    return fires


def absence_deadline(state: dict[str, Any], within: float) -> float | None:
    return min((p[0] + within for p in state["pending"]), default=None)


def on_debounced_event(
    state: dict[str, Any], event_key: str, summary: dict[str, Any], now: float, max_events: int
) -> None:
    if _seen(state, event_key):
        return
    if not state["pending"]:
        state["first_seen"] = now
    state["last_seen"] = now
    state["dropped"] = state.get("dropped", 0) + (1 if len(state["pending"]) >= max_events else 0)
    if len(state["pending"]) < max_events:
        state["pending"] = [*state["pending"], [now, event_key, summary]]


def debounce_deadline(state: dict[str, Any], quiet: float, max_wait: float | None) -> float | None:
    if not state["pending"]:
        return None
    deadline = state["last_seen"] + quiet
    if max_wait is not None:
        deadline = min(deadline, state["first_seen"] + max_wait)
    return float(deadline)


def on_tick_debounce(
    state: dict[str, Any], quiet: float, max_wait: float | None, now: float
) -> PatternFire | None:
    deadline = debounce_deadline(state, quiet, max_wait)
    if deadline is None or now < deadline:
        return None
    events = [p[2] for p in state["pending"]]
    details = {
        "events": events,
        "count": len(events) + state.get("dropped", 0),
        "dropped": state.get("dropped", 0),
        "first_seen": state["first_seen"],
        "last_seen": state["last_seen"],
    }
    fire = PatternFire(state["pending"][0][1], details)
    state["pending"], state["dropped"] = [], 0
    return _remember(state, fire)
