"""Every message round-trips through JSON and through Avro (Confluent framing)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from processor.definitions.model import ConcurrencySpec, OnFailure, RetrySpec, ThrottleSpec
from processor.messages import (
    EXECUTION_NAMESPACE,
    Cause,
    CauseKind,
    ControlAction,
    ControlCommand,
    CronTick,
    DeadLetter,
    DomainEvent,
    ExecutionCommand,
    ExecutionRecord,
    ExecutionStatus,
    Fire,
    RunResult,
    RunStatus,
    WebhookDelivery,
    WindowMatch,
    execution_id_for,
    trusted,
    uuid5_text,
)
from processor.serde import (
    SCHEMAS_DIR,
    avro_schema,
    from_avro,
    from_json,
    from_json_keeping,
    json_object,
    pydantic_json,
    to_avro,
    to_json,
)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
CAUSE = Cause(type=CauseKind.EVENT, event_id="e-1")

SAMPLES: list[tuple[str, BaseModel]] = [
    (
        "domain_event",
        DomainEvent(
            id="e-1",
            type="error.database",
            source="system",
            time=NOW,
            workspace_id="default",
            data={"severity": "high", "n": [1, 2]},
        ),
    ),
    (
        "webhook_delivery",
        WebhookDelivery(
            delivery_id="d-1",
            trigger_id="t-1",
            method="POST",
            path="/webhooks/t-1",
            headers={"x-a": "1"},
            query={"q": "v"},
            body={"text": "hi"},
            received_at=NOW,
        ),
    ),
    ("cron_tick", CronTick(tick=NOW)),
    (
        "fire",
        Fire(
            execution_id="x-1",
            trigger_id="t-1",
            trigger_name="T",
            agent_id="a",
            workspace_id="default",
            timeout_seconds=60,
            cause=CAUSE,
            input={"k": {"v": 1}},
            fired_at=NOW,
        ),
    ),
    (
        "execution_command",
        ExecutionCommand(
            execution_id="x-1",
            trigger_id="t-1",
            trigger_name="T",
            agent_id="a",
            workspace_id="default",
            input={"k": 1},
            cause=CAUSE,
            issued_at=NOW,
            deadline=NOW,
        ),
    ),
    ("control_command", ControlCommand(execution_id="x-1", action=ControlAction.CANCEL)),
    (
        "run_result",
        RunResult(
            execution_id="x-1",
            trigger_id="t-1",
            status=RunStatus.COMPLETED,
            output={"ok": True},
            at=NOW,
            attempt=2,
        ),
    ),
    (
        "execution_record",
        ExecutionRecord(
            execution_id="x-1",
            trigger_id="t-1",
            trigger_name="T",
            agent_id="a",
            workspace_id="default",
            status=ExecutionStatus.FAILED,
            cause=CAUSE,
            input_data={"k": 1},
            error_message="boom",
            triggered_at=NOW,
            updated_at=NOW,
            completed_at=NOW,
            attempt=2,
            retry_at=NOW,
            retry=RetrySpec(attempts=3, initial="1s"),
            on_failure=OnFailure.EMIT,
            concurrency=ConcurrencySpec(limit=1, key="$.c"),
            concurrency_key="acme",
        ),
    ),
    (
        "window_match",
        WindowMatch(
            trigger_id="t-1",
            group="h1",
            role="first",
            event_key="s\x1fe-1",
            time=1.5,
            value=2.0,
            event={"id": "e-1"},
        ),
    ),
    (
        "dead_letter",
        DeadLetter(
            topic="events",
            partition=1,
            offset=7,
            value="e30=",
            headers=[("trace", "YWJj"), ("empty", None)],
            error="no type",
            component="event-matcher",
            at=NOW,
        ),
    ),
]


@pytest.mark.parametrize(("schema", "message"), SAMPLES, ids=[s for s, _ in SAMPLES])
def test_json_round_trip(schema: str, message: BaseModel) -> None:
    assert from_json(type(message), to_json(message)) == message


@pytest.mark.parametrize(("schema", "message"), SAMPLES, ids=[s for s, _ in SAMPLES])
def test_avro_round_trip_with_confluent_framing(schema: str, message: BaseModel) -> None:
    framed = to_avro(message, schema, schema_id=42)
    assert framed[0] == 0 and framed[1:5] == (42).to_bytes(4, "big")
    schema_id, back = from_avro(type(message), framed, schema)
    assert schema_id == 42 and back == message


@pytest.mark.parametrize(("schema", "message"), SAMPLES, ids=[s for s, _ in SAMPLES])
def test_avro_schema_covers_every_field_of_the_model(schema: str, message: BaseModel) -> None:
    avro_fields = {
        f["name"] for f in orjson.loads((SCHEMAS_DIR / f"{schema}.avsc").read_bytes())["fields"]
    }
    model_fields = set(type(message).model_fields) | set(type(message).model_computed_fields)
    assert model_fields <= avro_fields, model_fields - avro_fields


def test_every_avro_schema_parses() -> None:
    names = sorted(p.stem for p in Path(SCHEMAS_DIR).glob("*.avsc"))
    assert len(names) == 11
    for name in names:
        avro_schema(name)


def test_not_confluent_framed_is_rejected() -> None:
    with pytest.raises(ValueError, match="not Confluent Avro"):
        from_avro(CronTick, b"\x01\x00", "cron_tick")


def test_execution_record_accepts_the_notes_id_and_writes_both() -> None:
    record = next(m for _, m in SAMPLES if isinstance(m, ExecutionRecord))
    data = orjson.loads(to_json(record))
    assert data["id"] == data["execution_id"] == "x-1"
    data.pop("execution_id")
    assert from_json(ExecutionRecord, orjson.dumps(data)).execution_id == "x-1"


def test_execution_ids_are_deterministic_per_cause() -> None:
    assert execution_id_for("t", "event", "e-1") == execution_id_for("t", "event", "e-1")
    assert execution_id_for("t", "event", "e-1") != execution_id_for("t", "event", "e-2")
    assert execution_id_for("t", "event", "e-1") != execution_id_for("u", "event", "e-1")
    assert execution_id_for("t", "event", "e-1") != execution_id_for("t", "webhook", "e-1")


@pytest.mark.parametrize(
    "name",
    ["", "t\x1fevent\x1fe-1", "é\x1fwindow\x1f\x1fsystem\x1f" + "f" * 32, "\U0001f600" * 40],
)
def test_execution_ids_are_the_uuid5_of_their_cause(name: str) -> None:
    """Ids written by earlier versions are what dedupes a replay across an upgrade."""
    assert uuid5_text(name) == str(uuid.uuid5(EXECUTION_NAMESPACE, name))
    assert uuid.UUID(uuid5_text(name)).version == 5


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"execution_id": "x"', b"\xff", b'{"n": 1e999999}', b'{"n": NaN}'],
)
def test_reading_what_is_not_json_raises_validation_error_saying_so(raw: bytes) -> None:
    """orjson parses first; what it refuses still fails as pydantic's ValidationError,
    which callers such as the execution history catch."""
    with pytest.raises(ValidationError):
        from_json(RunResult, raw)


def _fire(**fields: Any) -> Fire:
    return Fire(
        execution_id="x",
        trigger_id="t",
        trigger_name="n",
        agent_id="a",
        workspace_id="w",
        cause=Cause(type=CauseKind.EVENT, event_id="e"),
        fired_at=NOW,
        **fields,
    )


def test_messages_read_the_same_whichever_parser_reads_them() -> None:
    fire = _fire(
        input={"big": 2**70, "nested": [{"a": None}, 1.5, "é"]},
        retry=RetrySpec.model_validate({"attempts": 3, "initial": "5s"}),
    )
    raw = to_json(fire)
    assert from_json(Fire, raw) == Fire.model_validate_json(raw) == fire


def _without_input(fire: Fire) -> bytes:
    return orjson.dumps({k: v for k, v in orjson.loads(to_json(fire)).items() if k != "input"})


@pytest.mark.parametrize(
    "input_",
    [{}, {"k": 1}, {"big": 2**70, "nested": [{"a": None}, 1.5, "é"], "s": 'q"\n'}],
)
def test_a_message_read_keeping_a_field_is_the_message_read_whole(input_: dict[str, Any]) -> None:
    """The dispatcher reads a fire leaving its input as JSON: the rest is the fire, and
    the kept bytes are the input's."""
    whole = _fire(input=input_, retry=RetrySpec.model_validate({"attempts": 3}))
    read, kept = from_json_keeping(Fire, to_json(whole), "input")
    assert kept is not None and json_object(kept) == input_
    assert read == whole.model_copy(update={"input": {}})


