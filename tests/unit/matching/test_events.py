from __future__ import annotations

from processor.definitions.loader import parse_document
from processor.definitions.registry import Registry
from processor.matching.events import Verdict, match_event
from processor.messages import DomainEvent


def registry_with(*documents: dict) -> Registry:
    registry = Registry()
    for raw in documents:
        registry.put(parse_document(raw, "test").resolved("default"))
    return registry


def trigger(name: str, pattern: str, **event: object) -> dict:
    return {
        "name": name,
        "type": "event",
        "event": {"pattern": pattern, **event},
        "agent": {"id": "a", "input": {"k": 1}},
    }


def test_matching_trigger_fires_with_its_input_and_the_event() -> None:
    registry = registry_with(trigger("t", "deploy.*", source=["ci"]))
    event = DomainEvent(id="e-1", type="deploy.done", source="ci", data={"x": 1})
    [match] = match_event(registry, event)
    assert match.verdict is Verdict.FIRED and match.fire is not None
    assert match.fire.input["k"] == 1 and match.fire.input["event"]["data"] == {"x": 1}
    again = match_event(registry, event)[0].fire
    assert again is not None and again.execution_id == match.fire.execution_id


def test_wrong_source_and_disabled_and_deleted_triggers_do_not_fire() -> None:
    registry = registry_with(
        trigger("t", "deploy.*", source=["ci"]),
        {**trigger("off", "deploy.*"), "enabled": False},
    )
    [match] = match_event(registry, DomainEvent(id="e", type="deploy.done", source="other"))
    assert match.verdict is Verdict.SOURCE_MISMATCH
    registry.apply(match.trigger.trigger_id, None)
    assert match_event(registry, DomainEvent(id="e", type="deploy.done", source="ci")) == []


def test_other_workspaces_events_do_not_fire() -> None:
    registry = registry_with(trigger("t", "x"))
    [match] = match_event(registry, DomainEvent(id="e", type="x", workspace_id="beta"))
    assert match.verdict is Verdict.WORKSPACE_MISMATCH


def test_condition_not_yet_supported_never_fires() -> None:
    registry = registry_with(trigger("t", "error.*", condition={"severity": ">= high"}))
    [match] = match_event(registry, DomainEvent(id="e", type="error.db"))
    assert match.verdict is Verdict.CONDITION_UNSUPPORTED and match.fire is None


def test_invalid_stored_definition_is_ignored_not_raised() -> None:
    registry = Registry()
    registry.apply(b"bad", b"{not json")
    registry.apply(b"bad2", b'{"name": "x"}')
    assert len(registry) == 0
