"""Decoding Kafka records into domain events (CloudEvents structured, binary, or minimal).

Missing `id` and `time` default from the record's topic-partition-offset and timestamp,
so the same record always decodes to the same event (and the same execution ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from processor.errors import BadRecord
from processor.messages import DomainEvent

MAX_EVENT_BYTES = 1024 * 1024
SUPPORTED_SPECVERSIONS = frozenset({"1.0"})
_CE_HEADER = "ce_"

Headers = Sequence[tuple[str, bytes | None]]


def _binary_attributes(headers: Headers) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, value in headers:
        if name.lower().startswith(_CE_HEADER) and value is not None:
            try:
                attributes[name[len(_CE_HEADER) :].lower()] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRecord(f"header {name} is not UTF-8") from None
    return attributes


def plain_event_type(value: bytes | None, headers: Headers) -> str | None:
    """The `type` of a structured-mode event, read without validating the rest; None for
    anything else (binary mode, not a JSON object, no type, too large), which the full
    `decode_event` then accepts or refuses with its reason. The matcher uses it to pass
    over events no trigger's pattern can match, most of a busy topic, at JSON speed."""
    if value is None or len(value) > MAX_EVENT_BYTES:
        return None
    if any(name[:3].lower() == _CE_HEADER for name, _ in headers):
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    found = body.get("type")
    return found if isinstance(found, str) and found else None


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
