from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from processor.language.conditions import parse_condition
from processor.matching.state import WindowState
from processor.matching.windows import (
    MAX_CONSUMED,
    MAX_PENDING,
    Outcome,
    drop_ahead,
    observe,
)


def threshold(**condition: object):
    parsed = parse_condition({"window": "5m", **condition}).threshold
    assert parsed is not None
    return parsed


def feed(events: list[tuple[float, str]], **condition: object) -> list[Outcome]:
    state, t = WindowState(), threshold(**condition)
    return [observe(state, t, time, event_id).outcome for time, event_id in events]


def test_fifth_event_within_the_window_fires_once() -> None:
    outcomes = feed([(i * 10.0, f"e{i}") for i in range(5)], count_threshold=5)
    assert outcomes == [Outcome.COUNTED] * 4 + [Outcome.FIRED]


def test_after_a_fire_the_window_resets() -> None:
    outcomes = feed([(i * 10.0, f"e{i}") for i in range(10)], count_threshold=5)
    assert outcomes.count(Outcome.FIRED) == 2 and outcomes[4] == outcomes[9] == Outcome.FIRED


def test_events_spread_wider_than_the_window_never_fire() -> None:
    outcomes = feed([(i * 100.0, f"e{i}") for i in range(20)], count_threshold=5)
    assert Outcome.FIRED not in outcomes


def test_duplicates_are_not_counted_before_or_after_a_fire() -> None:
    state, t = WindowState(), threshold(count_threshold=3)
    for i in range(2):
        observe(state, t, float(i), f"e{i}")
    assert observe(state, t, 1.0, "e1").outcome is Outcome.DUPLICATE
    fired = observe(state, t, 2.0, "e2")
    assert fired.outcome is Outcome.FIRED and fired.fire is not None and fired.fire.count == 3
    assert observe(state, t, 2.0, "e2").outcome is Outcome.DUPLICATE
    assert observe(state, t, 0.0, "e0").outcome is Outcome.DUPLICATE


def test_an_event_older_than_the_last_fire_still_counts() -> None:
    state, t = WindowState(), threshold(count_threshold=2)
    observe(state, t, 1.0, "a")
    assert observe(state, t, 5.0, "b").outcome is Outcome.FIRED
    assert observe(state, t, 4.0, "older").outcome is Outcome.COUNTED
    assert observe(state, t, 3.0, "oldest").outcome is Outcome.FIRED


@given(st.permutations(list(range(23))), st.integers(2, 6))
def test_any_arrival_order_inside_one_window_span_gives_floor_n_over_count_fires(
    order: list[int], count: int
) -> None:
    state, t = WindowState(), threshold(count_threshold=count)
    fired = [observe(state, t, 100.0 + n, f"e{n}").outcome for n in order]
    assert fired.count(Outcome.FIRED) == len(order) // count


def test_a_burst_sharing_one_time_keeps_firing_and_the_state_small() -> None:
    state, t = WindowState(), threshold(count_threshold=5)
    fires = sum(observe(state, t, 100.0, f"b{i}").outcome is Outcome.FIRED for i in range(20_000))
    assert fires == 4000
    assert len(state.pending) < 5 and len(state.consumed) <= MAX_CONSUMED
    assert observe(state, t, 101.0, "fresh").outcome is Outcome.COUNTED


def test_out_of_order_events_inside_the_window_count() -> None:
    outcomes = feed(
        [(50.0, "a"), (40.0, "b"), (10.0, "c"), (30.0, "d"), (20.0, "e")], count_threshold=5
    )
    assert outcomes[-1] is Outcome.FIRED


def test_an_event_a_window_behind_the_newest_is_late() -> None:
    outcomes = feed([(1000.0, "a"), (600.0, "b")], count_threshold=2)
    assert outcomes == [Outcome.COUNTED, Outcome.LATE]


def test_cooldown_holds_fires_after_one() -> None:
    events = [(float(i), f"e{i}") for i in range(6)] + [(700.0, "x"), (701.0, "y")]
    outcomes = feed(events, count_threshold=2, cooldown="10m")
    assert outcomes[:4] == [Outcome.COUNTED, Outcome.FIRED, Outcome.COUNTED, Outcome.COOLDOWN]
    assert outcomes[-1] is Outcome.FIRED


