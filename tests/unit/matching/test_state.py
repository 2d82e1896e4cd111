"""The typed key state: its key, its changelog encoding, and a fresh state per kind."""

from __future__ import annotations

import orjson
import pytest

from processor.definitions.loader import parse_document
from processor.matching.state import (
    DebounceState,
    PatternEvent,
    PatternFire,
    PendingEvent,
    SequenceState,
    StateKey,
    WindowState,
    decode,
    encode,
)
from processor.matching.stateful import state_for


def test_a_key_is_trigger_and_group_and_reads_back_from_its_bytes() -> None:
    key = StateKey("t-1", "host/a b")
    assert key.encode() == b"t-1\x1fhost/a b"
    assert StateKey.parse(key.encode()) == key and StateKey.parse(str(key)) == key
    assert StateKey.parse(b"t-2\x1f") == StateKey("t-2")


@pytest.mark.parametrize(
    "state",
    [
        WindowState([PendingEvent(1.5, "s\x1fe1", 2.0, {"id": "e1"})], {"s\x1fe0": 1.0}, 1.5, 0.5),
        SequenceState(
            [PatternEvent(3.0, "s\x1fa", {"id": "a"})],
            ["s\x1fa"],
            [PatternFire("s\x1fb", {"first": {"id": "a"}})],
        ),
        DebounceState([PatternEvent(9.0, "s\x1fx", {})], ["s\x1fx"], [], 9.0, 9.5, 2),
        WindowState(),
        DebounceState(),
    ],
)
def test_every_kind_of_state_reads_back_equal_with_its_deadline(state) -> None:
    assert decode(encode(state, 42.0)) == (state, 42.0)
    assert decode(encode(state, None)) == (state, None)


def test_records_written_before_the_kind_was_recorded_are_read_by_their_fields() -> None:
    window = {
        "pending": [[1.0, "s\x1fe", None, {}]],
        "consumed": {},
        "latest": 1.0,
        "last_fire_end": None,
    }
    sequence = {"pending": [], "seen": ["k"], "fires": [{"cause_key": "k", "details": {}}]}
    debounce = {
        "pending": [[2.0, "k", {}]],
        "seen": ["k"],
        "fires": [],
        "first_seen": 2.0,
        "last_seen": 2.0,
        "dropped": 0,
    }
    for fields, kind in [
        (window, WindowState),
        (sequence, SequenceState),
        (debounce, DebounceState),
    ]:
        state, deadline = decode(orjson.dumps({"state": fields, "deadline": None}))
        assert type(state) is kind and deadline is None
    assert decode(orjson.dumps({"state": window}))[0] == WindowState(
        [PendingEvent(1.0, "s\x1fe", None, {})], {}, 1.0, None
    )


def document(event: dict):
    return parse_document(
        {"name": "k", "type": "event", "event": event, "agent": {"id": "a"}}, "t"
    ).resolved("default")


def test_a_trigger_keeps_the_state_of_its_kind_and_a_changed_kind_starts_afresh() -> None:
    threshold = document({"pattern": "x", "condition": {"count_threshold": 2, "window": "1m"}})
    debounce = document({"pattern": "x", "debounce": {"key": "k", "quiet": "5s"}})
    absence = document(
        {"pattern": "a", "not_followed_by": {"pattern": "b", "within": "1m", "key": "k"}}
    )
    kept = WindowState(latest=5.0)
    assert state_for(threshold, kept) is kept
    assert state_for(threshold, None) == WindowState()
    assert state_for(debounce, kept) == DebounceState()
    assert state_for(absence, DebounceState(first_seen=1.0)) == SequenceState()
