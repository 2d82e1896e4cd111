"""`triggers explain`: why an event did or did not fire each trigger.

The same matcher the workers run, with every test recorded, plus the current count of
threshold windows, read from the window state's changelog through state.py (no worker is
asked).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from processor.config import Settings
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.language.conditions import MISSING, Threshold
from processor.language.patterns import compile_pattern
from processor.matching import sequences
from processor.matching.decode import Event, event_of, iso_time
from processor.matching.events import Match, Matched, Verdict, match_event, too_far_ahead
from processor.matching.state import (
    DebounceState,
    KeyState,
    SequenceState,
    StateKey,
    WindowState,
    committed_states_of,
)
from processor.matching.windows import (
    Outcome,
    aggregate_over,
    behind_newest,
    drop_ahead,
    observe,
    window_count,
)
from processor.messages import DomainEvent


@dataclass
class TriggerExplanation:
    trigger_id: str
    name: str
    verdict: Verdict
    pattern: str
    source_ok: bool
    tests: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, Any] | None = None
    sequence: dict[str, Any] | None = None
    """For a sequence, absence or debounce trigger: the event's part in it and what the
    key's state makes of it (`reason`)."""
    dead_letter: str | None = None
    """Why a worker would not take the event for this trigger but dead-letter it."""

    def as_json(self) -> dict[str, Any]:
        return {
            "trigger_id": self.trigger_id,
            "name": self.name,
            "verdict": self.verdict.value,
            "pattern": self.pattern,
            "source_ok": self.source_ok,
            "tests": self.tests,
            "window": self.window,
            "sequence": self.sequence,
            "dead_letter": self.dead_letter,
        }


def explain(
    registry: Registry,
    event: DomainEvent,
    states: Callable[[StateKey], KeyState | None] = lambda key: None,
    now: float | None = None,
    max_ahead: float | None = None,
) -> list[TriggerExplanation]:
    """One explanation per candidate trigger (those whose pattern matches the type); with
    `now` and `max_ahead`, an event stamped too far ahead of `now` is told a dead letter
    for the triggers that count by event time, as a worker would make it."""
    explanations = []
    if event.time is None and now is not None:  # a worker gives it its record's time
        event = event.model_copy(update={"time": datetime.fromtimestamp(now, UTC)})
    read = event_of(event)
    for match in match_event(registry, read, explain=True):
        trigger = match.trigger
        assert trigger.event is not None
        tests = [
            {
                "field": o.path,
                "test": o.test,
                "actual": None if o.actual is MISSING else o.actual,
                "missing": o.actual is MISSING,
                "matched": o.matched,
            }
            for o in match.trace
        ]
        threshold = registry.condition(trigger.trigger_id).threshold
        dead_letter = (
            None
            if now is None or max_ahead is None
            else too_far_ahead([match], read.time, now, max_ahead)
        )
        window = (
            None
            if threshold is None
            else _in_window(match, threshold, read, states, now, max_ahead, dead_letter)
        )
        pattern, sequence = _in_sequence(match, read.type, states, now)
        if sequence is not None and dead_letter is not None and "reason" in sequence:
            sequence["reason"] = "not taken: a dead letter (below)"
        explanations.append(
            TriggerExplanation(
                trigger_id=trigger.trigger_id,
                name=trigger.name,
                verdict=match.verdict,
                pattern=pattern,
                source_ok=match.verdict is not Verdict.SOURCE_MISMATCH,
                tests=tests,
                window=window,
                sequence=sequence,
                dead_letter=dead_letter,
            )
        )
    return explanations


_State = TypeVar("_State", WindowState, SequenceState, DebounceState)


_KEPT = {
    "first_without_data": (
        f"without its data: the events this key keeps hold "
        f"{sequences.SEQUENCE_WHOLE_MAX_BYTES // 1024} KiB of JSON, so it keeps its "
        "attributes only (`data_left_out` in its fire)"
    ),
    "pushed_out": (
        f"the oldest event this key keeps is pushed out to make room (at most "
        f"{sequences.MAX_PENDING} As and Bs and "
        f"{sequences.SEQUENCE_KEPT_MAX_BYTES // 1024} KiB per key; "
        'triggers_window_outcomes_total{outcome="pushed_out"})'
    ),
}


