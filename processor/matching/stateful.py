"""The stateful evaluator's decision for one match or tick (no Kafka here).

One evaluator per (trigger, key) handles thresholds (windows.py) and sequence,
absence and debounce patterns (sequences.py). The caller passes the key's state (None
for a new key) to `evaluate` (an event) or `on_tick` (time passing) and keeps the state
the evaluation returns (the same one, or a fresh one of the trigger's kind when the
trigger was edited into another), with the returned deadline: when `on_tick` next has
something to do for the key.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.language.conditions import Threshold
from processor.matching import sequences, windows
from processor.matching.decode import iso_time
from processor.matching.events import Matched, encoded_event_fire, fire_for
from processor.matching.fires import EncodedFire
from processor.matching.state import (
    DebounceState,
    KeyState,
    PatternFire,
    SequenceState,
    WindowState,
)
from processor.messages import Cause, CauseKind, Fire, trusted

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Evaluation:
    outcome: str | None
    """For metrics; None when the trigger is gone, disabled or changed kind."""
    fires: list[Fire] = field(default_factory=list)
    deadline: float | None = None
    state: KeyState | None = None
    """The key's state to keep (None with no outcome)."""
    encoded: list[EncodedFire] = field(default_factory=list)
    """With `encode`, the window fires, made straight as JSON (`fires` has the others)."""


def kind_of(trigger: TriggerDocument) -> type[KeyState]:
    """The state a trigger keeps per key."""
    event = trigger.event
    if event is not None and event.debounce:
        return DebounceState
    if event is not None and (event.followed_by or event.not_followed_by):
        return SequenceState
    return WindowState


def state_for(trigger: TriggerDocument, state: KeyState | None) -> KeyState:
    """The key's state if it is of the trigger's kind; else (a new key, or a trigger
    edited into another kind) a fresh one."""
    kind = kind_of(trigger)
    return state if type(state) is kind else kind()


def kept_for(registry: Registry, trigger_id: str, floor: float) -> float:
    """How long a key of this trigger is kept once no event reaches it: `floor`
    (TRIGGERS_STATE_IDLE_SECONDS), or longer when the trigger looks further back: twice
    its window plus its cooldown, twice a sequence's `within`, a debounce's `quiet` plus
    its `max_wait`. After that long an event of the key, if its time is near the
    worker's clock, would decide alike with the state or without it."""
    trigger = registry.get(trigger_id)
    if trigger is None or trigger.event is None:
        return floor
    event = trigger.event
    span = 0.0
    threshold = registry.condition(trigger_id).threshold
    if threshold is not None:
        span = 2 * threshold.window_seconds + threshold.cooldown_seconds
    for follow_up in (event.followed_by, event.not_followed_by):
        if follow_up is not None:
            span = max(span, 2 * follow_up.within.seconds)
    if event.debounce is not None:
        quiet, max_wait = _debounce_times(trigger)
        span = max(span, quiet + (max_wait or 0.0))
    return max(floor, span)


def _pattern_fire(
    trigger: TriggerDocument,
    kind: str,
    group: str,
    fire: PatternFire,
    event: dict[str, Any],
) -> Fire:
    cause = trusted(
        Cause,
        type=CauseKind.EVENT,
        event_id=event.get("id"),
        event_type=event.get("type"),
        event_source=event.get("source"),
        pattern=kind,
        key=group,
    )
    return fire_for(
        trigger,
        f"{kind}\x1f{group}\x1f{fire.cause_key}",
        cause,
        {"event": event, kind: {"key": group, **fire.details}},
    )


def evaluate(registry: Registry, state: KeyState | None, match: Matched, now: float) -> Evaluation:
    """An event for the key (its state updated in place, or a fresh one made)."""
    return evaluate_all(registry, state, [match], now)


def evaluate_all(
    registry: Registry,
    state: KeyState | None,
    matches: list[Matched],
    now: float,
    outcomes: Counter[str] | None = None,
    encode: bool = False,
    max_ahead: float | None = None,
) -> Evaluation:
    """A key's events in their order (one batch's), as `evaluate` takes them one by one:
    the trigger is looked up once and a window's events go straight to its decision.
    Every fire, the last event's outcome and deadline, and the state; each outcome is
    also counted in `outcomes`. With `encode`, window fires come as `encoded` (what a
    matcher writes), not as models. With `max_ahead`, a window found holding events
    further than that ahead of `now` (a version before the matcher refused them took
    them) drops them when they would make an event late, and decides that event again."""
    trigger = registry.get(matches[0].trigger_id)
    if trigger is None or not trigger.enabled or trigger.event is None:
        return Evaluation(None)
    state = state_for(trigger, state)
    if isinstance(state, WindowState):
        threshold = registry.condition(trigger.trigger_id).threshold
        if threshold is None:
            return Evaluation(None)
        fires: list[Fire] = []
        made: list[EncodedFire] = []
        observe, fired = windows.observe, windows.Outcome.FIRED
        outcome = None
        for match in matches:
            decision = observe(
                state, threshold, match.time, match.event_key, match.value, match.event
            )
            if (
                decision.outcome is windows.Outcome.LATE
                and max_ahead is not None
                and _mend_ahead(state, now + max_ahead, trigger.trigger_id)
            ):
                decision = observe(
                    state, threshold, match.time, match.event_key, match.value, match.event
                )
            outcome = decision.outcome
            if outcomes is not None:
                outcomes[outcome] += 1
            if outcome is fired and decision.fire is not None:
                if encode:
                    parts = _window_parts(threshold, match, decision.fire)
                    made.append(encoded_event_fire(trigger, *parts))
                else:
                    fires.append(_window_fire(trigger, threshold, match, decision.fire))
        return Evaluation(outcome, fires, None, state, made)
    fires, last = [], Evaluation(None)
    for match in matches:
        found = _on_event(trigger, state, match, now)
        if found.outcome is None:
            continue
        if outcomes is not None:
            outcomes[found.outcome] += 1
        fires += found.fires
        last = found
    if last.outcome is None:
        return last
    return Evaluation(last.outcome, fires, last.deadline, state)


