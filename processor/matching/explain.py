"""`triggers explain`: why an event did or did not fire each trigger.

The same matcher the workers run, with every test recorded, plus the current count of
threshold windows, read from the window state's changelog through state.py (no worker is
asked).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from processor.config import Settings
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.language.conditions import MISSING
from processor.matching.decode import event_of
from processor.matching.events import Verdict, match_event, too_far_ahead
from processor.matching.state import KeyState, StateKey, WindowState, committed_states
from processor.matching.windows import behind_newest, drop_ahead, window_count
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
        window = None
        if threshold is not None:
            group = threshold.group_of(read.fields)
            state = states(StateKey(trigger.trigger_id, group))
            if not isinstance(state, WindowState):  # none yet, or of another kind
                state = WindowState()
            behind = None if read.time is None else behind_newest(state, read.time)
            late = behind is not None and behind >= threshold.window_seconds
            mended = 0
            if late and now is not None and max_ahead is not None:
                # as a worker does: entries stamped beyond the allowance (taken by a
                # version before it was refused) go, and the event is decided again
                state = WindowState(
                    list(state.pending), dict(state.consumed), state.latest, state.last_fire_end
                )
                mended = drop_ahead(state, now + max_ahead)
                if mended:
                    assert read.time is not None
                    behind = behind_newest(state, read.time)
                    late = behind >= threshold.window_seconds
            window = {
                "group": group,
                "count": window_count(state, threshold),
                "count_threshold": threshold.count,
                "window_seconds": threshold.window_seconds,
                "allowed_lateness_seconds": threshold.window_seconds,
                "late": late,
                "with_this_event": match.verdict is Verdict.WINDOWED and not late,
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
        explanations.append(
            TriggerExplanation(
                trigger_id=trigger.trigger_id,
                name=trigger.name,
                verdict=match.verdict,
                pattern=trigger.event.pattern,
                source_ok=match.verdict is not Verdict.SOURCE_MISMATCH,
                tests=tests,
                window=window,
                dead_letter=None
                if now is None or max_ahead is None
                else too_far_ahead([match], read.time, now, max_ahead),
            )
        )
    return explanations


def explain_with_state(
    settings: Settings, documents: Iterable[TriggerDocument], event: DomainEvent
) -> list[TriggerExplanation]:
    """`explain` over these triggers, with the live window counts: what `triggers explain`
    and `POST /v1/explain` answer."""
    registry = Registry()
    for document in documents:
        registry.put(document)
    return explain(
        registry,
        event,
        committed_states(settings).get,
        now=time.time(),
        max_ahead=settings.event_time_max_ahead_seconds,
    )


def _seconds(seconds: float) -> str:
    """`301.5 s`, `96,836,400 s (1,120.8 days)`: exact, and readable when long."""
    text = f"{seconds:,.3f}".rstrip("0").rstrip(".") + " s"
    return text if seconds < 86400 else f"{text} ({seconds / 86400:,.1f} days)"
