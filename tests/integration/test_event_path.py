"""The event path on real streams: arrival order across partitions, and bursts."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from processor import topics
from processor.kafka.reader import read_to_end
from processor.matching.state import (
    PatternFire,
    PendingEvent,
    SequenceState,
    StateKey,
    WindowState,
    changelog_topic,
    encode,
)
from processor.worker.event_matcher import partition_of
from tests.integration.kafka import ROOT, Pipeline, incompressible, reading, settle
from tests.integration.test_cli_and_serve import free_port, get

ERROR_HANDLER = ROOT / "examples" / "error-handler.yaml"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FOLLOWED = "{pattern: big.asked, followed_by: {pattern: big.answered, within: 1h, key: data.who}}"


def event(event_id: str, event_type: str, source: str, at: datetime, data: dict) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "type": event_type,
            "source": source,
            "time": at.isoformat(),
            "data": data,
        }
    )


def error(event_id: str, at: datetime) -> bytes:
    return event(event_id, "error.database", "system", at, {"severity": "high"})


def produce(pipeline: Pipeline, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(
        {"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"}
    )
    for key, value in records:
        producer.produce(pipeline.topic(topics.EVENTS), key=key, value=value)
        producer.poll(0)
    assert producer.flush(60) == 0


def start_worker(pipeline: Pipeline) -> str:
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    trigger_id = pipeline.cli("get", "Error Handler", "-o", "id").stdout.strip()
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    return trigger_id


def apply_trigger(pipeline: Pipeline, name: str, event_yaml: str) -> str:
    """A one-trigger definition applied; its id."""
    path = pipeline.workdir / f"{name.lower()}.yaml"
    path.write_text(
        f"trigger: {{name: {name}, type: event, agent: {{id: a}}, event: {event_yaml}}}\n"
    )
    pipeline.cli("apply", "-f", str(path))
    return pipeline.cli("get", name, "-o", "id").stdout.strip()


def record_sizes(pipeline: Pipeline, key: str) -> list[int]:
    """The size of each record of one key in the window state's changelog."""
    return [
        len(message.value() or b"")
        for message in read_to_end(pipeline.settings, pipeline.topic(topics.WINDOW_STATE))
        if message.key() == key.encode()
    ]