def _on_event(
    trigger: TriggerDocument,
    state: SequenceState | DebounceState,
    match: Matched,
    now: float,
) -> Evaluation:
    """A sequence's or a debounce's event (`evaluate_all` decides windows itself)."""
    event = trigger.event
    assert event is not None
    if isinstance(state, DebounceState):
        assert event.debounce is not None
        quiet, max_wait = _debounce_times(trigger)
        sequences.on_debounced_event(
            state, match.event_key, match.event, now, event.debounce.max_events
        )
        return Evaluation("debounced", deadline=sequences.debounce_deadline(state, quiet, max_wait))
    if event.followed_by is not None:
        within = event.followed_by.within.seconds
        if match.role == "first":
            outcome, found = sequences.on_first_followed(
                state, within, match.event_key, match.time, match.event
            )
        else:
            found = sequences.on_second_followed(
                state, within, match.event_key, match.time, match.event
            )
            outcome = "unmatched"
        if found is None:
            return Evaluation(outcome)
        # the B is the fire's event, whichever of the two came last
        then = found.details["then"]
        return Evaluation(
            "fired", [_pattern_fire(trigger, "followed_by", match.group, found, then)]
        )
    if event.not_followed_by is not None:
        within = event.not_followed_by.within.seconds
        if match.role == "first":
            outcome = sequences.on_first_absence(
                state, within, match.event_key, match.time, match.event
            )
        else:
            sequences.on_second_absence(state, within, match.event_key, match.time)
            outcome = match.role
        return Evaluation(outcome, deadline=sequences.absence_deadline(state, within))
    return Evaluation(None)


def on_tick(
    registry: Registry, trigger_id: str, group: str, state: KeyState, now: float
) -> Evaluation:
    """Time passed: absence deadlines and quiet debounces fire (a state of another kind
    than the trigger's, edited since, has nothing due)."""
    trigger = registry.get(trigger_id)
    if (
        trigger is None
        or not trigger.enabled
        or trigger.event is None
        or type(state) is not kind_of(trigger)
    ):
        return Evaluation(None)
    event = trigger.event
    if isinstance(state, SequenceState) and event.not_followed_by is not None:
        within = event.not_followed_by.within.seconds
        fires = [
            _pattern_fire(trigger, "not_followed_by", group, fire, fire.details["first"])
            for fire in sequences.on_tick_absence(state, within, now)
        ]
        return Evaluation(
            "fired" if fires else "waiting", fires, sequences.absence_deadline(state, within)
        )
    if isinstance(state, DebounceState):
        quiet, max_wait = _debounce_times(trigger)
        fire = sequences.on_tick_debounce(state, quiet, max_wait, now)
        fires = (
            []
            if fire is None
            else [_pattern_fire(trigger, "debounce", group, fire, fire.details["events"][-1])]
        )
        return Evaluation(
            "fired" if fires else "waiting",
            fires,
            sequences.debounce_deadline(state, quiet, max_wait),
        )
    return Evaluation(None)


def _debounce_times(trigger: TriggerDocument) -> tuple[float, float | None]:
    assert trigger.event is not None and trigger.event.debounce is not None
    spec = trigger.event.debounce
    return spec.quiet.seconds, spec.max_wait.seconds if spec.max_wait else None


def _window_fire(
    trigger: TriggerDocument, threshold: Threshold, match: Matched, window: windows.WindowFire
) -> Fire:
    cause_key, cause, input_ = _window_parts(threshold, match, window)
    return fire_for(trigger, cause_key, trusted(Cause, **cause), input_)


def _window_parts(
    threshold: Threshold, match: Matched, window: windows.WindowFire
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A window fire's cause key (the id comes from the event that crossed the threshold,
    so a replay re-creates it), cause and input."""
    crossing = match.event  # the event just counted is the one that crossed the threshold
    cause = {
        "type": CauseKind.EVENT,
        "event_id": crossing.get("id"),
        "event_type": crossing.get("type"),
        "event_source": crossing.get("source"),
        "group": match.group,
        "count": window.count,
    }
    details = {
        "count": window.count,
        "window_start": iso_time(window.window_start),
        "window_end": iso_time(window.window_end),
        "group": match.group,
        "group_by": list(threshold.group_by),
        "aggregate": window.aggregate,
        "sample": window.sample,
    }
    cause_key = f"window\x1f{match.group}\x1f{window.crossing_id}"
    return cause_key, cause, {"event": crossing, "window": details}


def _mend_ahead(state: WindowState, limit: float, trigger_id: str) -> bool:
    """`windows.drop_ahead`, with a warning naming the trigger when it let go of any."""
    latest = state.latest
    dropped = windows.drop_ahead(state, limit)
    if dropped and latest is not None:
        log.warning(
            "window of trigger %s had its newest event at %s, ahead of the clock by more "
            "than TRIGGERS_EVENT_TIME_MAX_AHEAD_SECONDS; %d entries stamped after %s let "
            "go, so the events after them count",
            trigger_id,
            datetime.fromtimestamp(latest, UTC).isoformat(),
            dropped,
            datetime.fromtimestamp(limit, UTC).isoformat(),
        )
    return bool(dropped)
