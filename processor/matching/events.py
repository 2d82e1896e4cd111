"""The event matcher: which triggers does a domain event fire? (Stateless hot path.)"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.messages import Cause, CauseKind, DomainEvent, Fire, execution_id_for


class Verdict(StrEnum):
    """Why a candidate trigger did or did not fire on an event."""

    FIRED = "fired"
    SOURCE_MISMATCH = "source_mismatch"
    WORKSPACE_MISMATCH = "workspace_mismatch"
    CONDITION_UNSUPPORTED = "condition_unsupported"
    """The trigger has a condition this version cannot evaluate yet; it never fires."""


@dataclass(frozen=True)
class Match:
    trigger: TriggerDocument
    verdict: Verdict
    fire: Fire | None = None


def event_cause_key(event: DomainEvent) -> str:
    """CloudEvents ids are unique per source, so the pair identifies the event."""
    return f"{event.source}\x1f{event.id}"


def fire_for_event(trigger: TriggerDocument, event: DomainEvent) -> Fire:
    trigger_id = trigger.trigger_id
    return Fire(
        execution_id=execution_id_for(trigger_id, CauseKind.EVENT, event_cause_key(event)),
        trigger_id=trigger_id,
        trigger_name=trigger.name,
        agent_id=trigger.agent.id,
        workspace_id=trigger.workspace or "default",
        timeout_seconds=trigger.timeout_seconds,
        cause=Cause(
            type=CauseKind.EVENT,
            event_id=event.id,
            event_type=event.type,
            event_source=event.source,
        ),
        input={**trigger.agent.input, "event": event.model_dump(mode="json", exclude_none=True)},
    )


def match_event(registry: Registry, event: DomainEvent) -> list[Match]:
    """Every candidate trigger (by pattern) with its verdict, fires included."""
    matches = []
    for trigger_id in sorted(registry.event_patterns.candidates(event.type)):
        trigger = registry.get(trigger_id)
        if trigger is None or trigger.event is None:
            continue
        if trigger.event.source and event.source not in trigger.event.source:
            matches.append(Match(trigger, Verdict.SOURCE_MISMATCH))
        elif event.workspace_id and trigger.workspace and event.workspace_id != trigger.workspace:
            matches.append(Match(trigger, Verdict.WORKSPACE_MISMATCH))
        elif trigger.event.condition:
            matches.append(Match(trigger, Verdict.CONDITION_UNSUPPORTED))
        else:
            matches.append(Match(trigger, Verdict.FIRED, fire_for_event(trigger, event)))
    return matches
