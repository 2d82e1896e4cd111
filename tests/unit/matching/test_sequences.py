from __future__ import annotations

import orjson

from processor.definitions.loader import parse_document
from processor.definitions.registry import Registry
from processor.matching.events import Verdict, match_event
from processor.matching.sequences import (
    DEBOUNCE_KEPT_MAX_BYTES,
    MAX_PENDING,
    SEQUENCE_KEPT_MAX_BYTES,
    absence_deadline,
    on_debounced_event,
    on_first_absence,
    on_first_followed,
    on_second_absence,
    on_second_followed,
    on_tick_absence,
)
from processor.matching.state import (
    DebounceState,
    PatternEvent,
    SequenceState,
    StateKey,
    decode,
    encode,
)
from processor.matching.stateful import evaluate, on_tick
from processor.matching.window_state import MAX_STATE_BYTES
from processor.messages import DomainEvent


def registry_with(event: dict) -> Registry:
    registry = Registry()
    registry.put(
        parse_document(
            {"name": "p", "type": "event", "event": event, "agent": {"id": "a"}}, "t"
        ).resolved("default")
    )
    return registry


def order(type_: str, order_id: str | None, at: float, event_id: str) -> DomainEvent:
    data = {"order_id": order_id} if order_id else {}
    return DomainEvent(id=event_id, type=type_, source="shop", time=at, data=data)


def run(registry: Registry, events: list[DomainEvent], states: dict, now: float) -> list:
    fires = []
    for event in events:
        for match in match_event(registry, event):
            if match.window is None:
                continue
            key = StateKey(match.window.trigger_id, match.window.group)
            evaluation = evaluate(registry, states.get(key), match.window, now)
            if evaluation.state is not None:
                states[key] = evaluation.state
            fires += evaluation.fires
    return fires


FOLLOWED = {
    "pattern": "order.created",
    "followed_by": {"pattern": "order.paid", "within": "30m", "key": "order_id"},
}
FAR = 1e9
"""A `within` no event here is late for."""
ABSENT = {
    "pattern": "order.created",
    "not_followed_by": {"pattern": "order.paid", "within": "30m", "key": "order_id"},
}


def test_a_then_b_within_t_fires_once_per_a_and_only_for_the_same_key() -> None:
    registry, states = registry_with(FOLLOWED), {}
    fires = run(
        registry,
        [
            order("order.created", "o1", 0, "c1"),
            order("order.paid", "o2", 10, "p0"),
            order("order.paid", "o1", 60, "p1"),
        ],
        states,
        100,
    )
    assert len(fires) == 1
    details = fires[0].input["followed_by"]
    assert (
        details["key"] == "o1" and details["first"]["id"] == "c1" and details["then"]["id"] == "p1"
    )
    assert details["seconds_between"] == 60
    assert run(registry, [order("order.paid", "o1", 61, "p2")], states, 100) == []  # A was used
    assert run(registry, [order("order.paid", "o1", 60, "p1")], states, 100) == []  # B again
    state = states[StateKey(registry.documents()[0].trigger_id, "o1")]
    assert state.fires == []  # nothing of the fire is kept in the key's record


def test_seconds_between_is_given_to_the_microsecond_at_todays_epoch_times() -> None:
    registry = registry_with(FOLLOWED)
    a, b = 1796613542.179, 1796613545.749  # 3.57 s apart; their float difference is not
    fires = run(
        registry,
        [order("order.created", "o1", a, "c1"), order("order.paid", "o1", b, "p1")],
        {},
        b,
    )
    assert fires[0].input["followed_by"]["seconds_between"] == 3.57


def test_b_too_late_does_not_pair() -> None:
    registry = registry_with(FOLLOWED)
    assert (
        run(
            registry,
            [order("order.created", "o1", 0, "c1"), order("order.paid", "o1", 1801, "p1")],
            {},
            0,
        )
        == []
    )