def test_the_kept_field_is_its_bytes_as_they_came() -> None:
    spaced = b'{ "input" :  {"k" : [1, 2]} ,' + _without_input(_fire())[1:]
    assert from_json_keeping(Fire, spaced, "input") == (_fire(), b'{"k" : [1, 2]}')


def test_a_message_without_the_kept_field_reads_with_its_default() -> None:
    assert from_json_keeping(Fire, _without_input(_fire()), "input") == (_fire(), None)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"execution_id": "x", "input": {"a": [1,}}',
        b'{"execution_id": "x", "input": {"a": NaN}}',
        b'{"execution_id": "x", "input": [1]}',
        b'{"execution_id": "x", "input": "text"}',
        b'{"execution_id": "x", "unknown": 1}',
        b'{"execution_id": 5}',
        b"\xff",
    ],
)
def test_what_cannot_be_read_keeping_a_field_fails_as_reading_it_whole(raw: bytes) -> None:
    """Malformed JSON, an unknown field, a kept field that is not an object, a wrong
    type: the same ValidationError, worded by pydantic, as `from_json` raises."""
    with pytest.raises(ValidationError) as whole:
        from_json(Fire, raw)
    with pytest.raises(ValidationError) as kept:
        from_json_keeping(Fire, raw, "input")
    assert str(kept.value) == str(whole.value)