def test_events_keyed_by_producer_over_every_partition_give_floor_n_over_5_fires(
    pipeline: Pipeline,
) -> None:
    trigger_id = start_worker(pipeline)
    rng = random.Random(7)
    n = 103
    records = [
        (
            f"producer-{i % 40}".encode(),
            error(f"e{i}", T0 + timedelta(seconds=rng.uniform(0, 240))),
        )
        for i in range(n)
    ]
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(pipeline, records)
        fires(lambda seen: len(seen) >= n // 5, timeout=120)
        found = settle(fires, 5)  # and nothing more: each event counted once
    assert len({key for key, _ in records}) == 40  # spread over every partition of `events`
    assert [f["trigger_id"] for f in found] == [trigger_id] * (n // 5)
    assert [f["input"]["window"]["count"] for f in found] == [5] * (n // 5)


@pytest.mark.timeout(900)  # its own waits allow 12 minutes: 100,000 events on a slow machine
def test_a_burst_sharing_one_time_keeps_the_worker_up_and_the_state_small(
    pipeline: Pipeline,
) -> None:
    trigger_id = start_worker(pipeline)
    burst = 100_000
    records = [(b"one-host", error(f"b{i}", T0)) for i in range(burst)]
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(pipeline, records)
        fires(lambda seen: len(seen) >= burst // 5, timeout=600)
        produce(
            pipeline,
            [(b"one-host", error(f"fresh{i}", T0 + timedelta(seconds=30))) for i in range(5)],
        )
        seen = fires(
            lambda seen: any(f["cause"]["event_id"] == "fresh4" for f in seen), timeout=120
        )
    assert len(seen) == burst // 5 + 1
    assert pipeline.processes[0].poll() is None
    states = [
        message.value()
        for message in read_to_end(pipeline.settings, pipeline.topic(topics.WINDOW_STATE))
        if message.key() == f"{trigger_id}\x1f".encode()
    ]
    assert states and max(len(value or b"") for value in states[-5:]) < 100_000


def test_a_threshold_of_thousands_of_large_events_fires_and_its_state_stays_small(
    pipeline: Pipeline,
) -> None:
    """Every pending event used to keep its summary (4 KiB of data each): 150 of these
    passed the bound on a key's record, which then started afresh at each checkpoint, so
    a threshold of 4,000 never fired. Now the window keeps the summaries of its newest
    events only, and one record of the key stays small whatever the threshold."""
    trigger_id = apply_trigger(
        pipeline, "Hoarder", "{pattern: 'big.*', condition: {count_threshold: 4000, window: 1h}}"
    )
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    source = "https://checkout.example.com/regions/eu-west-1/pods/checkout-7f9c"

    def big(i: int) -> bytes:
        at = T0 + timedelta(milliseconds=i)
        raw = orjson.loads(event(f"b{i}", "big.one", source, at, {"trace": incompressible(3500)}))
        return orjson.dumps(raw)

    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
    ):
        for part in range(4):  # checkpoints between them: the state is written each time
            produce(pipeline, [(b"k", big(i)) for i in range(part * 1000, part * 1000 + 1000)])
            time.sleep(1)
        [fire] = fires(lambda seen: len(seen) >= 1, timeout=120)
        assert settle(letters, 2) == []
    window = fire["input"]["window"]
    assert fire["trigger_id"] == trigger_id and window["count"] == 4000
    assert [e["id"] for e in window["sample"]] == [f"b{i}" for i in range(3990, 4000)]
    states = record_sizes(pipeline, f"{trigger_id}\x1f")
    assert len(states) >= 3 and max(states) < 400_000, states  # 4,000 x 3.5 KB: 14 MB
    assert pipeline.processes[0].poll() is None


def test_a_sequence_waiting_on_hundreds_of_large_as_keeps_them_all_and_fires_for_each(
    pipeline: Pipeline,
) -> None:
    """A sequence kept each A it waits on whole (data up to 4 KiB): some 170 of them for
    one key passed the bound on a key's record, which started afresh with a dead letter,
    forgetting every A it held, so their Bs fired nothing. Now the As past 384 KiB wait
    without their data (`data_left_out`), and each B still pairs with its A."""
    trigger_id = apply_trigger(pipeline, "Hoarder", FOLLOWED)
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    asked = [
        (b"k", event(f"a{i}", "big.asked", "s", T0, {"who": "w", "blob": incompressible(3500)}))
        for i in range(300)
    ]
    answered = [
        (b"k", event(f"b{i}", "big.answered", "s", T0 + timedelta(seconds=1), {"who": "w"}))
        for i in range(300)
    ]
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
    ):
        for part in range(3):  # checkpoints between them: the state is written each time
            produce(pipeline, asked[part * 100 : part * 100 + 100])
            time.sleep(1)
        produce(pipeline, answered)
        found = fires(lambda seen: len(seen) >= 300, timeout=120)
        assert settle(letters, 2) == []
    firsts = [fire["input"]["followed_by"]["first"] for fire in found]
    assert sorted(first["id"] for first in firsts) == sorted(f"a{i}" for i in range(300))
    whole = [first for first in firsts if "data" in first]
    assert 80 < len(whole) < 120 and all(first["data"]["blob"] for first in whole)
    assert all(first["data_left_out"] is True for first in firsts if "data" not in first)
    states = record_sizes(pipeline, f"{trigger_id}\x1fw")
    assert len(states) >= 3 and max(states) < 600_000, states  # 300 x 3.5 KB: 1 MB
    assert pipeline.processes[0].poll() is None


def test_a_state_an_earlier_version_grew_past_the_bound_starts_afresh_with_a_dead_letter(
    pipeline: Pipeline,
) -> None:
    """Earlier versions kept a sequence's last 20 fires, with the events of each, in the
    key's record (now dropped at the key's next fire). Such a record and one more A
    pass the bound on a key's record: the key starts afresh, with a dead letter and a
    metric, never a crash, and its next A and B fire."""
    trigger_id = apply_trigger(pipeline, "Upgraded", FOLLOWED)
    remembered = [
        PatternFire(f"s\x1fold{i}", {"first": {"id": f"old{i}", "blob": incompressible(40_000)}})
        for i in range(20)
    ]
    key = StateKey(trigger_id, "w").encode()
    settings = pipeline.settings
    seeder = Producer({"bootstrap.servers": pipeline.bootstrap})
    seeder.produce(
        changelog_topic(settings),
        key=key,
        value=encode(SequenceState(fires=remembered), None),  # about 800 KB
        partition=partition_of(key, settings.topic_partitions),
    )
    assert seeder.flush(30) == 0
    port = free_port()
    pipeline.start("worker", name="worker", extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(port)})
    pipeline.wait_ready("worker", "[^Worker]: Ready")

    def asked(event_id: str, event_type: str = "big.asked") -> tuple[bytes, bytes]:
        return (b"w", event(event_id, event_type, "s", T0, {"who": "w"}))

    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
    ):
        produce(pipeline, [asked("a1")])
        [letter] = letters(lambda seen: len(seen) >= 1, timeout=60)
        produce(pipeline, [asked("a2")])
        time.sleep(1)
        produce(pipeline, [asked("b2", "big.answered")])
        [fire] = fires(lambda seen: len(seen) >= 1, timeout=60)
        assert settle(letters, 2) == [letter]
    assert letter["component"] == "window-evaluator" and "starts afresh" in letter["error"]
    assert fire["input"]["followed_by"]["first"]["id"] == "a2"  # a1 went with the old state
    metrics = get(f"http://127.0.0.1:{port}/metrics")[1]
    assert "triggers_window_state_oversized_total 1.0" in metrics
    assert pipeline.processes[0].poll() is None