def test_a_not_followed_by_b_fires_when_time_runs_out_and_not_when_b_came() -> None:
    registry, states = registry_with(ABSENT), {}
    run(
        registry,
        [
            order("order.created", "paid", 0, "c1"),
            order("order.created", "unpaid", 0, "c2"),
            order("order.paid", "paid", 100, "p1"),
        ],
        states,
        100,
    )
    trigger_id = registry.documents()[0].trigger_id
    before = on_tick(registry, trigger_id, "unpaid", states[StateKey(trigger_id, "unpaid")], 1799)
    assert before.fires == [] and before.deadline == 1800
    [fire] = on_tick(
        registry, trigger_id, "unpaid", states[StateKey(trigger_id, "unpaid")], 1800
    ).fires
    assert fire.input["not_followed_by"]["first"]["id"] == "c2"
    assert fire.input["not_followed_by"]["deadline"] == "1970-01-01T00:30:00+00:00"
    assert (
        on_tick(registry, trigger_id, "paid", states[StateKey(trigger_id, "paid")], 5000).fires
        == []
    )


def test_missing_key_is_a_verdict_not_an_error() -> None:
    registry = registry_with(ABSENT)
    [match] = match_event(registry, order("order.created", None, 0, "c1"))
    assert match.verdict is Verdict.KEY_MISSING


def test_debounce_fires_after_quiet_with_the_burst_and_at_max_wait() -> None:
    registry = registry_with(
        {
            "pattern": "file.*",
            "debounce": {"quiet": "10s", "max_wait": "60s", "key": "user", "max_events": 3},
        }
    )
    trigger_id = registry.documents()[0].trigger_id
    states: dict = {}
    for i, now in enumerate([0, 5, 8, 9]):
        event = DomainEvent(id=f"e{i}", type="file.saved", source="ed", data={"user": "ann"})
        run(registry, [event], states, now)
    state = states[StateKey(trigger_id, "ann")]
    assert on_tick(registry, trigger_id, "ann", state, 18).fires == []
    [fire] = on_tick(registry, trigger_id, "ann", state, 19).fires
    burst = fire.input["debounce"]
    assert (
        [e["id"] for e in burst["events"]] == ["e0", "e1", "e2"]
        and burst["count"] == 4
        and burst["dropped"] == 1
        and (burst["first_seen"], burst["last_seen"])
        == ("1970-01-01T00:00:00+00:00", "1970-01-01T00:00:09+00:00")
    )
    for now in range(100, 170, 5):  # never quiet for 10s: max_wait fires it
        run(
            registry,
            [DomainEvent(id=f"x{now}", type="file.saved", source="ed", data={"user": "ann"})],
            states,
            now,
        )
    assert len(on_tick(registry, trigger_id, "ann", state, 160).fires) == 1


def test_debounce_bursts_of_large_events_keep_their_state_bounded_and_every_fire() -> None:
    """Each fire used to be remembered in the key's state with every event of its burst:
    three bursts of 100 events of 2 KB passed the bound on a key's record, which then
    started afresh, losing the burst it held. A burst also keeps at most
    DEBOUNCE_KEPT_MAX_BYTES of its events (the rest are counted as dropped)."""
    registry = registry_with(
        {"pattern": "file.*", "debounce": {"quiet": "10s", "key": "user", "max_events": 1000}}
    )
    trigger_id = registry.documents()[0].trigger_id
    states: dict = {}
    blob = "".join(f"{i:04x}" for i in range(500))  # 2,000 characters
    now = 0.0
    for burst in range(5):
        events = [
            DomainEvent(
                id=f"b{burst}-{i}",
                type="file.saved",
                source="ed",
                data={"user": "ann", "diff": blob},
            )
            for i in range(400)
        ]
        run(registry, events, states, now)
        state = states[StateKey(trigger_id, "ann")]
        assert len(encode(state, None)) < 600_000
        [fire] = on_tick(registry, trigger_id, "ann", state, now + 10).fires
        details = fire.input["debounce"]
        kept = len(details["events"])
        assert 200 < kept < 400 and details["count"] == 400
        assert details["dropped"] == 400 - kept
        assert len(orjson.dumps(details["events"])) <= DEBOUNCE_KEPT_MAX_BYTES
        assert state.fires == [] and len(encode(state, None)) < 50_000
        now += 100


def test_a_debounce_state_from_before_its_bytes_were_kept_measures_them() -> None:
    events = [PatternEvent(1.0, f"ed\x1fe{i}", {"data": "x" * 100_000}) for i in range(5)]
    old = DebounceState(events, [], [], 1.0, 1.0, 0)
    written = encode(old, None).replace(b',"kept_bytes":null', b"")  # as it was written
    state, _ = decode(written)
    assert isinstance(state, DebounceState) and state.kept_bytes is None
    for i in range(5, 10):
        on_debounced_event(state, f"ed\x1fe{i}", {"data": "x" * 100_000}, 2.0, 100)
    assert len(state.pending) == 5 and state.dropped == 5  # 5 x 100 KB: the sixth passes


