from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from processor.definitions.loader import parse_document
from processor.definitions.registry import Registry
from processor.matching import fires
from processor.matching.decode import read_event
from processor.matching.events import (
    Verdict,
    _same_in_body,
    judged_on_json,
    match_event,
    taken_by,
    too_far_ahead,
)
from processor.matching.explain import explain
from processor.matching.fires import encoded
from processor.matching.sequences import SEQUENCE_WHOLE_MAX_BYTES
from processor.matching.state import PatternEvent, PendingEvent, SequenceState, WindowState
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


def test_an_edited_trigger_is_matched_as_edited_from_the_next_event() -> None:
    """What the matcher reads from a trigger once (its plan) goes with every change."""
    registry = registry_with(trigger("t", "deploy.*", source=["ci"]))
    event = DomainEvent(id="e", type="deploy.done", source="cd")
    [match] = match_event(registry, event)
    assert match.verdict is Verdict.SOURCE_MISMATCH and match.trigger_id == match.trigger.id
    registry.put(parse_document(trigger("t", "deploy.*", source=["cd"]), "t").resolved("default"))
    assert [m.verdict for m in match_event(registry, event)] == [Verdict.FIRED]
    registry.put(
        parse_document(
            trigger("t", "deploy.*", source=["cd"], condition={"data.x": "> 1"}), "t"
        ).resolved("default")
    )
    assert [m.verdict for m in match_event(registry, event)] == [Verdict.CONDITION_FAILED]


def test_other_workspaces_events_do_not_fire() -> None:
    registry = registry_with(trigger("t", "x"))
    [match] = match_event(registry, DomainEvent(id="e", type="x", workspace_id="beta"))
    assert match.verdict is Verdict.WORKSPACE_MISMATCH


def test_condition_decides_and_thresholds_forward_to_the_window() -> None:
    registry = registry_with(
        trigger("plain", "error.*", condition={"severity": ">= high"}),
        trigger(
            "counted",
            "error.*",
            condition={
                "severity": ">= high",
                "count_threshold": 5,
                "window": "5m",
                "group_by": "data.host",
            },
        ),
    )
    high = DomainEvent(
        id="e", type="error.db", source="s", data={"severity": "critical", "host": "h1"}
    )
    verdicts = {m.trigger.name: m for m in match_event(registry, high)}
    assert verdicts["plain"].verdict is Verdict.FIRED
    windowed = verdicts["counted"]
    assert windowed.verdict is Verdict.WINDOWED and windowed.fire is None
    assert windowed.window is not None and windowed.window.group == "h1"
    assert windowed.window.event_key == "s\x1fe"
    low = DomainEvent(id="f", type="error.db", data={"severity": "low"})
    assert {m.verdict for m in match_event(registry, low)} == {Verdict.CONDITION_FAILED}
    explained = match_event(registry, low, explain=True)[0]
    assert [(o.path, o.matched) for o in explained.trace] == [("severity", False)]


def test_threshold_fire_has_a_deterministic_id_and_carries_the_window() -> None:
    from processor.matching.state import WindowState
    from processor.matching.stateful import evaluate
    from processor.matching.windows import Outcome

    registry = registry_with(
        trigger("counted", "error.*", condition={"count_threshold": 2, "window": "1m"})
    )
    state = WindowState()
    first, second = (
        match_event(
            registry, DomainEvent(id=i, type="error.db", source="s", time=f"2026-01-01T00:00:0{n}Z")
        )[0].window
        for n, i in enumerate(["a", "b"])
    )
    assert first is not None and second is not None
    assert evaluate(registry, state, first, 0).fires == []
    fired = evaluate(registry, state, second, 0)
    [fire] = fired.fires
    window = fire.input["window"]
    assert window["count"] == 2 and window["window_end"] == "2026-01-01T00:00:01+00:00"
    assert [s["id"] for s in window["sample"]] == ["a", "b"]
    assert fire.input["event"]["id"] == "b" and fire.input["k"] == 1
    again = evaluate(registry, state, second, 0)  # the same event sent twice
    assert again.outcome == Outcome.DUPLICATE.value and again.fires == []