def test_a_model_with_aliases_is_not_read_keeping_a_field() -> None:
    with pytest.raises(TypeError, match="aliases"):
        from_json_keeping(ExecutionRecord, b"{}", "input_data")


@pytest.mark.parametrize(("schema", "message"), SAMPLES, ids=[s for s, _ in SAMPLES])
def test_to_json_writes_the_bytes_pydantic_writes(schema: str, message: BaseModel) -> None:
    assert to_json(message) == pydantic_json(message)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    payload=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5),
    extra=st.dictionaries(st.sampled_from(["event_id", "count", "key", "at"]), JSON_VALUES),
    when=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
)
def test_to_json_matches_pydantic_on_any_json_input(
    payload: dict[str, Any], extra: dict[str, Any], when: datetime
) -> None:
    """orjson writes a message as pydantic would, whatever the free-form values (a value
    orjson refuses, such as an int over 64 bits, goes to pydantic itself)."""
    fire = Fire(
        execution_id="x",
        trigger_id="t",
        trigger_name="n",
        agent_id="a",
        workspace_id="w",
        cause=Cause(type=CauseKind.EVENT, **extra),
        input=payload,
        fired_at=when,
        throttle=ThrottleSpec(limit=2, period="1m"),
    )
    assert to_json(fire) == pydantic_json(fire)


TRUSTED: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (Cause, {"type": CauseKind.EVENT, "event_id": "e-1", "group": "", "count": 5, "key": None}),
    (
        Fire,
        {
            "execution_id": "x-1",
            "trigger_id": "t-1",
            "trigger_name": "T",
            "agent_id": "a",
            "workspace_id": "default",
            "throttle": ThrottleSpec(limit=2, period="1m"),
            "throttle_key": "",
            "retry": RetrySpec(attempts=3, initial="1s"),
            "on_failure": OnFailure.EMIT,
            "cause": CAUSE,
            "input": {"event": {"id": "e-1", "data": None}},
            "fired_at": NOW,
        },
    ),
    (
        ExecutionRecord,
        {
            "execution_id": "x-1",
            "trigger_id": "t-1",
            "trigger_name": "T",
            "agent_id": "a",
            "workspace_id": "default",
            "status": ExecutionStatus.PENDING,
            "cause": CAUSE,
            "triggered_at": NOW,
            "updated_at": NOW,
            "issued_at": NOW,
            "deadline": NOW,
            "concurrency": ConcurrencySpec(limit=1, key="$.c"),
        },
    ),
    (
        ExecutionCommand,
        {
            "execution_id": "x-1",
            "trigger_id": "t-1",
            "trigger_name": "T",
            "agent_id": "a",
            "workspace_id": "default",
            "cause": CAUSE,
            "issued_at": NOW,
            "deadline": NOW,
        },
    ),
]


@pytest.mark.parametrize(("model", "values"), TRUSTED, ids=[m.__name__ for m, _ in TRUSTED])
def test_trusted_makes_what_validation_makes(
    model: type[BaseModel], values: dict[str, Any]
) -> None:
    """The hot paths' messages (a fire, its cause, record and command), made without
    validation, equal the validated ones: fields, defaults, extras and JSON."""
    made, validated = trusted(model, **values), model(**values)
    assert made == validated
    assert made.model_fields_set == validated.model_fields_set
    assert made.model_extra == validated.model_extra
    assert to_json(made) == pydantic_json(validated)