def test_an_event_past_the_allowed_lateness_is_counted_in_a_metric_and_explained(
    pipeline: Pipeline,
) -> None:
    """The Error Handler's window is 5 minutes, and so is its allowed lateness."""
    port = free_port()
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    pipeline.start("worker", name="worker", extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(port)})
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    produce(pipeline, [(b"h", error("newest", T0))])
    produce(pipeline, [(b"h", error("stale", T0 - timedelta(minutes=6)))])
    deadline = time.monotonic() + 60
    while 'triggers_window_outcomes_total{outcome="late"} 1.0' not in (
        metrics := get(f"http://127.0.0.1:{port}/metrics")[1]
    ):
        assert time.monotonic() < deadline, metrics[-3000:]
        time.sleep(0.3)
    assert 'triggers_window_outcomes_total{outcome="counted"} 1.0' in metrics
    stale = pipeline.workdir / "stale.json"
    stale.write_bytes(error("stale-again", T0 - timedelta(minutes=6)))
    [explained] = orjson.loads(pipeline.cli("explain", "-f", str(stale), "-o", "json").stdout)
    window = explained["window"]
    assert (window["late"], window["with_this_event"], window["count"]) == (True, False, 1)
    assert window["allowed_lateness_seconds"] == 300
    assert "360 s older than the newest event" in window["late_reason"]
    shown = pipeline.cli("explain", "-f", str(stale)).stdout
    assert "late: this event is 360 s older" in shown
    fresh = pipeline.workdir / "fresh.json"
    fresh.write_bytes(error("fresh", T0 - timedelta(minutes=1)))
    [counted] = orjson.loads(pipeline.cli("explain", "-f", str(fresh), "-o", "json").stdout)
    assert (counted["window"]["late"], counted["window"]["with_this_event"]) == (False, True)


def test_an_event_stamped_years_ahead_is_a_dead_letter_and_does_not_silence_the_window(
    pipeline: Pipeline,
) -> None:
    """Counted, it would be the window's newest event and the five after it late."""
    start_worker(pipeline)
    now = datetime.now(UTC)
    ahead = error("from-2030", now + timedelta(days=4 * 365))
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
    ):
        produce(pipeline, [(b"h", ahead)])
        [letter] = letters(lambda seen: len(seen) >= 1, timeout=60)
        produce(pipeline, [(b"h", error(f"now{i}", now + timedelta(seconds=i))) for i in range(5)])
        [fire] = fires(lambda seen: len(seen) >= 1, timeout=60)
    assert letter["component"] == "event-matcher"
    assert "ahead of the worker's clock" in letter["error"]
    assert "'Error Handler' count by event time" in letter["error"]
    assert sorted(e["id"] for e in fire["input"]["window"]["sample"]) == [
        f"now{i}" for i in range(5)
    ]
    sent = pipeline.workdir / "ahead.json"
    sent.write_bytes(ahead)
    [explained] = orjson.loads(pipeline.cli("explain", "-f", str(sent), "-o", "json").stdout)
    assert "ahead of the worker's clock" in explained["dead_letter"]
    assert explained["window"]["outcome"] == "dead_letter"  # not "counted", as it said
    shown = pipeline.cli("explain", "-f", str(sent)).stdout
    assert "dead letter: event time" in shown
    assert "this event: not counted: a dead letter (below)" in shown