def test_sequence_and_threshold_cannot_be_combined() -> None:
    import pytest

    from processor.errors import DefinitionError

    with pytest.raises(DefinitionError, match="use one of a threshold, followed_by"):
        parse_document(
            {
                "name": "x",
                "type": "event",
                "agent": {"id": "a"},
                "event": {**ABSENT, "condition": {"count_threshold": 2, "window": "1m"}},
            },
            "t",
        )


def _noise(seed: int, chars: int) -> str:
    """Text that does not compress (what a 4 KiB payload of ids or hashes is like)."""
    import hashlib

    out, n = [], 0
    while len("".join(out)) < chars:
        out.append(hashlib.sha256(f"{seed}-{n}".encode()).hexdigest())
        n += 1
    return "".join(out)[:chars]


def test_a_sequence_waiting_on_a_thousand_large_as_stays_under_the_record_bound() -> None:
    """Each A waited whole (data up to 4 KiB): some 170 As of one key passed the bound on
    a key's record, which started afresh and forgot them all. Now the As past
    SEQUENCE_WHOLE_MAX_BYTES wait without their data, and past SEQUENCE_KEPT_MAX_BYTES
    the oldest are pushed out, each counted."""
    registry, states = registry_with(ABSENT), {}
    trigger_id = registry.documents()[0].trigger_id
    outcomes: list[str] = []
    for i in range(1200):
        event = DomainEvent(
            id=f"c{i}",
            type="order.created",
            source="shop",
            time=1000.0 + i,
            data={"order_id": "o", "cart": _noise(i, 3900)},
        )
        [match] = [m for m in match_event(registry, event) if m.window is not None]
        key = StateKey(trigger_id, "o")
        evaluation = evaluate(registry, states.get(key), match.window, 2000.0)
        states[key] = evaluation.state
        outcomes.append(evaluation.outcome)
    state = states[StateKey(trigger_id, "o")]
    assert len(encode(state, None)) < MAX_STATE_BYTES
    whole = outcomes.count("first")
    assert 80 < whole < 100 and outcomes[:whole] == ["first"] * whole
    assert outcomes[whole] == "first_without_data"
    assert outcomes.count("pushed_out") == 200  # past the thousandth A
    assert len(state.pending) == MAX_PENDING
    assert state.kept_bytes == sum(len(orjson.dumps(p.summary)) for p in state.pending)
    assert state.kept_bytes <= SEQUENCE_KEPT_MAX_BYTES
    fires = on_tick(registry, trigger_id, "o", state, 1000.0 + 1200 + 1800).fires
    assert len(fires) == MAX_PENDING and state.kept_bytes == 0
    # the oldest 200 were pushed out (they held their data); the rest wait without it
    firsts = [fire.input["not_followed_by"]["first"] for fire in fires]
    assert firsts[0]["id"] == "c200"
    with_data = [f for f in firsts if "data" in f]
    assert all(f["data"]["cart"] for f in with_data)
    assert all(f["data_left_out"] is True for f in firsts if "data" not in f)


def test_a_sequence_counts_the_bytes_of_its_as_through_pairs_answers_and_deadlines() -> None:
    registry, states = registry_with(FOLLOWED), {}
    trigger_id = registry.documents()[0].trigger_id
    events = [
        DomainEvent(
            id=f"e{i}",
            type="order.created" if i % 3 else "order.paid",
            source="shop",
            time=1000.0 + i * 7,
            data={"order_id": "o", "pad": _noise(i, 50 * (i % 13))},
        )
        for i in range(400)
    ]
    run(registry, events, states, 5000.0)
    state = states[StateKey(trigger_id, "o")]
    assert state.kept_bytes == sum(len(orjson.dumps(p.summary)) for p in state.pending)


def test_a_sequence_state_from_before_its_bytes_were_kept_measures_them() -> None:
    old = SequenceState([PatternEvent(1.0, "shop\x1fa", {"id": "a", "data": "x" * 400_000})])
    written = encode(old, None).replace(b',"kept_bytes":null', b"")  # as it was written
    state, _ = decode(written)
    assert isinstance(state, SequenceState) and state.kept_bytes is None
    assert (
        on_first_absence(state, FAR, "shop\x1fb", 2.0, {"id": "b", "data": "y"})
        == "first_without_data"
    )
    assert state.pending[1].summary == {"id": "b", "data_left_out": True}


