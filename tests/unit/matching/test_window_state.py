from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processor.definitions.loader import parse_document
from processor.definitions.registry import Registry
from processor.matching import fires, window_state
from processor.matching.events import Matched
from processor.matching.fires import encoded
from processor.matching.state import StateKey, decode
from processor.matching.window_state import WindowPartitions
from processor.messages import Fire, WindowMatch

HANDLER = {
    "name": "Error Handler",
    "type": "event",
    "event": {"pattern": "error.*", "condition": {"count_threshold": 3, "window": "5m"}},
    "agent": {"id": "a"},
}
QUIET = {
    "name": "Quiet",
    "type": "event",
    "event": {"pattern": "x", "debounce": {"key": "data.k", "quiet": "10s"}},
    "agent": {"id": "a"},
}


def registry_with(*raw: dict) -> tuple[Registry, list[str]]:
    registry = Registry()
    ids = []
    for document in raw:
        resolved = parse_document(document, "t").resolved("default")
        registry.put(resolved)
        ids.append(resolved.trigger_id)
    return registry, ids


def match(trigger_id: str, n: int, group: str = "") -> WindowMatch:
    return WindowMatch(trigger_id=trigger_id, group=group, event_key=f"s\x1fe{n}", time=100.0 + n)


def test_the_third_match_fires_and_each_changed_key_is_one_record_per_checkpoint() -> None:
    registry, [handler] = registry_with(HANDLER)
    windows = WindowPartitions()
    fires = [f for n in range(3) for f in windows.observe(registry, 4, match(handler, n), 0.0)]
    assert len(fires) == 1 and fires[0].input["window"]["count"] == 3
    records, oversized = windows.changelog()
    assert oversized == []
    assert [(p, k) for p, k, _ in records] == [(4, StateKey(handler).encode())]
    assert windows.changelog() == ([], [])  # nothing changed since
    assert windows.take_outcomes() == {"counted": 2, "fired": 1}


def test_a_new_owner_restores_the_same_state_and_does_not_fire_twice() -> None:
    registry, [handler] = registry_with(HANDLER)
    first = WindowPartitions()
    for n in range(2):
        first.observe(registry, 0, match(handler, n), 0.0)
    records, _ = first.changelog()
    second = WindowPartitions()
    for partition, key, value in records:
        second.load(partition, key, value)
    assert second.states.keys() == first.states.keys()
    for partition, states in first.states.items():
        for key, state in states.items():
            assert second.state(partition, key) == state
    assert second.observe(registry, 0, match(handler, 1), 0.0) == []  # a duplicate
    assert len(second.observe(registry, 0, match(handler, 2), 0.0)) == 1


def test_a_state_past_the_record_limit_starts_afresh_with_a_tombstone(monkeypatch) -> None:
    registry, [handler] = registry_with(HANDLER)
    windows = WindowPartitions()
    windows.observe(registry, 1, match(handler, 0), 0.0)
    monkeypatch.setattr(window_state, "MAX_STATE_BYTES", 10)
    records, oversized = windows.changelog()
    assert [(p, v) for p, _, v in records] == [(1, None)]
    assert oversized[0].key == StateKey(handler) and oversized[0].size > 10
    assert windows.states[1] == {}


def test_deadlines_survive_a_restore_and_expire_fires_the_quiet_key() -> None:
    registry, [quiet] = registry_with(QUIET)
    windows = WindowPartitions()
    windows.observe(registry, 2, match(quiet, 0, group="k1"), 1000.0)
    records, _ = windows.changelog()
    [(_, key, value)] = records
    assert value is not None and decode(value)[1] is not None
    restored = WindowPartitions()
    restored.load(2, key, value)
    assert restored.expire(registry, 1001.0) == []
    [fire] = restored.expire(registry, 2000.0)
    assert fire.trigger_id == quiet


