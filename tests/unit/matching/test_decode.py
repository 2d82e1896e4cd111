from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from processor.errors import BadRecord
from processor.matching.decode import MAX_EVENT_BYTES, decode_event, plain_event_type

WHERE = {"topic": "events", "partition": 3, "offset": 42, "timestamp_ms": 1_764_064_800_000}


def test_structured_cloudevent() -> None:
    event = decode_event(
        orjson.dumps(
            {
                "specversion": "1.0",
                "id": "e-1",
                "type": "error.database",
                "source": "system",
                "time": "2026-11-25T10:00:00Z",
                "workspace_id": "default",
                "data": {"severity": "high"},
                "traceparent": "00-abc",
            }
        ),
        [],
        **WHERE,
    )
    assert (event.id, event.type, event.source) == ("e-1", "error.database", "system")
    assert event.time == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert event.data == {"severity": "high"}
    assert event.model_extra == {"traceparent": "00-abc"}


def test_binary_mode_takes_attributes_from_ce_headers() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"b-1"),
        ("ce_type", b"order.created"),
        ("ce_source", b"shop"),
        ("content-type", b"application/json"),
    ]
    event = decode_event(b'{"total": 12}', headers, **WHERE)
    assert (event.id, event.type, event.source, event.data) == (
        "b-1",
        "order.created",
        "shop",
        {"total": 12},
    )


def test_minimal_form_gets_id_and_time_from_the_record() -> None:
    event = decode_event(b'{"type": "ping", "source": "x"}', [], **WHERE)
    assert event.id == "events-3-42"
    assert event.time == datetime.fromtimestamp(1_764_064_800, UTC)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "record has no value"),
        (b"{oops", "value is not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"source": "x"}', "event has no `type`"),
        (b'{"type": "x", "specversion": "0.3"}', "specversion '0.3' is not supported"),
        (b'{"type": "x", "time": "yesterday"}', "event field time"),
        (b'{"type": ' + b'"' + b"x" * MAX_EVENT_BYTES + b'"}', "the limit is"),
        (b'\xff\xfe{"type": "x"}', "not valid JSON"),
    ],
)
def test_bad_records_say_why(value: bytes | None, reason: str) -> None:
    with pytest.raises(BadRecord, match=None) as caught:
        decode_event(value, [], **WHERE)
    assert reason in str(caught.value)


def test_plain_event_type_reads_only_a_structured_events_type() -> None:
    assert plain_event_type(b'{"type": "order.paid", "time": "not a time"}', []) == "order.paid"
    assert plain_event_type(b'{"type": "x"}', [("ce_type", b"y")]) is None  # binary mode
    assert plain_event_type(b"not json", []) is None
    assert plain_event_type(b'["type"]', []) is None
    assert plain_event_type(b'{"type": 5}', []) is None
    assert plain_event_type(None, []) is None
