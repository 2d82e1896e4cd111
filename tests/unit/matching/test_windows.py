from __future__ import annotations

import random
import uuid

from hypothesis import given
from hypothesis import strategies as st

from processor.language.conditions import parse_condition
from processor.matching.events import event_key
from processor.matching.state import PendingEvent, WindowState, decode, encode
from processor.matching.window_state import MAX_STATE_BYTES
from processor.matching.windows import (
    MAX_CONSUMED,
    MAX_PENDING,
    SAMPLE_KEPT,
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
    """An aggregate that never holds keeps every event of the window pending."""
    state, t = WindowState(), threshold(count_threshold=1, aggregate="min(v) > 100")
    for i in range(MAX_PENDING + 50):
        observe(state, t, float(i) / 1000, f"e{i}", 1.0, {"id": f"e{i}"})
    assert len(state.pending) == MAX_PENDING
    assert state.pending[0].id == "e50"
    assert sum(p.summary is not None for p in state.pending) == SAMPLE_KEPT


def test_a_threshold_of_thousands_of_events_fires_and_its_state_stays_small() -> None:
    """Each pending event kept its summary (4 KiB of data allowed): a state of 2,000
    small events passed the bound a key's record may take (512 KiB), so it started afresh
    at every checkpoint and the trigger never fired."""
    state, t = WindowState(), threshold(count_threshold=2000, window="1h")
    data = {"service": "checkout", "message": "upstream timeout " * 8}
    decisions = []
    for i in range(2000):
        summary = {"id": f"e{i}", "type": "app.error", "source": "/services/checkout", "data": data}
        decisions.append(
            observe(state, t, 1000.0 + i, f"/services/checkout\x1fe{i}", None, summary)
        )
        if i == 1998:
            assert len(encode(state, None)) < 150_000  # was 620 KB with every summary
    fire = decisions[-1].fire
    assert [d.outcome for d in decisions].count(Outcome.FIRED) == 1 and fire is not None
    assert fire.count == 2000
    assert [s["id"] for s in fire.sample] == [f"e{i}" for i in range(1990, 2000)]


def test_only_the_newest_pending_events_keep_their_summary() -> None:
    state, t = WindowState(), threshold(count_threshold=100)
    for i in range(30):
        observe(state, t, 100.0 + i, f"e{i}", summary={"id": f"e{i}"})
    kept = [p.id for p in state.pending if p.summary is not None]
    assert kept == [f"e{i}" for i in range(30 - SAMPLE_KEPT, 30)]
    observe(state, t, 100.5, "late-old", summary={"id": "late-old"})  # far from the newest
    observe(state, t, 128.5, "late-new", summary={"id": "late-new"})  # among them
    summaries = {p.id: p.summary for p in state.pending}
    assert summaries["late-old"] is None and summaries["late-new"] == {"id": "late-new"}
    assert sum(p.summary is not None for p in state.pending) == SAMPLE_KEPT


def test_a_state_that_kept_every_summary_sheds_them_on_its_next_event() -> None:
    """As a version before this one wrote it: every pending event with its summary."""
    old = WindowState([PendingEvent(float(i), f"e{i}", None, {"id": f"e{i}"}) for i in range(50)])
    state, _ = decode(encode(old, None))
    assert isinstance(state, WindowState)
    observe(state, threshold(count_threshold=100), 50.0, "e50", summary={"id": "e50"})
    kept = [p.id for p in state.pending if p.summary is not None]
    assert kept == [f"e{i}" for i in range(51 - SAMPLE_KEPT, 51)]


def test_in_any_arrival_order_the_sample_is_the_newest_ten_counted() -> None:
    times = list(range(30))
    random.Random(3).shuffle(times)
    state, t = WindowState(), threshold(count_threshold=30)
    decisions = [observe(state, t, float(i), f"e{i}", summary={"id": f"e{i}"}) for i in times]
    fire = decisions[-1].fire
    assert fire is not None and fire.count == 30
    assert [s["id"] for s in fire.sample] == [f"e{i}" for i in range(20, 30)]


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


@given(st.permutations(range(40)), st.integers(1, 8))
def test_events_inside_one_window_span_give_floor_n_over_count_fires_in_any_order(
    order: list[int], count: int
) -> None:
    outcomes = feed([(float(i), f"e{i}") for i in order], count_threshold=count)
    assert outcomes.count(Outcome.FIRED) == len(order) // count


def _as_before(
    pending: list[tuple[float, str, float | None]],
    state: dict,
    t,
    at: float,
    event_id: str,
    value: float | None,
) -> tuple[str, tuple | None]:
    """The window's rules as they were written before its lists were searched by time
    (a scan of every pending event per window), to hold the faster code to. The ids a
    fire counted are forgotten, oldest first, once a window behind the newest event at
    a later fire (an id sent again after that is late, not a duplicate)."""
    width = t.window_seconds
    if event_id in state["consumed"] or any(p[1] == event_id for p in pending):
        return "duplicate", None
    latest = state["latest"]
    if latest is None or at > latest:
        state["latest"] = latest = at
    elif latest - at >= width:
        return "late", None
    pending.append((at, event_id, value))
    pending.sort(key=lambda p: p[0])
    pending[:] = [p for p in pending if p[0] > latest - width]
    held = False
    for end in [p[0] for p in pending if at <= p[0] < at + width]:
        inside = [p for p in pending if end - width < p[0] <= end]
        if len(inside) < t.count:
            continue
        numbers = [p[2] for p in inside if p[2] is not None]
        if t.aggregate is not None and not (numbers and t.aggregate.holds(numbers)):
            continue
        last = state["last_fire_end"]
        if t.cooldown_seconds and last is not None and end < last + t.cooldown_seconds:
            held = True
            continue
        consumed = state["consumed"]
        consumed.update((p[1], p[0]) for p in inside)
        while consumed and next(iter(consumed.values())) <= latest - width:
            del consumed[next(iter(consumed))]  # the oldest counted, a window behind
        pending[:] = [p for p in pending if not end - width < p[0] <= end]
        state["last_fire_end"] = end if last is None else max(last, end)
        return "fired", (len(inside), end - width, end)
    return ("cooldown" if held else "counted"), None


@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 60), st.integers(0, 20)), max_size=80),
    st.integers(1, 30),
    st.sampled_from([{}, {"cooldown": "2m"}, {"aggregate": "sum(v) >= 30"}]),
)
def test_out_of_order_decisions_are_the_rules_as_written(
    raw: list[tuple[int, int, int]], count: int, extra: dict
) -> None:
    t = threshold(count_threshold=count, **extra)
    first_time: dict[int, int] = {}
    state = WindowState()
    pending: list[tuple[float, str, float | None]] = []
    before = {"consumed": {}, "latest": None, "last_fire_end": None}
    for time, event_id, value in raw:
        at = float(first_time.setdefault(event_id, time))  # one id, one time
        decision = observe(state, t, at, f"e{event_id}", float(value))
        fire = decision.fire
        got = (fire.count, fire.window_start, fire.window_end) if fire is not None else None
        assert (decision.outcome.value, got) == _as_before(
            pending, before, t, at, f"e{event_id}", float(value)
        )