def test_dropping_partitions_forgets_their_state() -> None:
    registry, [handler] = registry_with(HANDLER)
    windows = WindowPartitions()
    windows.observe(registry, 1, match(handler, 0), 0.0)
    windows.observe(registry, 2, match(handler, 0, group="g"), 0.0)
    windows.drop([1])
    assert set(windows.states) == {2}
    windows.drop(None)
    assert windows.states == {}


def test_a_restored_window_is_read_only_when_its_key_is_used() -> None:
    registry, [handler] = registry_with(HANDLER)
    first = WindowPartitions()
    first.observe(registry, 0, match(handler, 0), 0.0)
    first.observe(registry, 0, match(handler, 0, group="other"), 0.0)
    records, _ = first.changelog()
    second = WindowPartitions()
    for partition, key, value in records:
        second.load(partition, key, value)
    assert all(isinstance(kept, bytes) for kept in second.states[0].values())
    assert second.observe(registry, 0, match(handler, 1), 0.0) == []
    kept = second.states[0]
    assert not isinstance(kept[StateKey(handler)], bytes)
    assert isinstance(kept[StateKey(handler, "other")], bytes)
    # Only the key used is written again; the other keeps its record as it was.
    records, _ = second.changelog()
    assert [key for _, key, _ in records] == [StateKey(handler).encode()]
    assert len(second.observe(registry, 0, match(handler, 2), 0.0)) == 1  # counted 0, 1, 2


FOLLOWED = {
    "name": "Paid",
    "type": "event",
    "event": {
        "pattern": "order.created",
        "followed_by": {"pattern": "order.paid", "within": "30m", "key": "order_id"},
    },
    "agent": {"id": "a"},
}


def test_a_batch_of_a_keys_matches_decides_as_the_matches_one_by_one() -> None:
    """`observe_all` (the matcher's batch) against `observe` per match: the same fires,
    outcomes, state record and deadline, for a window (duplicates, a late event, fires),
    a debounce and a sequence."""
    registry, [handler, quiet, paid] = registry_with(HANDLER, QUIET, FOLLOWED)
    times = [5, 1, 3, 9, 2, 400, 401, 1, 402, 403, 404, 405]
    window = [
        WindowMatch(trigger_id=handler, event_key=f"s\x1fw{i}", time=100.0 + n)
        for i, n in enumerate(times)
    ]
    window.insert(3, window[2])  # a duplicate
    debounce = [
        WindowMatch(trigger_id=quiet, group="k", event_key=f"s\x1fq{n}", time=100.0 + n)
        for n in range(4)
    ]
    sequence = [
        WindowMatch(trigger_id=paid, group="o1", role=role, event_key=f"s\x1f{n}", time=n)
        for n, role in enumerate(["first", "second", "first", "first", "second"])
    ]
    seen = []
    for matches in (window, debounce, sequence):
        key = StateKey(matches[0].trigger_id, matches[0].group)
        one_by_one, batched = WindowPartitions(), WindowPartitions()
        single = [f for m in matches for f in one_by_one.observe(registry, 1, Matched.of(m), 50.0)]
        together = batched.observe_all(registry, 1, key, [Matched.of(m) for m in matches], 50.0)
        assert [f.execution_id for f in together] == [f.execution_id for f in single]
        outcomes = batched.take_outcomes()
        assert outcomes == one_by_one.take_outcomes()
        assert batched.changelog() == one_by_one.changelog()
        assert batched.deadlines == one_by_one.deadlines
        seen.append((len(single), dict(outcomes)))
    assert seen == [
        (3, {"counted": 8, "fired": 3, "duplicate": 1, "late": 1}),
        (0, {"debounced": 4}),
        (2, {"first": 3, "fired": 2}),
    ]


EVERY_SETTING = {
    "name": "Every setting",
    "type": "event",
    "event": {"pattern": "error.*", "condition": {"count_threshold": 2, "window": "5m"}},
    "agent": {
        "id": "a",
        "input": {"team": "core"},
        "input_mapping": {"service": "$.data.service", "nothing": "$.data.nope"},
    },
    "throttle": {"limit": 5, "period": "1h", "key": "$.event.data.customer"},
    "circuit_breaker": {"failures": 3},
    "retry": {"attempts": 3},
    "on_failure": "emit",
    "concurrency": {"limit": 2, "key": "$.service"},
    "max_concurrent": 4,
    "overlap": "buffer_all",
}