def test_invalid_stored_definition_is_ignored_not_raised() -> None:
    registry = Registry()
    registry.apply(b"bad", b"{not json")
    registry.apply(b"bad2", b'{"name": "x"}')
    assert len(registry) == 0


def test_large_event_data_is_left_out_of_a_direct_fires_input_with_a_note() -> None:
    registry = registry_with(trigger("t", "deploy.*"))
    big = {"log": "x" * 200}
    event = DomainEvent(id="e", type="deploy.done", source="ci", data=big)
    [kept] = match_event(registry, event, data_max_bytes=1000)
    assert kept.fire is not None and kept.fire.input["event"]["data"] == big
    [cut] = match_event(registry, event, data_max_bytes=100)
    assert cut.fire is not None
    assert "data" not in cut.fire.input["event"]
    assert cut.fire.input["event"]["data_truncated"] is True
    assert cut.fire.input["event"]["data_bytes"] == len(orjson.dumps(big))


def test_input_mapping_reads_from_the_event_that_fired() -> None:
    raw = trigger("t", "deploy.*")
    raw["agent"]["input_mapping"] = {"service": "$.data.service", "nothing": "$.data.nope"}
    registry = registry_with(raw)
    event = DomainEvent(id="e", type="deploy.done", source="ci", data={"service": "api"})
    [match] = match_event(registry, event)
    assert match.fire is not None
    assert match.fire.input["service"] == "api" and match.fire.input["nothing"] is None
    assert match.fire.input["k"] == 1