def test_an_event_stamped_years_ahead_still_fires_a_trigger_without_state(
    pipeline: Pipeline,
) -> None:
    """Only the triggers that count by event time refuse it; sent again with its right
    time, the one that took it recognises it (same execution id) and starts nothing."""
    notifier = pipeline.workdir / "notifier.yaml"
    notifier.write_text(
        "trigger: {name: Notifier, type: event, event: {pattern: 'error.*'}, agent: {id: n}}\n"
    )
    pipeline.cli("apply", "-f", str(notifier))
    start_worker(pipeline)
    now = datetime.now(UTC)
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
        reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs,
    ):
        produce(pipeline, [(b"h", error("from-2030", now + timedelta(days=4 * 365)))])
        [letter] = letters(lambda seen: len(seen) >= 1, timeout=60)
        [first] = runs(lambda seen: len(seen) >= 1, timeout=60)
        produce(pipeline, [(b"h", error("from-2030", now))])  # its time mended
        again = settle(runs, 5)
    assert "'Error Handler' count by event time" in letter["error"]
    assert first["agent_id"] == "n"
    assert [r["execution_id"] for r in again] == [first["execution_id"]]


def test_a_window_an_earlier_version_gave_an_event_years_ahead_counts_present_events(
    pipeline: Pipeline,
) -> None:
    """State written before the matcher refused such events: the group's newest event is
    in 2030, so every present one was late. The worker lets it go and counts again."""
    pipeline.cli("apply", "-f", str(ERROR_HANDLER))
    trigger_id = pipeline.cli("get", "Error Handler", "-o", "id").stdout.strip()
    ahead = (datetime.now(UTC) + timedelta(days=4 * 365)).timestamp()
    summary = {"id": "from-2030", "type": "error.database", "source": "system"}
    state = WindowState(pending=[PendingEvent(ahead, "system\x1ffrom-2030", None, summary)])
    state.latest = ahead
    key = StateKey(trigger_id).encode()
    settings = pipeline.settings
    seeder = Producer({"bootstrap.servers": pipeline.bootstrap})
    seeder.produce(
        changelog_topic(settings),
        key=key,
        value=encode(state, None),
        partition=partition_of(key, settings.topic_partitions),
    )
    assert seeder.flush(30) == 0
    present = pipeline.workdir / "present.json"
    present.write_bytes(error("present", datetime.now(UTC)))
    [told] = orjson.loads(pipeline.cli("explain", "-f", str(present), "-o", "json").stdout)
    assert (told["window"]["late"], told["window"]["count"]) == (False, 0)  # as a worker counts
    assert "holds 1 entries stamped more than 300 s ahead" in told["window"]["mended"]
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    now = datetime.now(UTC)
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(pipeline, [(b"h", error(f"now{i}", now + timedelta(seconds=i))) for i in range(5)])
        [fire] = fires(lambda seen: len(seen) >= 1, timeout=60)
    shown = pipeline.cli("explain", "-f", str(present)).stdout
    assert "mended:" not in shown and "late:" not in shown, shown  # the state let them go
    assert sorted(e["id"] for e in fire["input"]["window"]["sample"]) == [
        f"now{i}" for i in range(5)
    ]
    assert "ahead of the clock by more than TRIGGERS_EVENT_TIME_MAX_AHEAD_SECONDS" in (
        pipeline.log("worker")
    )


