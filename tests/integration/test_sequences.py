"""Sequence, absence and debounce triggers on the real broker."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Producer

from processor import topics
from tests.integration.kafka import Pipeline, incompressible, reading, settle, start_serve

TRIGGERS = """
trigger:
  id: paid-fast
  name: Paid soon after created
  type: event
  event:
    pattern: order.created
    followed_by: {pattern: order.paid, within: 1m, key: data.order_id}
  agent: {id: thank-you}
---
trigger:
  id: unpaid
  name: Created but not paid
  type: event
  event:
    pattern: order.created
    not_followed_by: {pattern: order.paid, within: 3s, key: data.order_id}
  agent: {id: reminder}
---
trigger:
  id: saves
  name: Burst of saves
  type: event
  event:
    pattern: file.saved
    debounce: {quiet: 2s, max_wait: 30s, key: data.user}
  agent: {id: summarizer}
"""

UNPAID_WITHIN_15S = (
    "trigger: {id: unpaid, name: Unpaid, type: event, event: {pattern: order.created,"
    " not_followed_by: {pattern: order.paid, within: 15s, key: data.order_id}},"
    " agent: {id: dun}}\n"
)


def event(type_: str, event_id: str, **data: str) -> dict:
    return {
        "type": type_,
        "source": "shop",
        "id": event_id,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }


def test_sequence_absence_and_debounce(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TRIGGERS)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        pipeline.produce(
            topics.EVENTS, orjson.dumps(event("order.created", "c1", order_id="o1")), key=b"o1"
        )
        pipeline.produce(
            topics.EVENTS, orjson.dumps(event("order.created", "c2", order_id="o2")), key=b"o2"
        )
        pipeline.produce(
            topics.EVENTS, orjson.dumps(event("order.paid", "p1", order_id="o1")), key=b"o1"
        )
        for i in range(3):
            # Keyed by user: Kafka orders events per key, and the burst keeps that order.
            pipeline.produce(
                topics.EVENTS, orjson.dumps(event("file.saved", f"s{i}", user="ann")), key=b"ann"
            )
            time.sleep(0.3)
        runs(lambda cs: len(cs) >= 3, timeout=60)
        commands = settle(runs, 5)
    by_agent: dict[str, list[dict]] = {}
    for command in commands:
        by_agent.setdefault(command["agent_id"], []).append(command)
    [thanks] = by_agent["thank-you"]
    assert thanks["input"]["followed_by"]["first"]["id"] == "c1"
    assert thanks["input"]["followed_by"]["then"]["id"] == "p1"
    [reminder] = by_agent["reminder"]  # o1 was paid; only o2 is reminded
    absence = reminder["input"]["not_followed_by"]
    assert absence["first"]["id"] == "c2"
    deadline = datetime.fromisoformat(absence["deadline"])  # ISO 8601, as event times
    assert deadline - datetime.fromisoformat(absence["first"]["time"]) == timedelta(seconds=3)
    [summary] = by_agent["summarizer"]
    burst = summary["input"]["debounce"]
    assert [e["id"] for e in burst["events"]] == ["s0", "s1", "s2"]
    first_seen, last_seen = (datetime.fromisoformat(burst[k]) for k in ("first_seen", "last_seen"))
    assert timedelta(0) <= last_seen - first_seen < timedelta(seconds=30)
    assert 0 < thanks["input"]["followed_by"]["seconds_between"] < 60


EXPLAINED = """
trigger: {id: paid, name: Paid, type: event, event: {pattern: order.created,
  followed_by: {pattern: order.paid, within: 1h, key: data.order_id}}, agent: {id: thanks}}
---
trigger: {id: unpaid, name: Unpaid, type: event, event: {pattern: order.created,
  not_followed_by: {pattern: order.paid, within: 1h, key: data.order_id}}, agent: {id: dun}}
---
trigger: {id: saves, name: Saves, type: event, event: {pattern: file.saved,
  debounce: {quiet: 1h, key: data.user}}, agent: {id: summarizer}}