def test_with_a_cooldown_the_fires_follow_the_arrival_order_as_the_readme_says() -> None:
    minute = 60.0
    in_time = [(m * minute, f"m{m}") for m in (0, 1, 2, 3, 4, 5, 8)]
    three_to_five_first = in_time[3:6] + in_time[:3] + in_time[6:]
    condition: dict[str, object] = {"count_threshold": 3, "window": "10m", "cooldown": "5m"}
    fired_in_time = feed(in_time, **condition)
    fired_out_of_order = feed(three_to_five_first, **condition)
    assert [t for (t, _), o in zip(in_time, fired_in_time, strict=True) if o is Outcome.FIRED] == [
        2 * minute,
        8 * minute,
    ]
    assert fired_out_of_order.count(Outcome.FIRED) == 1
    assert fired_out_of_order[2] is Outcome.FIRED  # minute 5: minutes 0-2 and 8 held
    assert fired_out_of_order.count(Outcome.COOLDOWN) == 2  # minutes 2 and 8


def test_aggregate_over_the_window() -> None:
    state, t = WindowState(), threshold(aggregate="sum(amount) >= 100")
    assert observe(state, t, 1.0, "a", 60.0).outcome is Outcome.COUNTED
    decision = observe(state, t, 2.0, "b", 50.0)
    assert (
        decision.outcome is Outcome.FIRED
        and decision.fire is not None
        and decision.fire.aggregate == 110.0
    )
    avg = threshold(aggregate="avg(amount) > 10", count_threshold=3)
    state = WindowState()
    outcomes = [observe(state, avg, float(i), str(i), v).outcome for i, v in enumerate([5, 30, 20])]
    assert outcomes == [Outcome.COUNTED, Outcome.COUNTED, Outcome.FIRED]


def test_fire_carries_count_bounds_and_a_bounded_sample() -> None:
    state, t = WindowState(), threshold(count_threshold=12)
    decision = None
    for i in range(12):
        decision = observe(state, t, 100.0 + i, f"e{i}", summary={"id": f"e{i}"})
    assert decision is not None and decision.fire is not None
    assert decision.fire.count == 12 and len(decision.fire.sample) == 10
    assert (decision.fire.window_start, decision.fire.window_end) == (111.0 - 300, 111.0)
    assert decision.fire.crossing_id == "e11"


def test_memory_per_key_is_bounded() -> None:
    state, t = WindowState(), threshold(count_threshold=MAX_PENDING + 1)
    for i in range(MAX_PENDING + 50):
        observe(state, t, float(i) / 1000, f"e{i}")
    assert len(state.pending) == MAX_PENDING


@given(
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 40)), max_size=60), st.integers(1, 6)
)
def test_replaying_any_input_in_any_order_adds_no_fire(
    raw: list[tuple[int, int]], count: int
) -> None:
    """What a crash-and-replay does: the same events again, shuffled; no new crossing ids."""
    t = threshold(count_threshold=count)
    # One id is one event (CloudEvents: source + id), so a repeated id repeats its time.
    first_time: dict[int, int] = {}
    events = [
        (float(first_time.setdefault(event_id, time)), f"e{event_id}") for time, event_id in raw
    ]
    state = WindowState()
    first = {d.fire.crossing_id for e in events if (d := observe(state, t, *e)).fire}
    replay = events[:]
    random.Random(len(events)).shuffle(replay)
    again = {d.fire.crossing_id for e in replay if (d := observe(state, t, *e)).fire}
    assert again <= first


@given(st.lists(st.integers(0, 5000), max_size=80), st.integers(1, 5))
def test_in_order_unique_events_fire_like_a_brute_force_count(times: list[int], count: int) -> None:
    times = sorted(times)
    outcomes = feed([(float(tm), f"e{i}") for i, tm in enumerate(times)], count_threshold=count)
    expected, start = 0, 0
    for i, tm in enumerate(times):
        window = [x for x in times[start : i + 1] if x > tm - 300]
        if len(window) >= count:
            expected += 1
            start = i + 1  # a fire consumes the events it counted
    assert outcomes.count(Outcome.FIRED) == expected


def test_drop_ahead_lets_go_of_what_events_far_ahead_set_and_keeps_the_rest() -> None:
    state, t = WindowState(), threshold(count_threshold=2, cooldown="1h")
    far = 10_000_000.0
    for time, event_id in [(far, "f1"), (far + 1, "f2"), (50.0, "p1")]:
        observe(state, t, time, event_id)  # f1 + f2 fire (their ids consumed); p1 late
    assert state.latest == far + 1 and state.last_fire_end is not None
    assert observe(state, t, 60.0, "p2").outcome is Outcome.LATE
    assert drop_ahead(state, 1000.0) == 2  # the two consumed ids
    assert (state.latest, state.last_fire_end, state.consumed) == (None, None, {})
    assert [observe(state, t, at, i).outcome for at, i in [(60.0, "p2"), (70.0, "p3")]] == [
        Outcome.COUNTED,
        Outcome.FIRED,  # no cooldown held from the window years ahead
    ]
    assert drop_ahead(state, 1000.0) == 0  # nothing ahead: untouched
    assert state.latest == 70.0