def test_a_restarted_worker_restores_window_state_from_its_own_disk(pipeline: Pipeline) -> None:
    trigger_id = start_worker(pipeline)
    key = f"{trigger_id}\x1f".encode()
    produce(pipeline, [(b"h", error(f"before{i}", T0 + timedelta(seconds=i))) for i in range(3)])
    deadline = time.monotonic() + 60
    while not any(
        message.key() == key and b"before2" in (message.value() or b"")
        for message in read_to_end(pipeline.settings, pipeline.topic(topics.WINDOW_STATE))
    ):
        assert time.monotonic() < deadline, pipeline.log("worker")[-3000:]
        time.sleep(0.5)
    time.sleep(1)  # past the commit that wrote it, and so past the local write after it
    pipeline.stop(pipeline.processes[0])
    pipeline.start("worker", name="worker")  # the same data directory
    pipeline.wait_ready("worker", "1 keys from the local store and 0 records")
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(
            pipeline, [(b"h", error(f"after{i}", T0 + timedelta(seconds=10 + i))) for i in range(2)]
        )
        [fire] = fires(lambda seen: len(seen) >= 1, timeout=60)
    assert fire["input"]["window"]["count"] == 5
    assert [s["id"] for s in fire["input"]["window"]["sample"]] == [
        "before0", "before1", "before2", "after0", "after1"
    ]  # fmt: skip


IDLE_TRIGGER = """
trigger:
  name: Per User
  type: event
  event:
    pattern: login.failed
    condition:
      count_threshold: 2
      window: 1s
      group_by: data.user
  agent:
    id: lockout
"""


PER_USER_HOURLY = IDLE_TRIGGER.replace("window: 1s", "window: 1h")


def login_failed(event_id: str, user: str) -> bytes:
    return event(event_id, "login.failed", "auth", datetime.now(UTC), {"user": user})


