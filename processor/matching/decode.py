"""Decoding Kafka records into domain events (CloudEvents structured, binary, or minimal).

Missing `id` and `time` default from the record's topic-partition-offset and timestamp,
so the same record always decodes to the same event (and the same execution ids).

The worker reads events through `read_event`, which gives the `Event` the matcher works
on. A structured event whose attributes are plain (strings where CloudEvents has strings,
an RFC 3339 time) is built straight from its JSON; anything else goes through the
`DomainEvent` model, whose errors say what is wrong. Both give the same `Event` for the
same record (a unit test compares them); the direct way costs a fraction of the model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from pydantic import ValidationError

from processor.errors import BadRecord
from processor.messages import DomainEvent
from processor.serde import MAX_NESTING, may_nest_too_deep, nesting

MAX_EVENT_BYTES = 1024 * 1024
DATA_GROWTH_MAX = 5
"""orjson's JSON of a parsed value is under this many times the JSON it was parsed from
(`Event.size`)."""
SUPPORTED_SPECVERSIONS = frozenset({"1.0"})
_CE_HEADER = "ce_"

Headers = Sequence[tuple[str, bytes | None]]


def header_pairs(raw: Any) -> list[tuple[str, bytes | None]] | None:
    """A record's headers as (name, bytes) pairs, whether a client gives them as pairs
    (confluent-kafka, aiokafka) or as a mapping (Faust); None when it has none."""
    if not raw:
        return None
    pairs = raw.items() if hasattr(raw, "items") else raw
    return [
        (str(name), value.encode() if isinstance(value, str) else value) for name, value in pairs
    ]


def _binary_attributes(headers: Headers) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, value in headers:
        if name.lower().startswith(_CE_HEADER) and value is not None:
            try:
                attributes[name[len(_CE_HEADER) :].lower()] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRecord(f"header {name} is not UTF-8") from None
    return attributes


class _Typed(msgspec.Struct, gc=False):
    type: str


_typed = msgspec.json.Decoder(_Typed).decode


def plain_event_type(value: bytes | None, headers: Headers | None) -> str | None:
    """The `type` of a structured-mode event whose value is well-formed JSON, read without
    building the rest (msgspec checks the rest's syntax as it skips it: a third of what
    parsing the whole object costs, for the events no trigger's pattern matches). None for
    anything else, which the full parse then decides: binary mode, too large, not a JSON
    object, no string `type`, and any value that is not ASCII (msgspec does not check
    the UTF-8 of what it skips; orjson does). One difference is left: a number beyond a
    double's range (`1e400`), which orjson refuses, is skipped here as the JSON it is."""
    if value is None or len(value) > MAX_EVENT_BYTES or not value.isascii():
        return None
    if headers and any(name[:3].lower() == _CE_HEADER for name, _ in headers):
        return None
    try:
        found = _typed(value).type
    except (msgspec.DecodeError, RecursionError):
        return None
    return found or None


def event_type(body: dict[str, Any]) -> str | None:
    """The `type` of a parsed structured event, if it is a non-empty string. The matcher
    passes over events no trigger's pattern can match, most of a busy topic, on it."""
    found = body.get("type")
    return found if type(found) is str and found else None


def decode_event(
    value: bytes | None,
    headers: Headers,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
) -> DomainEvent:
    """The domain event in a record; raises BadRecord with the reason otherwise."""
    if value is None:
        raise BadRecord("record has no value")
    if len(value) > MAX_EVENT_BYTES:
        raise BadRecord(f"event is {len(value)} bytes; the limit is {MAX_EVENT_BYTES}")
    binary = _binary_attributes(headers)
    try:
        body: Any = orjson.loads(value) if value else None
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"value is not valid JSON: {exc}") from None
    if binary:
        # Binary mode: attributes in ce_* headers, the value is the data.
        attributes: dict[str, Any] = {**binary, "data": body}
    elif isinstance(body, dict):
        attributes = body
    else:
        raise BadRecord("event must be a JSON object with a `type` (or ce_* headers)")
    if not attributes.get("type"):
        raise BadRecord("event has no `type`")
    specversion = str(attributes.setdefault("specversion", "1.0"))
    if specversion not in SUPPORTED_SPECVERSIONS:
        raise BadRecord(f"CloudEvents specversion {specversion!r} is not supported (use 1.0)")
    attributes.setdefault("id", f"{topic}-{partition}-{offset}")
    if not attributes.get("time") and timestamp_ms is not None:
        attributes["time"] = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    try:
        return DomainEvent.model_validate(attributes)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadRecord(f"event field {field}: {first['msg']}") from None