"""


def test_explain_says_what_a_sequence_makes_of_an_event(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(EXPLAINED)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.produce(topics.EVENTS, orjson.dumps(event("order.created", "c9", order_id="o9")))
    pipeline.produce(topics.EVENTS, orjson.dumps(event("file.saved", "s1", user="ann")))

    def explained(sent: dict) -> dict[str, dict]:
        path = tmp_path / "event.json"
        path.write_bytes(orjson.dumps(sent))
        report = orjson.loads(pipeline.cli("explain", "-f", str(path), "-o", "json").stdout)
        return {item["trigger_id"]: item for item in report}

    paid = {"type": "order.paid", "source": "shop", "id": "p9", "data": {"order_id": "o9"}}
    deadline = time.monotonic() + 60
    saved = event("file.saved", "s2", user="ann")
    while (found := explained(paid))["paid"]["sequence"]["waiting"] < 1 or (
        explained(saved)["saves"]["sequence"]["burst"] < 2
    ):  # until the worker committed the A and the first save
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    assert found["paid"]["pattern"] == "order.paid"  # the B's pattern, not the A's
    assert found["paid"]["sequence"]["role"] == "second"
    assert found["paid"]["sequence"]["pairs_with"]["id"] == "c9"
    assert "a B: pairs with the A 'c9'" in found["paid"]["sequence"]["reason"]
    assert found["unpaid"]["sequence"]["answers"] == 1
    (tmp_path / "paid.json").write_bytes(orjson.dumps(paid))
    shown = pipeline.cli("explain", "-f", str(tmp_path / "paid.json")).stdout
    assert "followed_by: a B: pairs with the A 'c9'" in shown

    stranger = explained({**paid, "data": {"order_id": "o-none"}})
    assert "no A with data.order_id = 'o-none'" in stranger["paid"]["sequence"]["reason"]
    assert stranger["unpaid"]["sequence"]["answers"] == 0
    keyless = explained({**paid, "data": {}})
    assert keyless["paid"]["verdict"] == "key_missing"
    assert "has no `data.order_id`" in keyless["paid"]["sequence"]["reason"]
    another_a = explained(event("order.created", "c10", order_id="o10"))
    assert "fires at" in another_a["unpaid"]["sequence"]["reason"]
    # The same answers over REST and in the console, which reads them from there.
    base = start_serve(pipeline, extra_env={"TRIGGERS_API_KEYS": '{"k-shop": "default"}'})
    key = {"Authorization": "Bearer k-shop"}
    [rest] = [
        item
        for item in httpx.post(f"{base}/v1/explain", json=paid, headers=key, timeout=30).json()
        if item["trigger_id"] == "paid"
    ]
    assert rest["pattern"] == "order.paid" and rest["sequence"]["pairs_with"]["id"] == "c9"
    ahead = {**event("order.created", "c11", order_id="o11"), "time": "2099-01-01T00:00:00Z"}
    refused = httpx.post(f"{base}/v1/explain", json=ahead, headers=key, timeout=30).json()
    assert (
        "ahead of the worker's clock"
        in {i["trigger_id"]: i for i in refused}["paid"]["dead_letter"]
    )
    page = httpx.post(
        f"{base}/ui/explain", data={"event": orjson.dumps(paid).decode()},
        cookies={"triggers_ui_key": "k-shop"}, timeout=30,
    ).text  # fmt: skip
    assert "followed_by: a B: pairs with the A &#39;c9&#39;" in page
    page = httpx.post(
        f"{base}/ui/explain", data={"event": orjson.dumps(ahead).decode()},
        cookies={"triggers_ui_key": "k-shop"}, timeout=30,
    ).text  # fmt: skip
    assert "dead letter: event time 2099-01-01" in page

    burst = explained(saved)["saves"]["sequence"]
    assert burst["burst"] == 2
    assert "joins a burst of 2 event(s) of data.user = 'ann'" in burst["reason"]


def test_bursts_of_large_events_each_fire_a_debounce_whose_state_stays_small(
    pipeline: Pipeline,
) -> None:
    """A debounce remembered each of its fires in the key's state with every event of its
    burst: the second burst of 120 events of 3 KB passed the bound on the key's record,
    which started afresh (a dead letter) and lost that burst. Now a fire is not kept, and
    a burst keeps at most 512 KiB of its events (the rest counted as dropped)."""
    pipeline.start_worker_with(
        "trigger: {name: Saves, type: event, agent: {id: summarizer}, event: {pattern:"
        " file.saved, debounce: {quiet: 2s, max_events: 1000, key: data.user}}}\n"
    )
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20})
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
    ):
        for burst in range(3):
            for i in range(120):
                saved = event("file.saved", f"b{burst}-{i}", user="ann", diff=incompressible(3000))
                producer.produce(pipeline.topic(topics.EVENTS), orjson.dumps(saved), key=b"ann")
            assert producer.flush(30) == 0
            fires(lambda seen, n=burst + 1: len(seen) >= n, timeout=60)
        assert settle(letters, 3) == []
        found = fires(lambda seen: len(seen) >= 3, timeout=1)
    bursts = [fire["input"]["debounce"] for fire in found]  # (the runs queue behind the first)
    assert [b["count"] for b in bursts] == [120, 120, 120]
    assert [b["events"][0]["id"] for b in bursts] == ["b0-0", "b1-0", "b2-0"]
    assert all(b["dropped"] == 0 for b in bursts)


def test_a_new_owner_fires_every_unanswered_a_once_when_its_deadline_comes(
    pipeline: Pipeline,
) -> None:
    """Absence deadlines are kept in a heap per partition, made again by the worker that
    restores the keys: 2,000 orders wait when the first worker is killed; the one after
    it reminds each unpaid order once, when its time is up, and no paid one."""
    first = pipeline.start_worker_with(UNPAID_WITHIN_15S)
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20})
    orders = [f"o{i}" for i in range(2000)]
    for order in orders:
        created = event("order.created", f"c-{order}", order_id=order)
        producer.produce(pipeline.topic(topics.EVENTS), orjson.dumps(created), key=order)
    for order in orders[::4]:
        paid = event("order.paid", f"p-{order}", order_id=order)
        producer.produce(pipeline.topic(topics.EVENTS), orjson.dumps(paid), key=order)
    assert producer.flush(30) == 0
    sent = time.monotonic()
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        time.sleep(3)  # taken and committed, well before any deadline
        assert settle(fires, 0.5) == []
        pipeline.stop(first, signal.SIGKILL)
        pipeline.start("worker", name="second")  # its own data dir: restores from the topic
        pipeline.wait_ready("second", "[^Worker]: Ready")
        fires(lambda seen: len(seen) >= 1500, timeout=90)
        assert time.monotonic() - sent >= 14  # not before their time
        found = settle(fires, 3)  # all read, and nothing more comes
    reminded = [fire["input"]["not_followed_by"]["first"]["id"] for fire in found]
    assert sorted(reminded) == sorted(f"c-{order}" for order in orders if order not in orders[::4])


def test_an_a_that_comes_after_its_b_is_paired_or_answered_by_it(pipeline: Pipeline) -> None:
    """Events of one key can reach the worker out of event-time order (produced by two
    services, or from two partitions): each payment here comes before its order. Before,
    the As waited as if no B had come: no `followed_by` fired, and every paid order was
    reminded as unpaid."""
    pipeline.start_worker_with(
        "trigger: {id: paid, name: Paid, type: event, event: {pattern: order.created,"
        " followed_by: {pattern: order.paid, within: 1m, key: data.order_id}},"
        " agent: {id: thanks}}\n"
        "---\n"
        "trigger: {id: unpaid, name: Unpaid, type: event, event: {pattern: order.created,"
        " not_followed_by: {pattern: order.paid, within: 3s, key: data.order_id}},"
        " agent: {id: dun}}\n"
    )
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20})
    orders = [f"o{i}" for i in range(300)]
    unpaid = orders[::10]
    now = datetime.now(UTC)
    for order in orders:
        created = {**event("order.created", f"c-{order}", order_id=order), "time": now.isoformat()}
        if order not in unpaid:
            paid_at = (now + timedelta(seconds=1)).isoformat()
            paid = {**event("order.paid", f"p-{order}", order_id=order), "time": paid_at}
            producer.produce(pipeline.topic(topics.EVENTS), orjson.dumps(paid), key=order)
        producer.produce(pipeline.topic(topics.EVENTS), orjson.dumps(created), key=order)
    assert producer.flush(30) == 0
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        fires(lambda seen: len(seen) >= len(orders), timeout=60)
        time.sleep(4)  # past every A's deadline
        found = settle(fires, 3)
    by_trigger: dict[str, list[dict]] = {"paid": [], "unpaid": []}
    for fire in found:
        by_trigger[fire["trigger_id"]].append(fire)
    pairs = [fire["input"]["followed_by"] for fire in by_trigger["paid"]]
    assert sorted((p["first"]["id"], p["then"]["id"]) for p in pairs) == sorted(
        (f"c-{order}", f"p-{order}") for order in orders if order not in unpaid
    )
    assert all(p["seconds_between"] == 1 for p in pairs)
    reminded = [fire["input"]["not_followed_by"]["first"]["id"] for fire in by_trigger["unpaid"]]
    assert sorted(reminded) == sorted(f"c-{order}" for order in unpaid)


def test_a_deadline_passed_while_the_worker_was_down_waits_for_the_backlog_it_reads(
    pipeline: Pipeline,
) -> None:
    """The worker was down while payments came, and the orders' deadlines passed on the
    clock meanwhile. Reading the backlog took seconds, and a deadline check between its
    batches reminded every order whose payment was still to be read. Deadlines now wait
    until the events have been read up to them (their records' timestamps)."""
    first = pipeline.start_worker_with(
        UNPAID_WITHIN_15S,
        "trigger: {id: views, name: Views, type: event, event: {pattern: page.viewed,"
        " condition: {count_threshold: 1000, window: 1m, group_by: data.session}},"
        " agent: {id: analyst}}\n",
    )
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20})
    events = pipeline.topic(topics.EVENTS)
    orders = [f"o{i}" for i in range(300)]
    unpaid = orders[::10]
    created_at = datetime.now(UTC)
    for order in orders:
        created = event("order.created", f"c-{order}", order_id=order)
        producer.produce(events, orjson.dumps(created), key=order)
    assert producer.flush(30) == 0
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires:
        time.sleep(3)  # the As are taken and committed
        pipeline.stop(first, signal.SIGKILL)
        for i in range(150_000):  # what else came meanwhile: seconds of reading
            view = {"type": "page.viewed", "source": "web", "id": f"v{i}"}
            view["data"] = {"session": f"s{i % 5000}"}
            producer.produce(events, orjson.dumps(view), key=f"s{i % 5000}")
            if i % 10_000 == 0:
                producer.poll(0)
        paid_at = (created_at + timedelta(seconds=5)).isoformat()
        for order in orders:
            if order not in unpaid:
                paid = {**event("order.paid", f"p-{order}", order_id=order), "time": paid_at}
                producer.produce(events, orjson.dumps(paid), key=order)
        assert producer.flush(60) == 0
        assert datetime.now(UTC) < created_at + timedelta(seconds=14), "produced in time"
        time.sleep(
            max(0.0, (created_at + timedelta(seconds=17) - datetime.now(UTC)).total_seconds())
        )
        pipeline.start("worker", name="second")  # restores the As; every deadline has passed
        pipeline.wait_ready("second", "[^Worker]: Ready")
        fires(lambda seen: len(seen) >= len(unpaid), timeout=90)
        found = settle(fires, 5)
    reminded = [
        f["input"]["not_followed_by"]["first"]["id"] for f in found if f["trigger_id"] == "unpaid"
    ]
    assert sorted(reminded) == sorted(f"c-{order}" for order in unpaid)