def _late_a(state: SequenceState, within: float, at: float) -> str:
    behind = (state.latest or at) - at
    return (
        f"late: this A is {_seconds(behind)} older than the newest event of its key, more "
        f"than `within` ({within:g} s), and the Bs that could answer it are no longer "
        "kept: not taken, does not fire"
    )


def _kept_b(state: SequenceState, event_key: str, within: float) -> str:
    """What becomes of a B that leaves no A waiting: kept for an A that comes after it,
    unless it is late."""
    if any(answer.key == event_key for answer in state.answers):
        return f"; kept for an A that comes after it, at most {within:g} s before it"
    return (
        f"; late (more than {within:g} s older than the newest event of this key): "
        "not kept for As that come after it"
    )


def _copy_of(state: KeyState | None, kind: type[_State]) -> _State:
    """A key's state as a copy the worker's own steps may change (a fresh one when the key
    has none yet, or one of another kind after an edit)."""
    return copy.deepcopy(state) if isinstance(state, kind) else kind()


def _in_window(
    match: Match,
    threshold: Threshold,
    read: Event,
    states: Callable[[StateKey], KeyState | None],
    now: float | None,
    max_ahead: float | None,
    dead_letter: str | None = None,
) -> dict[str, Any]:
    """A threshold trigger's window for the event's group: its count, and whether the
    event is late there, as a worker decides it (a window holding events taken too far
    ahead mended first, on a copy); an event the trigger dead-letters is not counted."""
    group = threshold.group_of(read.fields)
    state = _copy_of(states(StateKey(match.trigger_id, group)), WindowState)
    behind = None if read.time is None else behind_newest(state, read.time)
    late = behind is not None and behind >= threshold.window_seconds
    mended = 0
    if late and now is not None and max_ahead is not None:
        # as a worker does: entries stamped beyond the allowance (taken by a
        # version before it was refused) go, and the event is decided again
        mended = drop_ahead(state, now + max_ahead)
        if mended:
            assert read.time is not None
            behind = behind_newest(state, read.time)
            late = behind >= threshold.window_seconds
    window: dict[str, Any] = {
        "group": group,
        "count": window_count(state, threshold),
        "count_threshold": threshold.count,
        "window_seconds": threshold.window_seconds,
        "allowed_lateness_seconds": threshold.window_seconds,
        "late": late,
        "with_this_event": match.verdict is Verdict.WINDOWED and not late and not dead_letter,
    }
    if mended:
        window["mended"] = (
            f"the group's window holds {mended} entries stamped more than "
            f"{max_ahead:g} s ahead of the clock (taken before such events were "
            "refused); a worker lets go of them at the first event they would make "
            "late, so they are left out here"
        )
    if late and behind is not None:
        window["late_reason"] = (
            f"this event is {_seconds(behind)} older than the newest event of its "
            f"group; events a whole window ({threshold.window_seconds:g} s) or more "
            'behind it are not counted (triggers_window_outcomes_total{outcome="late"})'
        )
    taken = match.window
    if dead_letter is not None:
        window["outcome"] = "dead_letter"
        window["decision"] = "not counted: a dead letter (below)"
    elif taken is not None and isinstance(taken, Matched):
        window.update(_window_decision(state, threshold, taken, read))
    return window