def test_a_key_takes_each_of_its_newest_2000_events_once_through_a_restore() -> None:
    """Past SCAN_MAX keys a repeat is found in a set (a pass over 2,000 keys per event
    was 27 us of each event's time on a busy key); the set is never written, and is made
    again from `seen` after a restore."""
    state = SequenceState()
    assert [
        on_first_absence(state, FAR, f"shop\x1fe{i}", float(i), {"id": i}) for i in range(3)
    ] == ["first"] * 3
    assert on_first_absence(state, FAR, "shop\x1fe1", 1.0, {"id": 1}) == "duplicate"
    for i in range(3, 2500):
        on_first_absence(state, FAR, f"shop\x1fe{i}", float(i), {"id": i})
    assert state.seen_keys is not None and len(state.seen_keys) == len(state.seen) == 2000
    written = encode(state, None)
    assert b"seen_keys" not in written
    restored, _ = decode(written)
    assert isinstance(restored, SequenceState) and restored.seen_keys is None
    assert restored == state
    for held in (state, restored):
        assert on_first_absence(held, FAR, "shop\x1fe2499", 2499.0, {"id": 2499}) == "duplicate"
        assert on_first_absence(held, FAR, "shop\x1fe500", 500.0, {"id": 500}) == "duplicate"
        # the oldest 500 are no longer remembered: one sent again is taken again
        assert on_first_absence(held, FAR, "shop\x1fe10", 10.0, {"id": 10}) == "pushed_out"
    assert restored.seen == state.seen and len(restored.seen) == 2000


def test_a_b_pairs_with_the_oldest_a_by_event_time_whatever_the_order_they_came_in() -> None:
    """As wait in order of event time (found by bisection: a pass over the As for every
    B cost 80 µs with 1,000 waiting), so a B pairs with the oldest by event time even
    when it came last; an A more than `within` behind the key's newest event is late."""
    state, within = SequenceState(), 60.0
    taken = [
        on_first_followed(state, within, f"shop\x1f{key}", at, {"id": key})[0]
        for key, at in (("a1", 100.0), ("a0", 80.0), ("a2", 110.0), ("old", 10.0))
    ]
    assert taken == ["first", "first", "first", "late"]
    fire = on_second_followed(state, within, "shop\x1fb1", 130.0, {"id": "b1"})
    assert fire is not None and fire.details["first"] == {"id": "a0"}
    assert fire.details["seconds_between"] == 50.0 and fire.cause_key == "shop\x1fb1"
    assert [p.key for p in state.pending] == ["shop\x1fa1", "shop\x1fa2"]
    assert on_second_followed(state, within, "shop\x1fb2", 90.0, {"id": "b2"}) is None  # before
    assert [b.key for b in state.answers] == ["shop\x1fb2"]  # kept for an A that comes later
    assert on_second_followed(state, within, "shop\x1fb9", 500.0, {"id": "b9"}) is None
    # As more than twice `within` and Bs more than `within` behind the newest event go
    assert state.pending == [] and [b.key for b in state.answers] == ["shop\x1fb9"]
    assert state.kept_bytes == len(orjson.dumps({"id": "b9"}))