@pytest.mark.parametrize("raw", [HANDLER, EVERY_SETTING], ids=["plain", "every setting"])
@pytest.mark.parametrize(
    "data",
    [
        {"service": "db", "customer": "c1"},
        {"service": "db"},  # no throttle key: the empty one
        {"big": 2**70},  # a value orjson does not write: pydantic writes the fire
    ],
    ids=["keys", "no throttle key", "huge int"],
)
def test_a_window_fire_made_as_json_is_the_fire_the_models_make(
    raw: dict, data: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher writes window fires without making models (`observe_encoded`); what
    it writes must be, byte for byte, what the models give."""
    at = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
    monkeypatch.setattr(fires, "utcnow", lambda: at)
    registry, [trigger_id] = registry_with(raw)

    def matches() -> list[Matched]:
        return [
            Matched(
                trigger_id,
                "",
                "event",
                f"s\x1fe{n}",
                100.0 + n,
                None,
                {"id": f"e{n}", "type": "error.db", "source": "s", "data": data},
            )
            for n in range(6)
        ]

    key = StateKey(trigger_id)
    models = WindowPartitions().observe_all(registry, 0, key, matches(), 0.0)
    made = WindowPartitions().observe_encoded(registry, 0, key, matches(), 0.0)
    assert len(models) >= 2
    for fire in models:
        object.__setattr__(fire, "__dict__", {**fire.__dict__, "fired_at": at})
    assert made == [encoded(fire) for fire in models]
    assert [Fire.model_validate_json(one.value) for one in made] == models


LONG = {
    "name": "Slow Burn",
    "type": "event",
    "event": {
        "pattern": "error.*",
        "condition": {"count_threshold": 3, "window": "1h", "group_by": "data.host"},
    },
    "agent": {"id": "a"},
}


def test_a_key_no_event_reached_for_the_idle_time_is_forgotten_with_a_tombstone() -> None:
    registry, [handler] = registry_with(HANDLER)
    windows = WindowPartitions()
    windows.observe(registry, 0, match(handler, 0, group="old"), 1000.0)
    windows.observe(registry, 0, match(handler, 0, group="fresh"), 1000.0)
    windows.changelog()
    windows.observe(registry, 0, match(handler, 1, group="fresh"), 3000.0)  # reached again
    assert windows.forget_idle(registry, 4599.0, floor=3600.0) == 0
    assert windows.forget_idle(registry, 4600.0, floor=3600.0) == 1
    assert set(windows.states[0]) == {StateKey(handler, "fresh")}
    records, _ = windows.changelog()
    assert (0, StateKey(handler, "old").encode(), None) in records
    assert windows.keys() == 1
    # The forgotten group starts afresh: its old event no longer counts.
    windows.observe(registry, 0, match(handler, 1, group="old"), 4700.0)
    assert windows.observe(registry, 0, match(handler, 2, group="old"), 4700.0) == []
    assert windows.forget_idle(registry, 1e9, floor=0) == 0  # 0: kept for ever


def test_a_trigger_that_looks_further_back_keeps_its_keys_longer() -> None:
    registry, [slow, handler] = registry_with(LONG, HANDLER)
    windows = WindowPartitions()
    windows.observe(registry, 3, match(slow, 0, group="h1"), 0.0)
    windows.observe(registry, 3, match(handler, 0, group="h1"), 10.0)
    # Past the floor (60 s) each key is kept twice its window: 10 min, and 2 h.
    assert windows.forget_idle(registry, 609.0, floor=60.0) == 0
    assert windows.forget_idle(registry, 610.0, floor=60.0) == 1
    assert set(windows.states[3]) == {StateKey(slow, "h1")}
    assert windows.forget_idle(registry, 7199.0, floor=60.0) == 0
    assert windows.forget_idle(registry, 7200.0, floor=60.0) == 1
    assert windows.states[3] == {}


def test_a_key_reached_while_it_waited_is_kept_from_its_new_time() -> None:
    registry, [slow] = registry_with(LONG)
    windows = WindowPartitions()
    windows.observe(registry, 0, match(slow, 0, group="h"), 0.0)
    assert windows.forget_idle(registry, 100.0, floor=60.0) == 0  # waits for 7200
    windows.observe(registry, 0, match(slow, 1, group="h"), 5000.0)
    assert windows.forget_idle(registry, 7200.0, floor=60.0) == 0
    assert windows.forget_idle(registry, 12199.0, floor=60.0) == 0
    assert windows.forget_idle(registry, 12200.0, floor=60.0) == 1


def test_a_key_with_a_deadline_to_come_is_not_forgotten_before_it() -> None:
    registry, [quiet] = registry_with(QUIET)
    windows = WindowPartitions()
    windows.observe(registry, 2, match(quiet, 0, group="k1"), 1000.0)
    assert windows.forget_idle(registry, 1100.0, floor=5.0) == 0  # quiet: fires at 1010
    [fire] = windows.expire(registry, 1100.0)
    assert fire.trigger_id == quiet
    assert windows.forget_idle(registry, 1200.0, floor=5.0) == 1


def test_keys_of_a_deleted_trigger_are_forgotten_after_the_floor() -> None:
    registry, [slow] = registry_with(LONG)
    windows = WindowPartitions()
    windows.observe(registry, 0, match(slow, 0, group="h"), 0.0)
    registry.apply(slow, None)  # deleted (a tombstone in trigger-definitions)
    assert windows.forget_idle(registry, 60.0, floor=60.0) == 1


def test_restored_keys_count_as_reached_when_restored_and_few_are_looked_at_a_turn() -> None:
    registry, [handler] = registry_with(HANDLER)
    first = WindowPartitions()
    for n in range(5):
        first.observe(registry, 0, match(handler, 0, group=f"g{n}"), 0.0)
    records, _ = first.changelog()
    second = WindowPartitions()
    for partition, key, value in records:
        second.load(partition, key, value)
    second.restored([0], 5000.0)
    assert second.forget_idle(registry, 5000.0 + 3599, floor=3600.0) == 0
    assert second.forget_idle(registry, 5000.0 + 3600, floor=3600.0, budget=2) == 2
    assert second.forget_idle(registry, 5000.0 + 3600, floor=3600.0, budget=2) == 2
    assert second.forget_idle(registry, 5000.0 + 3600, floor=3600.0, budget=2) == 1
    assert second.keys() == 0
    assert len(second.changelog()[0]) == 5


def test_load_all_restores_what_load_does_record_by_record() -> None:
    registry, [handler, quiet] = registry_with(HANDLER, QUIET)
    source = WindowPartitions()
    source.observe(registry, 0, match(handler, 0, group="a"), 0.0)
    source.observe(registry, 0, match(handler, 0, group="b"), 0.0)
    source.observe(registry, 0, match(quiet, 0, group="k"), 1000.0)  # with a deadline
    records = [(key, value) for _, key, value in source.changelog()[0]]
    records += [(StateKey(handler, "b").encode(), None)]  # then deleted
    window_a = dict(records)[StateKey(handler, "a").encode()]
    records += [(StateKey(quiet, "k").encode(), window_a)]  # then a window's record
    one_by_one, at_once = WindowPartitions(), WindowPartitions()
    for key, value in records:
        one_by_one.load(3, key, value)
    at_once.load_all(3, records)
    assert at_once.states == one_by_one.states and at_once.deadlines == one_by_one.deadlines
    assert set(at_once.states[3]) == {StateKey(handler, "a"), StateKey(quiet, "k")}
    assert at_once.deadlines[3] == {}


def test_a_restored_key_an_event_reached_since_is_kept_from_that_event() -> None:
    registry, [handler] = registry_with(HANDLER)
    first = WindowPartitions()
    for group in ("quiet", "busy"):
        first.observe(registry, 0, match(handler, 0, group=group), 0.0)
    second = WindowPartitions()
    second.load_all(0, [(key, value) for _, key, value in first.changelog()[0]])
    second.restored([0], 5000.0)
    second.observe(registry, 0, match(handler, 1, group="busy"), 6000.0)
    assert second.forget_idle(registry, 8600.0, floor=3600.0) == 1
    assert set(second.states[0]) == {StateKey(handler, "busy")}
    assert second.forget_idle(registry, 9599.0, floor=3600.0) == 0
    assert second.forget_idle(registry, 9600.0, floor=3600.0) == 1


def test_a_window_that_took_an_event_far_ahead_before_lets_it_go_and_counts_on() -> None:
    """State written before the matcher refused events stamped far ahead of its clock:
    the group's newest time is years away and every present event would be late."""
    registry, [handler] = registry_with(HANDLER)
    now = 1_800_000_000.0

    def at(n: int, time: float) -> WindowMatch:
        return WindowMatch(trigger_id=handler, event_key=f"s\x1fe{n}", time=time)

    before = WindowPartitions()  # no allowance: as the versions before
    before.observe(registry, 0, at(0, now + 4 * 365 * 86400), now)
    assert before.observe(registry, 0, at(1, now), now) == []
    assert before.take_outcomes() == {"counted": 1, "late": 1}
    records, _ = before.changelog()
    restored = WindowPartitions(max_ahead=300)
    for partition, key, value in records:
        restored.load(partition, key, value)
    fires = [f for n in range(1, 4) for f in restored.observe(registry, 0, at(n, now + n), now)]
    assert len(fires) == 1 and fires[0].input["window"]["count"] == 3
    assert restored.take_outcomes() == {"counted": 2, "fired": 1}
    within = WindowPartitions(max_ahead=300)  # 200 s ahead is within the allowance
    within.observe(registry, 0, at(0, now + 200), now)
    within.observe(registry, 0, at(1, now - 300), now)
    assert within.take_outcomes() == {"counted": 1, "late": 1}


@pytest.mark.parametrize("slack", [0, window_state.DUE_SLACK])
def test_ticks_fire_each_quiet_key_once_when_due_whatever_moved_its_deadline(
    monkeypatch, slack: int
) -> None:
    """Deadlines are kept in a heap (a tick costs what is due, not a pass over every key
    with a deadline): each debounced event moves its key's deadline and leaves an entry
    behind, which must never fire, and a restore halfway makes the heap again."""
    import random

    monkeypatch.setattr(window_state, "DUE_SLACK", slack)
    registry, [quiet] = registry_with(QUIET)
    rng = random.Random(7)
    arrivals = sorted((rng.uniform(0, 300), f"k{rng.randrange(40)}") for _ in range(1500))
    windows = WindowPartitions()
    fired: list[tuple[int, str, int]] = []
    expected: list[tuple[int, str, int]] = []
    burst: dict[str, list[float]] = {}
    n = 0
    for tick in range(1, 330):
        while n < len(arrivals) and arrivals[n][0] < tick:
            at, group = arrivals[n]
            windows.observe(registry, int(group[1:]) % 3, match(quiet, n, group=group), at)
            burst.setdefault(group, []).append(at)
            n += 1
        for group, times in sorted(burst.items()):
            if times and times[-1] + 10 <= tick:
                expected.append((tick, group, len(times)))
                burst[group] = []
        fired += sorted(
            (tick, f.input["debounce"]["key"], f.input["debounce"]["count"])
            for f in windows.expire(registry, float(tick))
        )
        if tick == 150:  # a new owner of every partition
            records, _ = windows.changelog()
            windows = WindowPartitions()
            for partition, key, value in records:
                windows.load(partition, key, value)
    assert fired == sorted(expected) and len(fired) > 100
    assert all(heap == [] for heap in windows.due.values())
    assert windows.deadlines == {0: {}, 1: {}, 2: {}}