def _window_decision(
    state: WindowState, threshold: Threshold, taken: Matched, read: Event
) -> dict[str, Any]:
    """What the worker's window step makes of the event on the group's state (a copy,
    changed here): its outcome, why, and the aggregate where the trigger has one."""
    decision = observe(state, threshold, taken.time, taken.event_key, taken.value, taken.event)
    outcome = decision.outcome
    out: dict[str, Any] = {"outcome": outcome.value}
    aggregate = threshold.aggregate
    holds, value = True, None
    if decision.fire is not None:
        value = decision.fire.aggregate
    elif aggregate is not None and state.latest is not None:
        newest = state.latest
        inside = [p.value for p in state.pending if p.time > newest - threshold.window_seconds]
        holds, value = aggregate_over(threshold, inside)
    if aggregate is not None:
        out["aggregate"] = {
            "expression": aggregate.expression,
            "event_value": taken.value,
            "value": value,
            "holds": decision.fire is not None or holds,
        }
    width = f"{threshold.window_seconds:g} s"
    if decision.fire is not None:
        fire = decision.fire
        reason = (
            f"fires: {fire.count} events within {width} "
            f"({iso_time(fire.window_start)} to {iso_time(fire.window_end)})"
        )
        if aggregate is not None and value is not None:
            reason += f", {aggregate.named} = {value:g}"
    elif outcome is Outcome.DUPLICATE:
        reason = (
            f"not counted again: an event with this source ({read.source!r}) and id "
            f"({read.id!r}) is already in the window, or was counted by a fire within "
            "the last window"
        )
    elif outcome is Outcome.LATE:
        reason = "not counted: late (above)"
    elif outcome is Outcome.COOLDOWN:
        assert state.last_fire_end is not None
        until = state.last_fire_end + threshold.cooldown_seconds
        reason = (
            f"counted, and a window reaches {threshold.count}, but the cooldown "
            f"({threshold.cooldown_seconds:g} s after the last fire's window end) holds "
            f"it until {iso_time(until)}"
        )
    else:
        count = window_count(state, threshold)
        reason = f"counted: {count} of {threshold.count} within {width}"
        if count >= threshold.count and aggregate is not None:
            shown = "no value" if value is None else f"{value:g}"
            reason += (
                f"; {aggregate.named} over them is {shown}, not "
                f"{aggregate.op} {aggregate.value_threshold:g}"
            )
    if aggregate is not None and taken.value is None and outcome is not Outcome.DUPLICATE:
        reason += (
            f" ({aggregate.path} is missing or not a number here: the event counts, "
            "its value does not)"
        )
    out["decision"] = reason
    return out