def test_a_group_by_field_that_is_null_or_an_object_keys_its_group_as_json_writes_it(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker_with(PER_USER_HOURLY)
    now = datetime.now(UTC)
    odd: list[Any] = [None, None, {"id": 7}, {"id": 7}, True, True]
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(
            pipeline,
            [
                (b"u", event(f"e{i}", "login.failed", "auth", now, {"user": user}))
                for i, user in enumerate(odd)
            ],
        )
        found = fires(lambda seen: len(seen) >= 3, timeout=60)
    groups = sorted(fire["input"]["window"]["group"] for fire in found)
    assert groups == ["", "true", '{"id":7}'], groups  # not 'None', 'True', "{'id': 7}"


def test_group_by_values_holding_the_key_separator_do_not_share_a_window(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker_with(
        PER_USER_HOURLY.replace("group_by: data.user", "group_by: [data.user, data.zone]")
    )
    now = datetime.now(UTC)
    pairs = [("x\x1fy", "z"), ("x", "y\x1fz"), ("p", "q"), ("p", "q")]
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(  # one key: in order on one partition, the pair that fires comes last
            pipeline,
            [
                (b"u", event(f"e{i}", "login.failed", "auth", now, {"user": u, "zone": z}))
                for i, (u, z) in enumerate(pairs)
            ],
        )
        found = fires(
            lambda seen: any(f["input"]["window"]["group"] == "p\x1fq" for f in seen), timeout=60
        )
    assert [fire["input"]["window"]["group"] for fire in found] == ["p\x1fq"]


def test_a_group_by_value_of_megabytes_fires_under_a_bounded_key_and_stops_nothing(
    pipeline: Pipeline,
) -> None:
    """A 600 KB group value went into every record of its window and into its fire; the
    fire passed the broker's limit and the matcher's transaction failed at every try,
    holding up every event behind it."""
    pipeline.start_worker_with(PER_USER_HOURLY)
    now = datetime.now(UTC)
    huge = incompressible(600_000)
    users = [huge, huge, "ann", "ann"]
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(  # one key: in order on one partition, the huge group first
            pipeline,
            [
                (b"u", event(f"e{i}", "login.failed", "auth", now, {"user": user}))
                for i, user in enumerate(users)
            ],
        )
        found = fires(lambda seen: len(seen) >= 2, timeout=90)
    [bounded] = [
        f["input"]["window"]["group"] for f in found if f["input"]["window"]["group"] != "ann"
    ]
    assert bounded.startswith(huge[:256] + "…sha256:") and len(bounded) < 400
    assert "transaction failed" not in pipeline.log("worker")


def test_events_with_attributes_of_megabytes_keep_a_window_going_and_a_fire_too_large_is_a_dead_letter(
    pipeline: Pipeline,
) -> None:
    """A `subject` of 375 KB went whole into each match, state record and fire of its
    window: the fire passed the broker's limit and the matcher's transaction failed at
    every try. Now kept events carry attributes up to 1,024 characters, and a fire that
    is still too large (a direct one, its input from the trigger and the event) is a dead
    letter holding the fire."""
    noise = incompressible(800_000)
    heavy = (
        "trigger: {id: heavy, name: Heavy, type: event, event: {pattern: bulky.*},"
        f" agent: {{id: a, input: {{manual: '{noise}'}}}}}}\n"
    )
    pipeline.start_worker_with(PER_USER_HOURLY, heavy)
    now = datetime.now(UTC)

    def with_subject(event_id: str, event_type: str, user: str, subject: str) -> bytes:
        raw = orjson.loads(event(event_id, event_type, "auth", now, {"user": user}))
        return orjson.dumps({**raw, "subject": subject})

    subjects = [incompressible(375_000) for _ in range(2)]
    records = [
        with_subject("b0", "login.failed", "bob", subjects[0]),
        with_subject("b1", "login.failed", "bob", subjects[1]),
        with_subject("k0", "bulky.one", "kim", subjects[0]),  # 800 KB input + 375 KB event
        with_subject("a0", "login.failed", "ann", "s"),
        with_subject("a1", "login.failed", "ann", "s"),
    ]
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
    ):
        produce(pipeline, [(b"u", record) for record in records])
        found = fires(lambda seen: len(seen) >= 2, timeout=90)
        [letter] = letters(lambda seen: len(seen) >= 1, timeout=30)
    by_group = {fire["input"]["window"]["group"]: fire["input"] for fire in found}
    assert sorted(by_group) == ["ann", "bob"]
    crossing = by_group["bob"]["event"]
    assert crossing["attributes_truncated"] == ["subject"]
    assert crossing["subject"] == subjects[1][:1024] + "…"
    assert [e["id"] for e in by_group["bob"]["window"]["sample"]] == ["b0", "b1"]
    assert "the fire of trigger 'heavy' is" in letter["error"]
    assert "over the 1,000,000 a fire may take" in letter["error"]
    assert letter["topic"] == pipeline.topic(topics.TRIGGER_FIRES)
    assert "transaction failed" not in pipeline.log("worker")


def test_groups_no_event_reaches_are_forgotten_and_a_forgotten_group_starts_afresh(
    pipeline: Pipeline,
) -> None:
    """A `group_by` over ever new values (here 60 users) does not keep their state for
    ever: past TRIGGERS_STATE_IDLE_SECONDS each key's record is deleted."""
    port = free_port()
    definition = pipeline.workdir / "per-user.yaml"
    definition.write_text(IDLE_TRIGGER)
    pipeline.cli("apply", "-f", str(definition))
    trigger_id = pipeline.cli("get", "Per User", "-o", "id").stdout.strip()
    pipeline.start(
        "worker",
        name="worker",
        extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(port), "TRIGGERS_STATE_IDLE_SECONDS": "3"},
    )
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    users = [f"user-{i}" for i in range(60)]
    produce(pipeline, [(u.encode(), login_failed(f"{u}-a", u)) for u in users])

    def metric(name: str) -> float | None:
        for line in get(f"http://127.0.0.1:{port}/metrics")[1].splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    deadline = time.monotonic() + 60
    while metric("triggers_state_keys") != 60:
        assert time.monotonic() < deadline, pipeline.log("worker")[-3000:]
        time.sleep(0.2)
    while metric("triggers_state_keys_forgotten_total") != 60:
        assert time.monotonic() < deadline, pipeline.log("worker")[-3000:]
        time.sleep(0.2)
    assert metric("triggers_state_keys") == 0
    state_topic = pipeline.topic(topics.WINDOW_STATE)
    written = {}
    for message in read_to_end(pipeline.settings, state_topic):
        written[message.key()] = message.value()
    assert {k for k, v in written.items() if v is None} == {
        f"{trigger_id}\x1f{u}".encode() for u in users
    }  # every key written, then deleted; compaction will drop them for good
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        produce(pipeline, [(b"user-7", login_failed(f"user-7-{n}", "user-7")) for n in "bc"])
        [fire] = fires(lambda seen: len(seen) >= 1, timeout=60)
        assert settle(fires, 3) == [fire]
    assert [s["id"] for s in fire["input"]["window"]["sample"]] == ["user-7-b", "user-7-c"]
