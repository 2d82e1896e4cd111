"""`triggers explain`: why an event did or did not fire each trigger.

The same matcher the workers run, with every test recorded, plus the current count of
threshold windows (read from `trigger-window-state`, the window state's changelog, so no
worker is asked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from processor import topics
from processor.config import Settings
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.errors import TriggersError
from processor.kafka.reader import read_to_end
from processor.matching.decode import event_of
from processor.matching.events import Verdict, match_event
from processor.matching.window_state import decode
from processor.matching.windows import behind_newest, empty_state, window_count
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

    def as_json(self) -> dict[str, Any]:
        return {
            "trigger_id": self.trigger_id,
            "name": self.name,
            "verdict": self.verdict.value,
            "pattern": self.pattern,
            "source_ok": self.source_ok,
            "tests": self.tests,
            "window": self.window,
        }


def explain(
    registry: Registry,
    event: DomainEvent,
    window_state: Callable[[str, str], dict[str, Any] | None] = lambda trigger, group: None,
) -> list[TriggerExplanation]:
    """One explanation per candidate trigger (those whose pattern matches the type)."""
    explanations = []
    read = event_of(event)
    for match in match_event(registry, read, explain=True):
        trigger = match.trigger
        assert trigger.event is not None
        tests = [
            {"field": o.path, "test": o.test, "actual": o.actual, "matched": o.matched}
            for o in match.trace
        ]
        threshold = registry.condition(trigger.trigger_id).threshold
        window = None
        if threshold is not None:
            group = threshold.group_of(read.fields)
            state = window_state(trigger.trigger_id, group) or empty_state()
            behind = None if read.time is None else behind_newest(state, read.time)
            late = behind is not None and behind >= threshold.window_seconds
            window = {
                "group": group,
                "count": window_count(state, threshold),
                "count_threshold": threshold.count,
                "window_seconds": threshold.window_seconds,
                "allowed_lateness_seconds": threshold.window_seconds,
                "late": late,
                "with_this_event": match.verdict is Verdict.WINDOWED and not late,
            }
            if late:
                window["late_reason"] = (
                    f"this event is {behind:g} s older than the newest event of its group; "
                    f"events a whole window ({threshold.window_seconds:g} s) or more behind "
                    'it are not counted (triggers_window_outcomes_total{outcome="late"})'
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
            )
        )
    return explanations


def window_states(settings: Settings) -> dict[str, Any]:
    """Current window states by key (`<trigger id>\x1f<group>`), as committed to
    `trigger-window-state` (empty when that topic does not exist)."""
    states: dict[str, Any] = {}
    try:
        for message in read_to_end(settings, topics.topic_name(topics.WINDOW_STATE, settings)):
            key = (message.key() or b"").decode()
            value = message.value()
            if value is None:
                states.pop(key, None)
            else:
                states[key] = decode(value)[0]
    except TriggersError:
        return {}
    return states


def explain_with_state(
    settings: Settings, documents: Iterable[TriggerDocument], event: DomainEvent
) -> list[TriggerExplanation]:
    """`explain` over these triggers, with the live window counts: what `triggers explain`
    and `POST /v1/explain` answer."""
    registry = Registry()
    for document in documents:
        registry.put(document)
    states = window_states(settings)
    return explain(registry, event, lambda t, g: states.get(f"{t}\x1f{g}"))
