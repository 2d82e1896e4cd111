"""Message serialization: JSON (orjson, the default) and Avro (Confluent wire format)."""

from __future__ import annotations

import io
import json
import struct
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import fastavro
import msgspec
import orjson
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
V = TypeVar("V")

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
_CONFLUENT_MAGIC = 0


MAX_NESTING = 128
"""How deep a JSON value from outside (an event, a webhook's body, a run's input) may
nest. The messages that carry one wrap it a few levels deeper, and JSON writers stop
at 255 levels (orjson and pydantic alike), so deeper input is refused where it enters,
with its reason, instead of failing to be written further on."""


def may_nest_too_deep(raw: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether JSON text could nest deeper than `limit` (every level opens a bracket):
    false for nearly every record, in two byte counts, so only those left need a walk."""
    return len(raw) > 2 * limit and raw.count(b"[") + raw.count(b"{") > limit


def nesting(value: Any, limit: int = MAX_NESTING) -> int:
    """How deep a parsed JSON value nests (a scalar 0, `[]` 1, `[[1]]` 2), counted up to
    `limit + 1` at most: enough to tell it is too deep, without a walk of what is left."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def shallow(value: V) -> V:
    """`value`, when it nests at most MAX_NESTING levels; ValueError saying so otherwise
    (a field validator for JSON given from outside)."""
    if nesting(value) > MAX_NESTING:
        raise ValueError(
            f"nests deeper than {MAX_NESTING} levels, more than the messages carrying it "
            "can be written with; flatten it"
        )
    return value


def to_json(message: BaseModel) -> bytes:
    """UTF-8 JSON of a message, without null fields: the bytes pydantic's serializer
    writes, written by orjson from the fields (a fire's free-form `input`, most of its
    JSON, costs pydantic a type inference per value: 8.5 against 2.2 µs for a window
    fire). A value orjson does not write (a set, a model inside a dict, a huge int)
    leaves it to pydantic; a property test holds the two to the same bytes."""
    try:
        return orjson.dumps(plain_fields(message), option=orjson.OPT_UTC_Z)
    except TypeError:  # orjson.JSONEncodeError
        return pydantic_json(message)


def pydantic_json(message: BaseModel) -> bytes:
    """`to_json` as pydantic's serializer writes it."""
    return message.__pydantic_serializer__.to_json(message, exclude_none=True)


_PLAIN_MODULE = "processor.messages"
"""Models whose JSON is their fields as they are (no custom serializers); a model from
elsewhere (a trigger's throttle, retry, ...) is dumped by pydantic."""
_dumped: dict[int, tuple[BaseModel, dict[str, Any]]] = {}
"""Models from elsewhere as pydantic dumps them, by identity (a trigger's specs are the
same objects in each of its fires)."""


def plain_fields(model: BaseModel) -> dict[str, Any]:
    """A message's fields in declaration order (then extra and computed fields, as
    pydantic orders them), None left out, nested messages likewise: what `to_json`
    gives orjson."""
    cls = type(model)
    values = model.__dict__
    out: dict[str, Any] = {}
    for name in cls.__pydantic_fields__:
        value = values[name]
        if value is None:
            continue
        if type(value) not in _NATIVE and isinstance(value, BaseModel):
            value = plain_model(value)
        out[name] = value
    extra = model.__pydantic_extra__
    if extra:
        for name, value in extra.items():
            if value is not None:
                out[name] = value
    for name in cls.__pydantic_computed_fields__:
        value = getattr(model, name)
        if value is not None:
            out[name] = value
    return out


def plain_model(model: BaseModel) -> dict[str, Any]:
    """A nested model as `plain_fields` gives it to orjson."""
    if type(model).__module__ == _PLAIN_MODULE:
        return plain_fields(model)
    return _dumped_once(model)


_NATIVE = frozenset({str, int, float, bool, dict, list, datetime})
"""Types a field's value has that orjson writes as pydantic does (no model check needed)."""


def _dumped_once(model: BaseModel) -> dict[str, Any]:
    found = _dumped.get(id(model))
    if found is not None and found[0] is model:
        return found[1]
    if len(_dumped) >= 4096:
        _dumped.clear()
    dumped = model.model_dump(mode="json", exclude_none=True)
    _dumped[id(model)] = (model, dumped)
    return dumped


def from_json(model: type[M], data: bytes | str) -> M:
    """Parse and validate a message; raises pydantic's ValidationError on bad input.

    orjson parses and pydantic validates the objects: two thirds of the time of
    pydantic's own JSON parsing for a fire (whose input is most of it). What orjson
    refuses goes to pydantic's parser, whose ValidationError then says what is wrong."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return model.model_validate_json(data)
    return model.model_validate(parsed)


def from_json_keeping(model: type[M], data: bytes, field: str) -> tuple[M, bytes | None]:
    """`from_json`, but `field`, a JSON object, is left as its bytes (returned beside the
    message, whose `field` then holds its default), for a reader that only writes it out
    again (`orjson.Fragment`): the dispatcher with a fire's `input`, most of the fire's
    bytes (6.2 against 11.1 µs to read a window fire, timeit). msgspec
    checks the whole document's syntax while it splits it; whatever it cannot split
    alike (malformed JSON, a field the model does not have, a `field` that is not an
    object) goes to `from_json`, which parses `field` too (None then) and words the error."""
    decoder, names = _splitter(model, field)
    try:
        parts = decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return from_json(model, data), None
    values = {name: value for name in names if (value := getattr(parts, name)) is not msgspec.UNSET}
    kept = values.pop(field, None)
    if kept is None:
        return model.model_validate(values), None
    raw = bytes(kept)
    if not raw.startswith(b"{"):
        return from_json(model, data), None
    return model.model_validate(values), raw


@cache
def _splitter(model: type[BaseModel], field: str) -> tuple[Any, tuple[str, ...]]:
    """A decoder of `model`'s JSON into its top-level fields (any value; unknown names
    refused) with `field` kept raw: the model's own fields, so no second schema (by
    name: a model whose fields have aliases is not for this). With the fields' names:
    `model.model_fields` goes through a descriptor each time (0.6 µs of a fire's 7.5)."""
    if any(info.alias or info.validation_alias for info in model.model_fields.values()):
        raise TypeError(f"{model.__name__} has field aliases")
    struct_type = msgspec.defstruct(
        f"{model.__name__}Parts",
        [
            (name, msgspec.Raw if name == field else Any, msgspec.UNSET)
            for name in model.model_fields
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(struct_type), tuple(model.model_fields)


def json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object `from_json_keeping` kept, as Python (it is one: msgspec read it and
    it starts with `{`)."""
    try:
        found: dict[str, Any] = orjson.loads(raw)
    except orjson.JSONDecodeError:  # an integer beyond 64 bits: the standard library's
        found = json.loads(raw)
    return found


@cache
def avro_schema(name: str) -> Any:
    """The parsed Avro schema `schemas/<name>.avsc`."""
    raw = orjson.loads((SCHEMAS_DIR / f"{name}.avsc").read_bytes())
    return fastavro.parse_schema(raw)


def _json_fields(schema: Any) -> set[str]:
    """Fields that carry a JSON value as a string (marked `"json": true` in the .avsc)."""
    return {f["name"] for f in schema["fields"] if f.get("json")}


def to_avro(message: BaseModel, schema_name: str, schema_id: int) -> bytes:
    """Confluent wire format: magic byte 0, 4-byte schema id, Avro binary body."""
    schema = avro_schema(schema_name)
    record = message.model_dump(mode="json", exclude_none=True)
    for name in _json_fields(schema):
        if name in record:
            record[name] = orjson.dumps(record[name]).decode()
    out = io.BytesIO()
    out.write(struct.pack(">bI", _CONFLUENT_MAGIC, schema_id))
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def from_avro(model: type[M], data: bytes, schema_name: str) -> tuple[int, M]:
    """Parse Confluent-framed Avro; returns the schema id and the message."""
    if len(data) < 5 or data[0] != _CONFLUENT_MAGIC:
        raise ValueError("not Confluent Avro: expected magic byte 0 and a 4-byte schema id")
    (schema_id,) = struct.unpack(">I", data[1:5])
    schema = avro_schema(schema_name)
    record = fastavro.schemaless_reader(io.BytesIO(data[5:]), schema, schema)
    assert isinstance(record, dict)
    for name in _json_fields(schema):
        if record.get(name) is not None:
            record[name] = orjson.loads(record[name])
    clean = {k: v for k, v in record.items() if v is not None}
    return schema_id, model.model_validate(clean)