def _in_sequence(
    match: Match,
    event_type: str,
    states: Callable[[StateKey], KeyState | None],
    now: float | None,
) -> tuple[str, dict[str, Any] | None]:
    """The pattern the event matched (A's or B's), and for a sequence, absence or debounce
    trigger what the key's state makes of the event: the worker's own steps, run on a
    copy of the state."""
    trigger = match.trigger
    event = trigger.event
    assert event is not None
    follow = event.followed_by or event.not_followed_by
    if follow is None and event.debounce is None:
        return event.pattern, None
    key_field: str | None
    if follow is not None:
        kind = "followed_by" if event.followed_by is not None else "not_followed_by"
        role = (
            match.window.role
            if match.window is not None
            else ("first" if compile_pattern(event.pattern)(event_type) else "second")
        )
        pattern, key_field = (event.pattern if role == "first" else follow.pattern), follow.key
    else:
        assert event.debounce is not None
        kind, role, pattern, key_field = "debounce", "event", event.pattern, event.debounce.key
    info: dict[str, Any] = {"kind": kind, "role": role, "key_field": key_field}
    if match.verdict is Verdict.KEY_MISSING:
        info["reason"] = (
            f"the event has no `{key_field}`, the field that pairs events here: not taken"
        )
        return pattern, info
    taken = match.window
    if taken is None:  # source, workspace or condition turned it away: no state involved
        return pattern, info
    info["key"] = taken.group
    state = states(StateKey(match.trigger_id, taken.group))
    keyed = f"{key_field} = {taken.group!r}" if key_field else "this trigger"
    if follow is not None:
        held = _copy_of(state, SequenceState)
        info["waiting"] = len(held.pending)
        within, at = follow.within.seconds, taken.time
        if role == "first":
            if kind == "followed_by":
                taking, fire = sequences.on_first_followed(
                    held, within, taken.event_key, at, taken.event
                )
            else:
                taking = sequences.on_first_absence(held, within, taken.event_key, at, taken.event)
            if taking == "duplicate":
                info["reason"] = "an A this key has already taken: a repeat, which changes nothing"
            elif taking == "late":
                info["late"] = True
                info["reason"] = _late_a(held, within, at)
            elif taking == "fired":
                assert fire is not None
                then = info["pairs_with"] = fire.details["then"]
                info["reason"] = (
                    f"an A: pairs with the B {then.get('id')!r} that came before it "
                    f"({fire.details['seconds_between']:g} s after it): fires"
                )
            elif taking == "answered":
                info["reason"] = (
                    f"an A: a {follow.pattern!r} with {keyed} came before it, at most "
                    f"{within:g} s after it: answered, does not fire"
                )
            else:
                if taking != "first":
                    info["kept"] = _KEPT[taking]
                if kind == "followed_by":
                    info["reason"] = (
                        f"an A: fires when a {follow.pattern!r} with {keyed} comes within "
                        f"{within:g} s after it"
                    )
                else:
                    info["deadline"] = iso_time(at + within)
                    info["reason"] = (
                        f"an A: fires at {info['deadline']} unless a {follow.pattern!r} with "
                        f"{keyed} comes first"
                    )
        elif taken.event_key in held.seen:
            info["reason"] = "a B this key has already taken: a repeat, which changes nothing"
        elif kind == "followed_by":
            fire = sequences.on_second_followed(held, within, taken.event_key, at, taken.event)
            if fire is not None:
                first = fire.details["first"]
                info["pairs_with"] = first
                info["reason"] = (
                    f"a B: pairs with the A {first.get('id')!r} "
                    f"({fire.details['seconds_between']:g} s before it): fires"
                )
            else:
                info["reason"] = (
                    f"a B: no A with {keyed} waits within {within:g} s before it "
                    f"({info['waiting']} waiting for this key): does not fire"
                    + _kept_b(held, taken.event_key, within)
                )
        else:
            sequences.on_second_absence(held, within, taken.event_key, at)
            answered = info["waiting"] - len(held.pending)
            info["answers"] = answered
            info["reason"] = (
                f"a B: answers {answered} waiting A(s) of this key, which then do not fire"
                + _kept_b(held, taken.event_key, within)
            )
        return pattern, info
    assert event.debounce is not None
    burst = _copy_of(state, DebounceState)
    before = len(burst.pending) + burst.dropped
    clock = time.time() if now is None else now
    sequences.on_debounced_event(
        burst, taken.event_key, taken.event, clock, event.debounce.max_events
    )
    if len(burst.pending) + burst.dropped == before:
        info["reason"] = "an event this burst has already taken: a repeat, which changes nothing"
        return pattern, info
    quiet = event.debounce.quiet.seconds
    max_wait = event.debounce.max_wait.seconds if event.debounce.max_wait else None
    deadline = sequences.debounce_deadline(burst, quiet, max_wait)
    info["burst"] = len(burst.pending) + burst.dropped
    info["deadline"] = None if deadline is None else iso_time(deadline)
    info["reason"] = (
        f"joins a burst of {info['burst']} event(s) of {keyed}: fires at {info['deadline']} "
        f"if no other comes (quiet {quiet:g} s"
        + (f", at most {max_wait:g} s after the burst's first)" if max_wait else ")")
    )
    return pattern, info


def explain_with_state(
    settings: Settings, documents: Iterable[TriggerDocument], event: DomainEvent
) -> list[TriggerExplanation]:
    """`explain` over these triggers, with the live window counts: what `triggers explain`
    and `POST /v1/explain` answer."""
    registry = Registry()
    for document in documents:
        registry.put(document)
    now, max_ahead = time.time(), settings.event_time_max_ahead_seconds
    asked: list[StateKey] = []  # the keys this event reaches, then only theirs are read

    def ask(key: StateKey) -> None:
        asked.append(key)

    explain(registry, event, ask, now=now, max_ahead=max_ahead)
    return explain(
        registry, event, committed_states_of(settings, asked).get, now=now, max_ahead=max_ahead
    )


def _seconds(seconds: float) -> str:
    """`301.5 s`, `96,836,400 s (1,120.8 days)`: exact, and readable when long."""
    text = f"{seconds:,.3f}".rstrip("0").rstrip(".") + " s"
    return text if seconds < 86400 else f"{text} ({seconds / 86400:,.1f} days)"