class Event:
    """An event as the matcher reads it: its attributes as JSON values (every CloudEvents
    attribute present, None when absent, then the extensions), and the few it tests."""

    __slots__ = ("fields", "id", "size", "source", "time", "type", "workspace_id")

    def __init__(self, fields: dict[str, Any], time: float | None, size: int | None = None) -> None:
        self.fields = fields
        self.id: str = fields["id"]
        self.type: str = fields["type"]
        self.source: str = fields["source"]
        self.workspace_id: str | None = fields["workspace_id"]
        self.time = time
        """Event time, seconds since the epoch."""
        self.size = size
        """Bytes of the structured JSON it was read from (None: not known). orjson writes
        no JSON value in more than 4.5 times the bytes it was read from (whitespace and
        escapes only shrink; the worst is a number: `1e15` is written
        `1000000000000000.0`), so `data` is no longer than 5 times this."""

    def data_within(self, limit: int) -> bool:
        """Whether `data` is known to be at most `limit` bytes of JSON without writing it."""
        return self.size is not None and self.size * DATA_GROWTH_MAX <= limit

    def summary(self) -> dict[str, Any]:
        """The attributes that are set: what a fire's input says about the event."""
        fields = self.fields
        if len(fields) > _ATTRIBUTES:  # extension attributes: any of them may be null
            return {name: value for name, value in fields.items() if value is not None}
        summary = fields.copy()  # a copy with a few deletions: half a comprehension's time
        for name in _NULLABLE:
            if summary[name] is None:
                del summary[name]
        return summary


ATTRIBUTES = (
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "subject",
    "datacontenttype",
    "workspace_id",
    "data",
)
"""Every Event's fields start with these, in this order, whether or not its JSON has them
(None, or a default); extension attributes follow."""
_ATTRIBUTES = len(ATTRIBUTES)
_NULLABLE = ("time", "subject", "datacontenttype", "workspace_id", "data")


def event_of(model: DomainEvent) -> Event:
    return Event(model.model_dump(mode="json"), model.time.timestamp() if model.time else None)


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
_AS_WRITTEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000000)\d{6})?Z")
"""A UTC time exactly as pydantic writes it: kept as given, not formatted again."""
_SECONDS_KEPT = 4096
_seconds: dict[int, str] = {}
"""`YYYY-MM-DDTHH:MM:SS` of recent whole seconds (record times come in runs)."""


def structured_body(value: bytes | None, headers: Headers | None) -> dict[str, Any] | None:
    """The JSON object of a structured-mode event, parsed once; None for anything else
    (binary mode, not a JSON object, too large), which `read_event` then decodes in full
    or refuses with its reason."""
    if value is None or len(value) > MAX_EVENT_BYTES:
        return None
    if headers and any(name[:3].lower() == _CE_HEADER for name, _ in headers):
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def read_event(
    value: bytes | None,
    headers: Headers | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    body: dict[str, Any] | None = None,
) -> Event:
    """The event in a record (`body`: its `structured_body`, if already parsed); raises
    BadRecord with the reason otherwise."""
    if body is None:
        body = structured_body(value, headers)
    if value is not None and may_nest_too_deep(value):
        _refuse_deep(value if body is None else body)
    if body is not None:
        size = len(value) if value is not None else None
        # The record's place is formatted only for an event that has no id of its own.
        place = None if "id" in body else f"{topic}-{partition}-{offset}"
        fast = parsed_event(body, timestamp_ms, size, place)
        if fast is not None:
            return fast
    return event_of(
        decode_event(
            value,
            list(headers or ()),
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
        )
    )


