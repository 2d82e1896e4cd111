"""The event matcher's handling of a batch, without a broker (what it would produce)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Message

from processor.config import Settings
from processor.definitions.loader import parse_document
from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.kafka.transactional import Turn
from processor.matching.state import StateKey
from processor.messages import WindowMatch
from processor.serde import to_json
from processor.worker.event_matcher import EventMatcher

HANDLER = {
    "name": "Error Handler",
    "type": "event",
    "event": {"pattern": "error.*", "condition": {"count_threshold": 3, "window": "5m"}},
    "agent": {"id": "a"},
}


def _matcher(tmp_path: Path) -> tuple[EventMatcher, TriggerDocument]:
    """A matcher with the handler above, owning the one `trigger-matches` partition."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="u.", data_dir=tmp_path)
    registry = Registry()
    handler = parse_document(HANDLER, "t").resolved("default")
    registry.put(handler)
    matcher = EventMatcher(settings, registry, threading.Event())
    matcher.matches_partitions, matcher.owned_matches = 1, {0}
    return matcher, handler


def test_a_bad_window_match_is_a_dead_letter_and_the_batchs_good_ones_still_count(
    tmp_path: Path,
) -> None:
    matcher, handler = _matcher(tmp_path)
    key = StateKey(handler.trigger_id).encode()

    def match(n: int) -> Message:
        found = WindowMatch(trigger_id=handler.trigger_id, event_key=f"s\x1fe{n}", time=100.0 + n)
        return Message(
            topic=matcher.matches_topic, partition=0, offset=n, key=key, value=to_json(found)
        )

    def event(n: int) -> Message:
        body = {"type": "error.db", "source": "s", "id": f"x{n}"}
        return Message(topic=matcher.topics[0], partition=0, offset=n, value=orjson.dumps(body))

    bad = Message(topic=matcher.matches_topic, partition=0, offset=9, key=key, value=b"{}")
    turn = Turn()
    # two matches read from the topic, one refused, one event matched in place: three
    matcher.handle([match(0), bad, event(1), match(2)], turn)
    matcher.checkpoint(turn)
    letters = [r for t, r in turn.records if t == matcher.dead_letters_topic]
    assert len(letters) == 1
    assert b"not a window match" in letters[0]["value"]
    assert len([r for t, r in turn.records if t == matcher.fires_topic]) == 1
    assert [t for t, _ in turn.records].count(matcher.state_topic) == 1  # one record per key


def test_a_turn_of_many_batches_writes_each_changed_key_once_when_it_checkpoints(
    tmp_path: Path,
) -> None:
    """Below full load a turn takes in a small batch per poll while the last commit
    runs; the window key they all change gets one changelog record for the turn, holding
    its state after the last batch, not one per batch."""
    matcher, handler = _matcher(tmp_path)

    def event(n: int) -> Message:
        body = {"type": "error.db", "source": "s", "id": f"x{n}", "time": "2026-12-04T10:00:00Z"}
        return Message(topic=matcher.topics[0], partition=0, offset=n, value=orjson.dumps(body))

    turn = Turn()
    for n in range(4):  # four batches of one event: the third crosses the threshold
        matcher.handle([event(n)], turn)
    assert [t for t, _ in turn.records] == [matcher.fires_topic]  # nothing of the state yet
    matcher.checkpoint(turn)
    states = [r for t, r in turn.records if t == matcher.state_topic]
    assert len(states) == 1
    assert states[0]["key"] == StateKey(handler.trigger_id).encode()
    assert b"x3" in states[0]["value"]  # the state after the last batch: one event pending
    matcher.checkpoint(turn)
    assert len([r for t, r in turn.records if t == matcher.state_topic]) == 1  # nothing new


def test_events_the_fast_read_passes_over_are_read_by_the_model_or_refused(
    tmp_path: Path,
) -> None:
    """A plain event is read straight from its JSON; one without an id takes its record's
    place as id, one whose attribute has the wrong type is a dead letter naming it, and
    the good ones around them still count."""
    matcher, _ = _matcher(tmp_path)
    bodies = [
        {"type": "error.db", "source": "s", "id": "a"},
        {"type": "error.db", "source": "s"},  # no id: the record's place
        {"type": "error.db", "source": "s", "id": "c", "subject": 7},  # not a string
        {"type": "error.db", "source": "s", "id": "d"},
    ]
    messages = [
        Message(topic=matcher.topics[0], partition=0, offset=n, value=orjson.dumps(body))
        for n, body in enumerate(bodies)
    ]
    turn = Turn()
    matcher.handle(messages, turn)
    matcher.checkpoint(turn)
    letters = [r for t, r in turn.records if t == matcher.dead_letters_topic]
    assert len(letters) == 1
    assert b"subject" in letters[0]["value"]
    fires = [orjson.loads(r["value"]) for t, r in turn.records if t == matcher.fires_topic]
    assert len(fires) == 1  # a, the one without an id, and d: three of three
    sample = fires[0]["input"]["window"]["sample"]
    assert [e["id"] for e in sample] == ["a", f"{matcher.topics[0]}-0-1", "d"]