@pytest.mark.parametrize("data_max_bytes", [65_536, 100], ids=["kept", "cut"])
def test_a_direct_fire_made_as_json_is_the_fire_the_model_makes(
    data_max_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher writes direct fires without making models (`encode=True`): byte for
    byte what the model gives, data bounds, input mapping and keys included."""
    at = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(fires, "utcnow", lambda: at)
    raw = trigger("t", "deploy.*")
    raw["agent"]["input_mapping"] = {"service": "$.data.service", "nothing": "$.data.nope"}
    raw["throttle"] = {"limit": 5, "period": "1h", "key": "$.service"}
    registry = registry_with(raw, trigger("u", "deploy.done"))
    value = orjson.dumps(
        {
            "id": "e",
            "type": "deploy.done",
            "source": "ci",
            "data": {"service": "api", "log": "x" * 200},
        }
    )
    event = read_event(value, None, topic="events", partition=0, offset=1, timestamp_ms=1)
    models = match_event(registry, event, data_max_bytes=data_max_bytes)
    made = match_event(registry, event, data_max_bytes=data_max_bytes, encode=True)
    assert [m.verdict for m in made] == [m.verdict for m in models] == [Verdict.FIRED] * 2
    assert all(m.fire is None for m in made)
    for model in models:
        assert model.fire is not None
        object.__setattr__(model.fire, "__dict__", {**model.fire.__dict__, "fired_at": at})
    assert [m.encoded for m in made] == [encoded(m.fire) for m in models if m.fire]
    first = made[0].encoded
    assert first is not None
    assert (b'"data_truncated":true' in first.value) is (data_max_bytes == 100)


BODY_CONDITIONS = [
    {"severity": ">= high"},
    {"data.severity": "== high", "region": "in [eu, us]"},
    {"any": [{"severity": "== low"}, {"data.host": "matches ^db-"}]},
    {"not": {"tier": "exists"}},
    {"source": "!= ci"},
    {"time": "exists"},
    {"subject": "exists"},
    {"data": "exists"},
    {"$.data.severity": "== high"},
]
BODIES = [
    {"type": "error.db", "source": "ci", "data": {"severity": "high", "host": "db-1"}},
    {"type": "error.db", "source": "ci", "data": {"severity": "low"}},
    {"type": "error.db", "source": "cd", "region": "eu", "data": {"severity": "high"}},
    {"type": "error.db", "tier": "gold", "subject": "s", "data": {"severity": "low"}},
    {"type": "error.db", "source": "ci", "workspace_id": "other", "data": {"severity": "low"}},
    {"type": "error.db", "data": "not an object"},
    {"type": "error.db"},
]


@pytest.mark.parametrize("condition", BODY_CONDITIONS)
def test_an_event_judged_on_its_json_gets_the_matches_matching_gives_it(
    condition: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`judged_on_json` answers for an event only when every candidate can tell from its
    JSON, and then with what `match_event` says of the event read in full: the same
    verdicts for those that turn it away, and the same matches (windows, fires) from
    `taken_by` for those that take it. A condition on an attribute the event fills in
    (`source`, `subject`, `data` itself, JSONPath) is not judged on the JSON."""
    monkeypatch.setattr(fires, "utcnow", lambda: datetime(2026, 12, 4, tzinfo=UTC))
    direct = trigger("anywhere", "error.*", condition=condition)
    windowed = trigger("on-ci", "error.*", source=["ci"], condition=condition)
    windowed["event"]["condition"] = {**condition, "count_threshold": 2, "window": "1m"}
    registry = registry_with(windowed, direct)
    paths = [registry.condition(entry).paths() for entry in registry.candidates("error.db")]
    decidable = all(_same_in_body(path) for found in paths for path in found)
    judged = taken = 0
    for n, body in enumerate(BODIES):
        entries = registry.candidates(body["type"])
        on_json = judged_on_json(registry, entries, body)
        raw = orjson.dumps(body)
        event = read_event(raw, None, topic="t", partition=0, offset=n, timestamp_ms=1_000)
        full = match_event(registry, event, encode=True)
        if on_json is None:  # one of them cannot tell from the JSON
            assert not decidable, body
            continue
        judged += 1
        refused, plans = on_json
        taking = taken_by(plans, event, encode=True)
        taken += len(taking)
        assert sorted(refused + [(m.trigger_id, m.verdict) for m in taking]) == sorted(
            (m.trigger_id, m.verdict) for m in full
        ), body
        assert [(m.window, m.encoded) for m in taking] == [
            (m.window, m.encoded) for m in full if m.verdict not in TURNED_AWAY
        ], body
    assert not decidable or (judged == len(BODIES) and taken > 0)


TURNED_AWAY = {Verdict.SOURCE_MISMATCH, Verdict.WORKSPACE_MISMATCH, Verdict.CONDITION_FAILED}


def test_which_paths_read_the_same_from_the_json() -> None:
    assert _same_in_body("severity") and _same_in_body("data.severity")
    assert _same_in_body("region") and _same_in_body("data.tags.0")
    assert not _same_in_body("source") and not _same_in_body("subject")
    assert not _same_in_body("data") and not _same_in_body("$.data.severity")
    assert not _same_in_body("time.year") and not _same_in_body("workspace_id")


def test_only_triggers_that_count_by_event_time_refuse_an_event_stamped_far_ahead() -> None:
    registry = registry_with(
        trigger("direct", "x.*"),
        trigger("window", "x.*", condition={"count_threshold": 2, "window": "1m"}),
        trigger("burst", "x.*", debounce={"quiet": "5s", "key": "data.k"}),
        trigger("pair", "x.*", followed_by={"pattern": "y.*", "within": "1m", "key": "data.k"}),
    )
    now = 1_800_000_000.0
    event = DomainEvent(id="e", type="x.a", source="s", time=now + 301, data={"k": "1"})
    matches = match_event(registry, event)
    by_name = {m.trigger.name: m for m in matches}
    reason = too_far_ahead(matches, now + 301, now, 300)
    assert reason is not None and "301 s ahead" in reason
    named = {name for name in by_name if f"'{name}'" in reason}
    assert named == {"window", "pair"}  # not the direct trigger, not the debounce
    assert too_far_ahead(matches, now + 300, now, 300) is None  # within the allowance
    assert too_far_ahead(matches, None, now, 300) is None
    for alone in ("direct", "burst"):  # no state, or quiet on the worker's clock
        assert too_far_ahead([by_name[alone]], now + 10**8, now, 300) is None


def test_explain_tells_an_event_stamped_far_ahead_a_dead_letter_for_a_window() -> None:
    registry = registry_with(
        trigger("window", "x.*", condition={"count_threshold": 2, "window": "1m"}),
        trigger("direct", "x.*"),
    )
    now = 1_800_000_000.0
    event = DomainEvent(id="e", type="x.a", source="s", time=now + 3600)
    found = {e.name: e for e in explain(registry, event, now=now, max_ahead=300)}
    assert "3,600 s ahead" in (found["window"].dead_letter or "")
    window = found["window"].window
    assert window is not None and window["outcome"] == "dead_letter"
    assert not window["with_this_event"]
    assert window["decision"] == "not counted: a dead letter (below)"
    assert found["direct"].dead_letter is None
    assert found["window"].as_json()["dead_letter"] == found["window"].dead_letter
    assert all(e.dead_letter is None for e in explain(registry, event))  # no clock given


def test_explain_counts_as_a_worker_would_once_it_mends_a_window_holding_an_event_far_ahead() -> (
    None
):
    registry = registry_with(
        trigger("window", "x.*", condition={"count_threshold": 3, "window": "1m"})
    )
    [window] = registry.documents()
    now = 1_800_000_000.0
    years_ahead = now + 10**8  # taken by a version before such events were refused
    state = WindowState(
        pending=[
            PendingEvent(now - 20, "s\x1fa", None, {}),
            PendingEvent(years_ahead, "s\x1fz", None, {}),
        ],
        latest=years_ahead,
    )
    event = DomainEvent(id="e", type="x.a", source="s", time=now - 10)
    states = {(window.trigger_id, ""): state}.get

    [blind] = explain(registry, event, states)  # without the clock: what the state says
    assert blind.window is not None and blind.window["late"]
    assert "100,000,010 s (1,157.4 days) older" in blind.window["late_reason"]

    [told] = explain(registry, event, states, now=now, max_ahead=300)
    assert told.window is not None and not told.window["late"]
    assert told.window["with_this_event"] and told.window["count"] == 1
    assert "holds 1 entries stamped more than 300 s ahead" in told.window["mended"]
    assert state.latest == years_ahead and len(state.pending) == 2  # the read state kept


def test_explain_says_what_a_b_kept_before_its_a_makes_of_the_a() -> None:
    registry, ids = order_patterns()
    now = 1_800_000_000.0
    b = PatternEvent(now, "shop\x1fp1", {"id": "p1"})
    paid = SequenceState(seen=[b.key], answers=[b], latest=now)
    answered = SequenceState(seen=[b.key], answers=[b._replace(summary={})], latest=now)
    states = {(ids["paid"], "o1"): paid, (ids["unpaid"], "o1"): answered}.get

    def told(type_: str, id_: str, at: float) -> dict:
        event = DomainEvent(id=id_, type=type_, source="shop", time=at, data={"order": "o1"})
        return {e.name: e for e in explain(registry, event, states, now=now, max_ahead=300)}

    a = told("order.created", "c1", now - 20)
    assert a["paid"].sequence is not None and a["paid"].sequence["pairs_with"] == {"id": "p1"}
    assert (
        "pairs with the B 'p1' that came before it (20 s after it): fires"
        in (a["paid"].sequence["reason"])
    )
    assert a["unpaid"].sequence is not None
    assert "came before it, at most 60 s after it: answered" in a["unpaid"].sequence["reason"]
    late = told("order.created", "c0", now - 61)
    assert late["unpaid"].sequence is not None and late["unpaid"].sequence["late"] is True
    assert (
        "this A is 61 s older than the newest event of its key"
        in (late["unpaid"].sequence["reason"])
    )
    another_b = told("order.paid", "p2", now + 5)
    assert another_b["paid"].sequence is not None
    assert "kept for an A that comes after it" in another_b["paid"].sequence["reason"]
    assert "already taken" in told("order.paid", "p1", now)["paid"].sequence["reason"]
    assert paid.answers == [b] and paid.pending == []  # the state read is not changed


def test_explain_tells_a_missing_field_from_a_value() -> None:
    registry = registry_with(trigger("high", "x.*", condition={"data.note": "== (missing)"}))
    missing = DomainEvent(id="e", type="x.a", source="s", data={})
    [item] = explain(registry, missing)
    assert item.tests == [
        {"field": "data.note", "test": "== '(missing)'", "actual": None, "missing": True, "matched": False}
    ]  # fmt: skip
    present = DomainEvent(id="e", type="x.a", source="s", data={"note": "(missing)"})
    [item] = explain(registry, present)
    assert item.tests[0]["actual"] == "(missing)" and not item.tests[0]["missing"]
    assert item.tests[0]["matched"]


def order_patterns() -> tuple[Registry, dict[str, str]]:
    """`paid` (followed_by) and `unpaid` (not_followed_by) over orders, within 1m keyed
    by data.order, and their ids by name."""
    registry = registry_with(
        trigger("paid", "order.created",
                followed_by={"pattern": "order.paid", "within": "1m", "key": "data.order"}),
        trigger("unpaid", "order.created",
                not_followed_by={"pattern": "order.paid", "within": "1m", "key": "data.order"}),
    )  # fmt: skip
    return registry, {d.name: d.trigger_id for d in registry.documents()}


def test_explain_runs_a_sequences_own_steps_on_a_copy_of_its_state() -> None:
    registry, ids = order_patterns()
    now = 1_800_000_000.0
    a = PatternEvent(now - 30, "shop\x1fc1", {"id": "c1"})
    held = SequenceState(pending=[a], seen=["shop\x1fc1"])
    states = {(ids["paid"], "o1"): held, (ids["unpaid"], "o1"): held}.get

    def told(type_: str, id_: str, data: dict, at: float | None = now) -> dict:
        event = DomainEvent(id=id_, type=type_, source="shop", time=at, data=data)
        return {e.name: e for e in explain(registry, event, states, now=now, max_ahead=300)}

    b = told("order.paid", "p1", {"order": "o1"})
    assert b["paid"].pattern == "order.paid" and b["paid"].sequence is not None
    assert b["paid"].sequence["pairs_with"] == {"id": "c1"}
    assert "pairs with the A 'c1' (30 s before it): fires" in b["paid"].sequence["reason"]
    assert b["unpaid"].sequence is not None and b["unpaid"].sequence["answers"] == 1
    assert held.pending == [a]  # the state read is not changed
    late_b = told("order.paid", "p2", {"order": "o1"}, at=now + 60)  # 90 s after the A
    assert late_b["paid"].sequence is not None
    assert "no A with data.order = 'o1' waits within 60 s" in late_b["paid"].sequence["reason"]
    repeat = told("order.created", "c1", {"order": "o1"})
    assert repeat["unpaid"].sequence is not None
    assert "already taken: a repeat" in repeat["unpaid"].sequence["reason"]
    fresh = told("order.created", "c2", {"order": "o2"}, at=None)  # no time: the record's, now
    assert fresh["unpaid"].sequence is not None
    assert fresh["unpaid"].sequence["deadline"] == "2027-01-15T08:01:00+00:00"
    keyless = told("order.paid", "p3", {})
    assert (
        keyless["paid"].verdict is Verdict.KEY_MISSING and keyless["paid"].pattern == "order.paid"
    )
    assert keyless["paid"].sequence is not None
    assert "has no `data.order`" in keyless["paid"].sequence["reason"]
    ahead = told("order.paid", "p4", {"order": "o1"}, at=now + 3600)  # a dead letter
    assert ahead["paid"].dead_letter is not None and ahead["paid"].sequence is not None
    assert ahead["paid"].sequence["reason"] == "not taken: a dead letter (below)"
    held.kept_bytes = SEQUENCE_WHOLE_MAX_BYTES  # the As of o1 hold all a key keeps whole
    full = told("order.created", "c3", {"order": "o1"})
    assert full["unpaid"].sequence is not None
    assert "without its data" in full["unpaid"].sequence["kept"]
    assert "unless a 'order.paid'" in full["unpaid"].sequence["reason"]


def test_explain_says_what_the_window_makes_of_the_event_with_its_aggregate() -> None:
    registry = registry_with(
        trigger(
            "spend",
            "pay.*",
            condition={
                "count_threshold": 2,
                "window": "1m",
                "group_by": "data.customer",
                "aggregate": "sum(data.amount) >= 1000",
            },
        ),
        trigger(
            "calm",
            "pay.*",
            condition={"count_threshold": 2, "window": "1m", "cooldown": "5m"},
        ),
    )
    ids = {d.name: d.trigger_id for d in registry.documents()}
    now = 1_800_000_000.0
    spent = WindowState(
        pending=[
            PendingEvent(now - 30, "s\x1fa", 300.0, {}),
            PendingEvent(now - 20, "s\x1fb", 300.0, {}),
        ],
        latest=now - 20,
    )
    cooled = WindowState(pending=[PendingEvent(now - 20, "s\x1fc", None, {})], latest=now - 20)
    cooled.last_fire_end = now - 60
    states = {(ids["spend"], "c1"): spent, (ids["calm"], ""): cooled}.get

    def window(amount: object, event_id: str = "e") -> dict:
        event = DomainEvent(
            id=event_id,
            type="pay.made",
            source="s",
            time=datetime.fromtimestamp(now - 10, UTC),
            data={"customer": "c1", "amount": amount},
        )
        found = {e.name: e.window for e in explain(registry, event, states, now=now)}
        assert found["spend"] is not None and found["calm"] is not None
        return {"spend": found["spend"], "calm": found["calm"]}

    small = window(300)["spend"]
    assert small["outcome"] == "counted"
    assert small["decision"] == (
        "counted: 3 of 2 within 60 s; sum(data.amount) over them is 900, not >= 1000"
    )
    assert small["aggregate"] == {
        "expression": "sum(data.amount) >= 1000",
        "event_value": 300.0,
        "value": 900.0,
        "holds": False,
    }
    big = window(500)
    assert big["spend"]["outcome"] == "fired" and big["spend"]["aggregate"]["value"] == 1100.0
    assert big["spend"]["decision"].startswith("fires: 3 events within 60 s (")
    assert big["spend"]["decision"].endswith(", sum(data.amount) = 1100")
    text = window("500")["spend"]
    assert text["outcome"] == "counted" and text["aggregate"]["event_value"] is None
    assert "(data.amount is missing or not a number here: the event counts" in text["decision"]
    again = window(500, event_id="b")["spend"]
    assert again["outcome"] == "duplicate"
    assert "source ('s') and id ('b') is already in the window" in again["decision"]
    held = window(1)["calm"]
    assert held["outcome"] == "cooldown"
    assert (
        "the cooldown (300 s after the last fire's window end) holds it until" in held["decision"]
    )
    assert len(spent.pending) == 2 and len(cooled.pending) == 1  # the read states kept


def test_a_kept_event_carries_its_attributes_up_to_1024_characters() -> None:
    registry = registry_with(
        trigger("counted", "error.*", condition={"count_threshold": 2, "window": "1m"})
    )
    raw = {
        "specversion": "1.0",
        "id": "e",
        "type": "error.db",
        "source": "s",
        "subject": "s" * 5000,
        "traceparent": "t" * 100,
        "blob": {"k": "v" * 2000},
        "data": {"n": 1},
    }
    event = read_event(
        orjson.dumps(raw), [], topic="events", partition=0, offset=0, timestamp_ms=None
    )
    [match] = match_event(registry, event)
    assert match.window is not None
    kept = match.window.event
    assert kept["subject"] == "s" * 1024 + "…" and kept["traceparent"] == "t" * 100
    assert "blob" not in kept and kept["attributes_truncated"] == ["subject", "blob"]
    assert kept["data"] == {"n": 1} and kept["id"] == "e"
    small = {k: v for k, v in raw.items() if k != "blob"} | {"subject": "x"}
    small = read_event(
        orjson.dumps(small), [], topic="events", partition=0, offset=0, timestamp_ms=None
    )
    [plain] = match_event(registry, small)
    assert plain.window is not None and "attributes_truncated" not in plain.window.event


def test_a_kept_event_with_a_thousand_extensions_keeps_16_kib_of_them() -> None:
    registry = registry_with(
        trigger("counted", "error.*", condition={"count_threshold": 2, "window": "1m"})
    )
    raw = {"specversion": "1.0", "id": "e", "type": "error.db", "source": "s"}
    raw |= {f"ext{n:04}": "v" * 1000 for n in range(1000)}
    event = read_event(
        orjson.dumps(raw), [], topic="events", partition=0, offset=0, timestamp_ms=None
    )
    [match] = match_event(registry, event)
    assert match.window is not None
    kept = match.window.event
    assert len(orjson.dumps(kept)) < 24_000
    assert kept["id"] == "e" and kept["type"] == "error.db" and kept["source"] == "s"
    assert kept["attributes_truncated"][-1].endswith("more)")
    assert "ext0000" in kept and "ext0999" not in kept