def _refuse_deep(value: bytes | dict[str, Any]) -> None:
    """BadRecord for an event nesting deeper than MAX_NESTING (a fire, window state
    and a command carry it a few levels deeper, where no JSON writer would go)."""
    if isinstance(value, bytes):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return  # decode_event refuses it with the parser's reason
    if nesting(value) > MAX_NESTING:
        raise BadRecord(
            f"event nests deeper than {MAX_NESTING} levels, more than a fire can carry; "
            "flatten its data, or send the deep part by reference"
        )


def parsed_event(
    body: dict[str, Any], timestamp_ms: int | None, size: int | None, default_id: str | None = None
) -> Event | None:
    """The Event of a structured body (`size` bytes of JSON) whose attributes need no
    model to check; None when the model must decide (and perhaps refuse), and when it has
    no id and no `default_id` (the record's place). `read_event` then decides."""
    type_ = body.get("type")
    id_ = body.get("id", default_id)
    source = body.get("source", "")
    specversion = body.get("specversion", "1.0")
    if not (type_ and type(type_) is str and type(id_) is str and type(source) is str):
        return None
    if specversion != "1.0" or type(specversion) is not str:
        return None
    subject = body.get("subject")
    content_type = body.get("datacontenttype")
    workspace_id = body.get("workspace_id")
    if (
        (subject is not None and type(subject) is not str)
        or (content_type is not None and type(content_type) is not str)
        or (workspace_id is not None and type(workspace_id) is not str)
    ):
        return None
    raw_time = body.get("time")
    text: str | None
    seconds: float | None
    if raw_time:
        if type(raw_time) is not str or _RFC3339.fullmatch(raw_time) is None:
            return None
        try:
            when = datetime.fromisoformat(raw_time)
        except ValueError:
            return None
        text = raw_time if _AS_WRITTEN.fullmatch(raw_time) else _json_time(when)
        seconds = when.timestamp()
    elif timestamp_ms is not None:
        text, seconds = _record_time(timestamp_ms)
    elif raw_time is None:
        text = seconds = None
    else:
        return None
    fields: dict[str, Any] = {
        "specversion": specversion,
        "id": id_,
        "type": type_,
        "source": source,
        "time": text,
        "subject": subject,
        "datacontenttype": content_type,
        "workspace_id": workspace_id,
        "data": body.get("data"),
    }
    if not body.keys() <= fields.keys():  # extension attributes, in their order
        fields.update((name, v) for name, v in body.items() if name not in fields)
    return Event(fields, seconds, size)


def _record_time(timestamp_ms: int) -> tuple[str, float]:
    """A record's timestamp as the event's time: its JSON text and its seconds, the
    same as `_json_time` and `datetime.timestamp` give for it, without a datetime. The
    last one is remembered: a busy topic has many records in each millisecond."""
    global _last_time
    last = _last_time
    if last[0] == timestamp_ms:
        return last[1]
    second, millis = divmod(timestamp_ms, 1000)
    base = _second_text(second)
    text = f"{base}.{millis * 1000:06d}Z" if millis else f"{base}Z"
    found = (text, timestamp_ms * 1000 / 10**6)
    _last_time = (timestamp_ms, found)
    return found


_last_time: tuple[int, tuple[str, float]] = (-1, ("", 0.0))


def iso_time(seconds: float) -> str:
    """`datetime.fromtimestamp(seconds, UTC).isoformat()`, its date and time of day
    remembered per second (a window fire writes two, of times that come in runs); a
    property test holds it to datetime's, rounding of the microseconds included."""
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    base = _second_text(second)
    return f"{base}.{micros:06d}+00:00" if micros else f"{base}+00:00"


def _second_text(second: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of a whole second (UTC), remembered in `_seconds`."""
    base = _seconds.get(second)
    if base is None:
        if len(_seconds) >= _SECONDS_KEPT:
            _seconds.clear()
        base = _seconds[second] = datetime.fromtimestamp(second, UTC).isoformat()[:-6]
    return base


def _json_time(when: datetime) -> str:
    """A time as pydantic writes it in JSON: ISO 8601, `Z` for UTC."""
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