def test_a_batch_is_handled_the_same_whether_types_are_read_alone_first_or_not(
    tmp_path: Path,
) -> None:
    """The matcher reads an event's `type` alone first when most of its last batch
    matched no pattern, and parses each event at once when most did: the outcome (fires,
    dead letters and their reasons, counted verdicts) must not depend on which."""
    values = [
        orjson.dumps(
            {"type": "error.db", "source": "s", "id": "a", "time": "2026-12-04T10:00:00Z"}
        ),
        orjson.dumps({"type": "order.paid", "source": "s", "id": "b"}),  # no pattern
        b'{"type": "order.paid", "data": [1,}',  # no pattern, not JSON: a dead letter
        '{"type": "order.paid", "data": "é"}'.encode(),  # no pattern, not ASCII
        b'{"type": "order.paid", "data": "\xff"}',  # no pattern, not UTF-8: a dead letter
        b'{"source": "s", "id": "c"}',  # no type: a dead letter
        b'{"type": "error.db", "source": "s", "id": "d", "subject": 7}',  # a dead letter
        orjson.dumps(
            {"type": "error.db", "source": "s", "id": "e", "time": "2026-12-04T10:00:01Z"}
        ),
        orjson.dumps(
            {"type": "error.db", "source": "s", "id": "f", "time": "2026-12-04T10:00:02Z"}
        ),
        b'{"type": "error.db", "data": '
        + b"[" * 3000
        + b"]" * 3000
        + b"}",  # too deep (for orjson): a dead letter
    ]

    def outcome(peek: bool) -> list[tuple[str, bytes | None, dict[str, object]]]:
        matcher, _ = _matcher(tmp_path / str(peek))
        matcher._peek = peek
        messages = [
            Message(topic=matcher.topics[0], partition=0, offset=n, value=value, timestamp=(1, 1))
            for n, value in enumerate(values)
        ]
        turn = Turn()
        matcher.handle(messages, turn)
        matcher.checkpoint(turn)
        found = []
        for topic, record in turn.records:
            if topic != matcher.state_topic:
                value = orjson.loads(record["value"])
                value.pop("at", None)  # when a dead letter was written
                value.pop("fired_at", None)  # and a fire made
                found.append((topic, record.get("key"), value))
        return found

    read_alone_first, parsed_at_once = outcome(True), outcome(False)
    assert read_alone_first == parsed_at_once
    topics = [topic for topic, _, _ in parsed_at_once]
    assert topics.count("u.trigger-dead-letters") == 5
    assert topics.count("u.trigger-fires") == 1


def test_an_event_stamped_far_ahead_is_a_dead_letter_and_the_window_goes_on_counting(
    tmp_path: Path,
) -> None:
    """One event stamped years ahead (a producer's clock, a typo) would be its window's
    newest, and every event after it late: it is a dead letter instead."""
    matcher, _ = _matcher(tmp_path)
    now = time.time()

    def event(n: int, at: float) -> Message:
        stamp = datetime.fromtimestamp(at, UTC).isoformat()
        body = {"type": "error.db", "source": "s", "id": f"x{n}", "time": stamp}
        return Message(topic=matcher.topics[0], partition=0, offset=n, value=orjson.dumps(body))

    turn = Turn()
    ahead = now + 4 * 365 * 86400
    matcher.handle([event(0, ahead), event(1, now + 250)], turn)  # 250 s: within the 300
    matcher.handle([event(n, now - 10 + n) for n in range(2, 4)], turn)
    [letter] = [r for t, r in turn.records if t == matcher.dead_letters_topic]
    reason = orjson.loads(letter["value"])["error"]
    assert "ahead of the worker's clock" in reason and "'Error Handler'" in reason
    assert "TRIGGERS_EVENT_TIME_MAX_AHEAD_SECONDS" in reason
    [fire] = [r for t, r in turn.records if t == matcher.fires_topic]  # x1, x2, x3 counted
    assert orjson.loads(fire["value"])["input"]["window"]["count"] == 3


def test_a_trigger_that_does_not_count_by_event_time_still_takes_an_event_far_ahead(
    tmp_path: Path,
) -> None:
    matcher, _ = _matcher(tmp_path)
    notifier = parse_document(
        {
            "name": "Notifier",
            "type": "event",
            "event": {"pattern": "error.*"},
            "agent": {"id": "n"},
        },
        "t",
    ).resolved("default")
    matcher.registry.put(notifier)
    stamp = datetime.fromtimestamp(time.time() + 4 * 365 * 86400, UTC).isoformat()
    body = {"type": "error.db", "source": "s", "id": "x0", "time": stamp}
    turn = Turn()
    matcher.handle(
        [Message(topic=matcher.topics[0], partition=0, offset=0, value=orjson.dumps(body))], turn
    )
    [letter] = [r for t, r in turn.records if t == matcher.dead_letters_topic]
    assert "'Error Handler'" in orjson.loads(letter["value"])["error"]
    assert "'Notifier'" not in orjson.loads(letter["value"])["error"]
    [fire] = [r for t, r in turn.records if t == matcher.fires_topic]
    assert fire["key"] == notifier.trigger_id.encode()
    matcher.checkpoint(turn)
    assert [t for t, _ in turn.records].count(matcher.state_topic) == 0  # no window changed
