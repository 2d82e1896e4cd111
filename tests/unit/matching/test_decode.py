from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import BadRecord
from processor.matching.decode import (
    DATA_GROWTH_MAX,
    MAX_EVENT_BYTES,
    decode_event,
    event_of,
    iso_time,
    parsed_event,
    plain_event_type,
    read_event,
)

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
    assert plain_event_type(b'{"type": ""}', []) is None
    assert plain_event_type(b'{"data": {"type": "x"}}', []) is None  # not at the top
    # What it skips must be well-formed JSON too, or the full parse decides (and refuses).
    assert plain_event_type(b'{"type": "x", "data": [1, 2,]}', []) is None
    assert plain_event_type(b'{"type": "x"} trailing', []) is None
    assert (
        plain_event_type(b'{"type": "x", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}", []) is None
    )
    # Not ASCII: msgspec would not check the UTF-8 of what it skips; orjson refuses this.
    assert plain_event_type(b'{"type": "x", "data": "\xff"}', []) is None
    assert plain_event_type('{"type": "x", "data": "é"}'.encode(), []) is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400)
@given(
    body=st.fixed_dictionaries(
        {"type": st.one_of(st.text(max_size=8), _JSON)},
        optional={"id": st.text(max_size=4), "data": _JSON, "x": _JSON},
    ),
    at=st.integers(0, 10_000),
    byte=st.integers(0, 255),
    corrupt=st.booleans(),
)
def test_plain_event_type_names_a_type_only_where_the_full_parse_reads_the_same(
    body: dict[str, object], at: int, byte: int, corrupt: bool
) -> None:
    """The matcher passes over an event on this type alone when no pattern matches it:
    it must never name a type for a value the full parse (orjson) refuses or reads as
    another type, whatever byte is changed in it."""
    value = bytearray(orjson.dumps(body))
    if corrupt:
        value[at % len(value)] = byte
    found = plain_event_type(bytes(value), None)
    if found is None:
        return
    parsed = orjson.loads(bytes(value))  # raises if the full parse refuses it
    assert isinstance(parsed, dict) and parsed["type"] == found


_TEXT = st.one_of(st.none(), st.text(max_size=8), st.integers(-9, 9), st.just(""))
_TIMES = st.one_of(
    st.none(),
    st.just(""),
    st.integers(0, 2_000_000_000),
    st.datetimes(min_value=datetime(1971, 1, 1), timezones=st.sampled_from([UTC, None])).map(
        lambda d: d.isoformat()
    ),
    st.sampled_from(
        [
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00.5+02:00",
            "2026-11-25T10:00:00.123456-00:00",
            "2026-11-25T23:59:60Z",
            "2026-11-25 10:00:00Z",
            "2026-11-25",
            "not a time",
        ]
    ),
)


@given(
    attributes=st.fixed_dictionaries(
        {},
        optional={
            "specversion": st.sampled_from(["1.0", "0.3", 1.0]),
            "id": _TEXT,
            "type": _TEXT,
            "source": _TEXT,
            "time": _TIMES,
            "subject": _TEXT,
            "datacontenttype": _TEXT,
            "workspace_id": _TEXT,
            "data": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers(-9, 9))),
            "traceparent": _TEXT,
        },
    ),
    timestamp_ms=st.one_of(st.none(), st.integers(0, 2_000_000_000_000)),
)
@settings(max_examples=400)
def test_read_event_is_the_models_event(
    attributes: dict[str, object], timestamp_ms: int | None
) -> None:
    """The direct way and the model give the same Event, or the same refusal."""
    value = orjson.dumps(attributes)
    where = {**WHERE, "timestamp_ms": timestamp_ms}
    try:
        expected = event_of(decode_event(value, [], **where))  # type: ignore[arg-type]
    except BadRecord as exc:
        with pytest.raises(BadRecord) as refused:
            read_event(value, [], **where)  # type: ignore[arg-type]
        assert str(refused.value) == str(exc)
        return
    found = read_event(value, [], **where)  # type: ignore[arg-type]
    assert list(found.fields.items()) == list(expected.fields.items())
    assert found.time == expected.time
    set_ = [(name, v) for name, v in expected.fields.items() if v is not None]
    assert list(found.summary().items()) == list(expected.summary().items()) == set_
    # The matcher's first try, without the record's place: the same Event, or none
    # (then read_event decides); never a different one.
    parsed = parsed_event(orjson.loads(value), timestamp_ms, len(value))
    if "id" not in attributes:
        assert parsed is None
    elif parsed is not None:
        assert list(parsed.fields.items()) == list(expected.fields.items())
        assert parsed.time == expected.time


@given(
    st.floats(min_value=-2e9, max_value=4e9, allow_nan=False)
    | st.integers(min_value=0, max_value=4_000_000_000).map(lambda n: n / 1000)
    | st.integers(min_value=0, max_value=4_000_000_000_000).map(lambda n: n / 1e6 + 0.0000005)
)
def test_iso_time_is_datetimes_isoformat(seconds: float) -> None:
    """Whole seconds, milliseconds, and microseconds at the rounding boundary."""
    assert iso_time(seconds) == datetime.fromtimestamp(seconds, UTC).isoformat()


def _shortest(number: float) -> str:
    """The shortest JSON text that reads back as `number` (`1e15` for 1e15): what a
    producer could send, and what orjson writes longest."""
    found = repr(number)
    for precision in range(17):
        for style in ("e", "g"):
            text = f"{number:.{precision}{style}}".replace("e+", "e").replace("e0", "e")
            text = text.replace("e-0", "e-")
            if float(text) == number and len(text) < len(found):
                found = text
    return found


def _written(value: object) -> str:
    """JSON with every float in its shortest form."""
    if isinstance(value, float):
        return _shortest(value)
    if isinstance(value, list):
        return "[" + ",".join(_written(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{orjson.dumps(k).decode()}:{_written(v)}" for k, v in value.items())
            + "}"
        )
    return orjson.dumps(value).decode()


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e15, 1e16, 1e-5, 1e5, 2.0, -0.0, 5e-324, 1e308])
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_JSON)
@settings(max_examples=500)
def test_orjson_writes_no_value_in_more_than_the_growth_bound(value: object) -> None:
    """`Event.data_within` trusts this bound to skip writing `data` to measure it
    (escapes in the input only make orjson's JSON shorter)."""
    raw = _written(value).encode()
    assert len(orjson.dumps(orjson.loads(raw))) <= DATA_GROWTH_MAX * len(raw)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("headers", [[], [("ce_type", b"x.y"), ("ce_source", b"s")]])
def test_an_event_nesting_deeper_than_a_fire_can_carry_is_refused_with_the_reason(
    headers: list,
) -> None:
    """JSON writers stop at 255 levels and a fire wraps an event's data a few deeper:
    an event of 300 levels was taken, its fire not written, and the worker stopped."""
    if headers:  # binary mode: the value is the data
        value, fits = _nested(300), _nested(120)
    else:
        value = b'{"type": "x.y", "source": "s", "data": ' + _nested(300) + b"}"
        fits = b'{"type": "x.y", "source": "s", "data": ' + _nested(120) + b"}"
    with pytest.raises(BadRecord, match="event nests deeper than 128 levels"):
        read_event(value, headers, **WHERE)
    assert read_event(fits, headers, **WHERE).fields["type"] == "x.y"
    # many brackets side by side are not depth: a wide event is read as it is
    wide = b'{"type": "x.y", "source": "s", "data": [' + b",".join([b"[{}]"] * 400) + b"]}"
    assert len(read_event(wide, [], **WHERE).fields["data"]) == 400