def test_an_a_that_comes_after_its_b_pairs_with_it_or_is_answered_by_it() -> None:
    """Events of one key may reach it out of order (from other partitions or producers):
    a B kept when it found no A pairs with (followed_by) or answers (not_followed_by) an
    A that comes after it, at most `within` before it."""
    state, within = SequenceState(), 60.0
    assert on_second_followed(state, within, "shop\x1fb1", 100.0, {"id": "b1"}) is None
    assert on_second_followed(state, within, "shop\x1fb2", 105.0, {"id": "b2"}) is None
    assert on_first_followed(state, within, "shop\x1fa0", 106.0, {"id": "a0"}) == ("first", None)
    outcome, fire = on_first_followed(state, within, "shop\x1fa1", 50.0, {"id": "a1"})
    assert outcome == "fired" and fire is not None
    assert fire.details == {"first": {"id": "a1"}, "then": {"id": "b1"}, "seconds_between": 50.0}
    assert fire.cause_key == "shop\x1fb1"  # the id of the fire made had the B come last
    assert on_first_followed(state, within, "shop\x1fa1", 50.0, {"id": "a1"}) == ("duplicate", None)
    [(outcome, fire)] = [on_first_followed(state, within, "shop\x1fa2", 60.0, {"id": "a2"})]
    assert outcome == "fired" and fire is not None and fire.details["then"] == {"id": "b2"}
    assert [a.key for a in state.pending] == ["shop\x1fa0"] and state.answers == []

    absent = SequenceState()
    on_second_absence(absent, within, "shop\x1fp", 100.0)
    assert on_first_absence(absent, within, "shop\x1fc1", 50.0, {"id": "c1"}) == "answered"
    assert on_first_absence(absent, within, "shop\x1fc0", 39.0, {"id": "c0"}) == "late"
    assert on_first_absence(absent, within, "shop\x1fc2", 101.0, {"id": "c2"}) == "first"
    assert [a.key for a in absent.pending] == ["shop\x1fc2"]
    assert absence_deadline(absent, within) == 161.0


def test_a_pair_makes_the_same_fire_in_either_order_and_an_answer_comes_before_its_a() -> None:
    created, paid = order("order.created", "o1", 0, "c1"), order("order.paid", "o1", 60, "p1")
    made = []
    for events in ([created, paid], [paid, created]):
        [fire] = run(registry_with(FOLLOWED), events, {}, 100)
        made.append((fire.execution_id, fire.cause, fire.input))
    assert made[0] == made[1]
    assert made[0][2]["event"]["id"] == "p1"  # the B, whichever came last

    registry, states = registry_with(ABSENT), {}
    run(registry, [paid, created], states, 100)
    trigger_id = registry.documents()[0].trigger_id
    assert on_tick(registry, trigger_id, "o1", states[StateKey(trigger_id, "o1")], 5000).fires == []


def test_as_and_bs_of_a_key_share_its_bounds() -> None:
    """The Bs kept count with the As in MAX_PENDING and SEQUENCE_KEPT_MAX_BYTES: past
    either, whichever is oldest by event time is pushed out."""
    state = SequenceState()
    for i in range(MAX_PENDING):
        on_second_followed(state, FAR, f"shop\x1fb{i}", 10_000.0 + i, {"id": f"b{i}"})
    assert len(state.answers) == MAX_PENDING
    assert on_first_followed(state, FAR, "shop\x1fa", 20_000.0, {"id": "a"}) == ("pushed_out", None)
    assert len(state.answers) + len(state.pending) == MAX_PENDING
    assert state.answers[0].key == "shop\x1fb1"
    sizes = (*state.pending, *state.answers)
    assert state.kept_bytes == sum(len(orjson.dumps(p.summary)) for p in sizes)


def test_not_followed_by_answers_the_as_in_its_span_and_ticks_fire_those_due() -> None:
    within = 60.0
    state = SequenceState()
    for i, at in enumerate((50.0, 10.0, 30.0, 70.0, 30.0, 100.0)):
        on_first_absence(state, within, f"shop\x1fa{i}", at, {"id": f"a{i}"})
    assert absence_deadline(state, within) == 70.0
    on_second_absence(state, within, "shop\x1fb", 60.0)  # answers 0 <= t <= 60
    assert sorted(p.summary["id"] for p in state.pending) == ["a3", "a5"]
    assert absence_deadline(state, within) == 130.0
    assert on_tick_absence(state, within, 129.9) == []
    [due] = on_tick_absence(state, within, 130.0)
    assert due.details["first"] == {"id": "a3"} and absence_deadline(state, within) == 160.0
    assert [b.key for b in state.answers] == ["shop\x1fb"]  # for an A that comes later
    assert state.kept_bytes == len(orjson.dumps({"id": "a5"})) + len(orjson.dumps({}))


def test_a_sequence_state_written_with_its_as_as_they_came_reads_them_by_event_time() -> None:
    came = [PatternEvent(t, f"shop\x1fa{t:g}", {"id": f"a{t:g}"}) for t in (50.0, 10.0, 30.0)]
    written = encode(SequenceState(came, [p.key for p in came]), 70.0)
    state, deadline = decode(written)
    assert isinstance(state, SequenceState) and deadline == 70.0
    assert [p.time for p in state.pending] == [10.0, 30.0, 50.0]