def test_a_window_of_the_largest_threshold_fits_the_bound_on_a_key_state() -> None:
    """4,999 pending events with long sources and an aggregated value, the ids of the
    1,000 a fire counted before, and summaries of a few KiB: under MAX_STATE_BYTES, so a
    threshold validation allows can be reached."""
    state, largest = WindowState(), threshold(count_threshold=MAX_PENDING, window="1d")
    source = "https://api.example.com/regions/eu-west-1/services/checkout"
    summary = {"id": "x", "source": source, "data": {"trace": "t" * 3000}}
    at = 1_765_100_000.123456
    for i in range(MAX_CONSUMED + MAX_PENDING - 1):
        t = threshold(count_threshold=MAX_CONSUMED, window="1d") if i < MAX_CONSUMED else largest
        key = event_key(source, str(uuid.UUID(int=i)))
        outcome = observe(state, t, at + i / 7, key, 1234.567891 + i, summary).outcome
        assert outcome is (Outcome.FIRED if i == MAX_CONSUMED - 1 else Outcome.COUNTED)
    assert len(state.pending) == MAX_PENDING - 1 and len(state.consumed) == MAX_CONSUMED
    assert len(encode(state, None)) < MAX_STATE_BYTES


def test_a_large_window_finds_duplicates_by_its_id_index_which_is_never_written() -> None:
    state, t = WindowState(), threshold(count_threshold=100)
    for i in range(40):
        observe(state, t, float(i), f"e{i}")
    assert state.pending_ids == {f"e{i}" for i in range(40)}
    assert b"pending_ids" not in encode(state, None)
    assert observe(state, t, 39.0, "e7").outcome is Outcome.DUPLICATE
    restored, _ = decode(encode(state, None))
    assert isinstance(restored, WindowState) and restored.pending_ids is None
    assert observe(restored, t, 39.0, "e7").outcome is Outcome.DUPLICATE
    for i in range(40, 100):  # the 100th fires: every id leaves the index for `consumed`
        observe(restored, t, float(i), f"e{i}")
    assert restored.pending == [] and restored.pending_ids == set()
    assert observe(restored, t, 99.0, "e7").outcome is Outcome.DUPLICATE
