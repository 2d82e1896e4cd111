"""The window evaluator's decision for one match: update the window, maybe fire.

Stateful but Kafka-free: the caller loads the (trigger, group) window state from its
table, calls `evaluate`, and stores the state back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from processor.definitions.registry import Registry
from processor.matching.events import fire_for
from processor.matching.windows import Decision, Outcome, WindowEvent, observe
from processor.messages import Cause, CauseKind, Fire, WindowMatch


@dataclass(frozen=True)
class Evaluation:
    decision: Decision | None
    """None when the trigger is gone, disabled or no longer has a threshold."""
    fire: Fire | None = None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def evaluate(registry: Registry, state: dict[str, Any], match: WindowMatch) -> Evaluation:
    trigger = registry.get(match.trigger_id)
    threshold = registry.condition(match.trigger_id).threshold
    if trigger is None or not trigger.enabled or threshold is None:
        return Evaluation(None)
    decision = observe(
        state, threshold, WindowEvent(match.time, match.event_key, match.value, match.event)
    )
    if decision.fire is None or decision.outcome not in (Outcome.FIRED, Outcome.REPLAYED_FIRE):
        return Evaluation(decision)
    window = decision.fire
    crossing = next((s for s in window.sample if s.get("id") == match.event.get("id")), match.event)
    cause = Cause(
        type=CauseKind.EVENT,
        event_id=crossing.get("id"),
        event_type=crossing.get("type"),
        event_source=crossing.get("source"),
        group=match.group,
        count=window.count,
    )
    details = {
        "count": window.count,
        "window_start": _iso(window.window_start),
        "window_end": _iso(window.window_end),
        "group": match.group,
        "group_by": list(threshold.group_by),
        "aggregate": window.aggregate,
        "sample": window.sample,
    }
    # The id comes from the event that crossed the threshold, so a replay re-creates it.
    fire = fire_for(
        trigger,
        f"window\x1f{match.group}\x1f{window.crossing_id}",
        cause,
        {
            "event": match.event if window.crossing_id == match.event_key else crossing,
            "window": details,
        },
    )
    return Evaluation(decision, fire)
