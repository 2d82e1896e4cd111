"""Every message that crosses a Kafka topic, as pydantic models (docs/architecture.md, "Messages").

Free-form payloads (`data`, `input`, `output`, `body`) are JSON values. Timestamps are
timezone-aware and serialized as ISO 8601.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field, model_validator

from processor.definitions.model import (
    CircuitBreakerSpec,
    ConcurrencySpec,
    OnFailure,
    OverlapPolicy,
    RetrySpec,
    ThrottleSpec,
)

JsonObject = dict[str, Any]

# Execution ids are uuid5 names in this namespace: the same cause gives the same id.
EXECUTION_NAMESPACE = uuid.UUID("6f1c9a52-3a0e-4c1b-9d7e-2b8f0e5d4a11")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A time given without a zone (on a command line, in a request) read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def execution_id_for(trigger_id: str, cause_kind: str, cause_key: str) -> str:
    """The deterministic id of the execution that `cause_key` causes for a trigger.

    Reprocessing the same input after a crash yields the same id, so every duplicate
    downstream is recognisable (and dropped by the dispatcher).
    """
    return uuid5_text(f"{trigger_id}\x1f{cause_kind}\x1f{cause_key}")


_NAMESPACE_BYTES = EXECUTION_NAMESPACE.bytes


def uuid5_text(name: str) -> str:
    """`str(uuid.uuid5(EXECUTION_NAMESPACE, name))` without building a UUID object: the
    same SHA-1, version and variant bits, formatted from the digest directly (a third of
    the time; every fire pays it)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


M = TypeVar("M", bound=BaseModel)
_layouts: dict[type[BaseModel], tuple[dict[str, Any], tuple[tuple[str, Any], ...], bool]] = {}
_set = object.__setattr__


def trusted(cls: type[M], **values: Any) -> M:
    """A message made of values that are already valid (fields of a validated message, a
    validated definition's settings, times and ids of our own), without validating them
    again: what pydantic's `model_construct` makes, in a fraction of its time (a fire,
    an execution record and its command are each made once per fire). Fields not given
    take their defaults; with `extra="allow"`, unknown values are the model's extras. A
    unit test holds each hot-path use to what validation makes of the same values."""
    layout = _layouts.get(cls)
    if layout is None:
        layout = _layouts[cls] = _layout(cls)
    plain, factories, allow_extra = layout
    fields = {**plain, **values}
    for name, factory in factories:
        if name not in fields:
            fields[name] = factory()
    extra = None
    if allow_extra:
        known = cls.__pydantic_fields__
        extra = {name: fields.pop(name) for name in list(fields) if name not in known}
    model = cls.__new__(cls)
    _set(model, "__dict__", fields)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", extra)
    _set(model, "__pydantic_private__", None)
    return model


def _layout(cls: type[BaseModel]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...], bool]:
    """A model's plain defaults, its default factories, and whether it keeps extras."""
    plain = {}
    factories = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            factories.append((name, info.default_factory))
        elif not info.is_required():
            plain[name] = info.default
    return plain, tuple(factories), cls.model_config.get("extra") == "allow"


class DomainEvent(BaseModel):
    """A domain event with CloudEvents 1.0 attributes; extension attributes are kept."""

    model_config = ConfigDict(extra="allow")

    specversion: str = "1.0"
    id: str = Field(description="Unique per source; defaults to topic-partition-offset.")
    type: str = Field(min_length=1, description="What happened, e.g. `error.database`.")
    source: str = Field("", description="Who emitted it, e.g. `system`.")
    time: datetime | None = Field(None, description="When it happened (event time).")
    subject: str | None = None
    datacontenttype: str | None = None
    workspace_id: str | None = Field(None, description="Workspace extension attribute.")
    data: Any = None


class CauseKind(StrEnum):
    """What made a trigger fire."""

    EVENT = "event"
    """A domain event (or the event that crossed a threshold)."""
    SCHEDULE = "schedule"
    """A schedule came due."""
    WEBHOOK = "webhook"
    """A webhook delivery arrived."""
    MANUAL = "manual"
    """A person or script asked for a run."""
    RERUN = "rerun"
    """A person or script asked to run an earlier execution again (cause `execution_id`)."""


class Cause(BaseModel):
    """What made it fire: `type` plus what identifies the cause (event id, fire time, ...)."""

    model_config = ConfigDict(extra="allow")

    type: CauseKind


class Fire(_Message):
    """A trigger fired: written by the matchers to `trigger-fires`, keyed by trigger id.

    It carries what the dispatcher needs from the definition at the moment of the fire,
    so dispatching does not depend on when the dispatcher sees a later edit.
    """

    execution_id: str
    trigger_id: str
    trigger_name: str
    agent_id: str
    workspace_id: str
    timeout_seconds: int = 3600
    max_concurrent: int = 1
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    throttle: ThrottleSpec | None = None
    throttle_key: str | None = Field(None, description="The value of `throttle.key`, if any.")
    circuit_breaker: CircuitBreakerSpec | None = None
    retry: RetrySpec | None = None
    on_failure: OnFailure | None = Field(None, description="Set when it is `emit`.")
    concurrency: ConcurrencySpec | None = None
    concurrency_key: str | None = Field(None, description="The value of `concurrency.key`, if any.")
    cause: Cause
    input: JsonObject = Field(default_factory=dict)
    fired_at: datetime = Field(default_factory=utcnow)


class WindowMatch(_Message):
    """An event that passed a threshold trigger's condition, on `trigger-matches`,
    keyed by `trigger_id` + group so one window evaluator owns each (trigger, group)."""

    trigger_id: str
    group: str = ""
    role: str = Field("event", description="event, or first / second of a sequence pattern.")
    event_key: str = Field(description="source + id: what dedupes the event in its window.")
    time: float = Field(description="Event time, seconds since the epoch.")
    value: float | None = Field(None, description="The aggregated field's value, if any.")
    event: JsonObject = Field(default_factory=dict, description="Bounded summary of the event.")


class ExecutionCommand(_Message):
    """Run an agent: written to `agent-runs`, keyed by execution id."""

    execution_id: str
    trigger_id: str
    trigger_name: str
    agent_id: str
    workspace_id: str
    input: JsonObject = Field(default_factory=dict)
    cause: Cause
    issued_at: datetime
    deadline: datetime
    attempt: int = 1


class ControlAction(StrEnum):
    CANCEL = "cancel"
    """Stop the execution; the runtime answers with a `cancelled` result."""


class ControlCommand(_Message):
    """A control message for a runtime on `agent-run-control`, keyed by execution id."""

    execution_id: str
    action: ControlAction


class CancelRequest(_Message):
    """Cancel asked for over the API; sent to the dispatcher keyed by trigger id."""

    execution_id: str
    trigger_id: str
    requested_at: datetime = Field(default_factory=utcnow)


class RunStatus(StrEnum):
    """Statuses a runtime reports on `agent-run-results`."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FIRE_MAX_BYTES = 1_000_000
"""A fire's JSON stays under this, whatever the compression: the broker's default limit on
a record is 1 MiB, and the command and execution record made from a fire are a little
larger than it. A larger fire is refused where it is made (413 over REST, a dead letter
in the matcher and the dispatcher), never written as a record the broker would refuse
inside a transaction, which would then fail at every try."""


class RunResult(_Message):
    """A runtime's report on `agent-run-results`, keyed by execution id."""

    execution_id: str
    trigger_id: str | None = Field(None, description="Echoed from the command when known.")
    status: RunStatus
    output: Any = None
    error: str | None = None
    at: datetime | None = None
    attempt: int | None = Field(
        None,
        description="Echoed from the command: a result of an earlier attempt than the "
        "execution's current one is ignored.",
    )
    output_left_out: str | None = Field(
        None,
        description="Set by the dispatcher when it leaves an output out that no record "
        "could keep (too large, or nesting too deep), and why; runtimes leave it out.",
    )


class ExecutionStatus(StrEnum):
    """The life of an execution, as recorded on `trigger-executions`."""

    PENDING = "pending"
    """Command issued and no runtime has reported yet; or waiting to be issued (buffered,
    throttled, or a retry waiting for its backoff: `retry_at`)."""
    RUNNING = "running"
    """A runtime reported it started."""
    COMPLETED = "completed"
    """Finished with an output."""
    FAILED = "failed"
    """Finished with an error (after its last attempt, if the trigger retries)."""
    CANCELLED = "cancelled"
    """Stopped on request."""
    TIMED_OUT = "timed_out"
    """Not finished by its deadline; a cancel was sent to the runtime."""
    SKIPPED = "skipped"
    """Never started, by the trigger's overlap or flow-control policy."""

    @property
    def finished(self) -> bool:
        return self not in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)


class ExecutionRecord(_Message):
    """An execution's latest state on `trigger-executions` (compacted, key execution id).

    Field names follow the product note's `TriggerExecution`, with `execution_id` as
    the id (`id` is accepted on input and also written, for readers of the note's shape).
    """

    execution_id: str = Field(validation_alias=AliasChoices("execution_id", "id"))
    trigger_id: str
    trigger_name: str = ""
    agent_id: str
    workspace_id: str
    status: ExecutionStatus
    workflow_id: str | None = None
    cause: Cause
    input_data: JsonObject = Field(default_factory=dict)
    output_data: Any = None
    output_left_out: str | None = Field(
        None,
        description="Why `output_data` is null although the runtime reported an output: "
        "larger than TRIGGERS_RESULT_OUTPUT_MAX_BYTES of JSON, nesting deeper than 128 "
        "levels, or too large for the record with this input. The runtime's whole result "
        "stays on `agent-run-results` for its retention.",
    )
    error_message: str | None = None
    triggered_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime
    deadline: datetime | None = None
    issued_at: datetime | None = Field(
        None, description="When the command went out; unset while buffered."
    )
    reason: str | None = Field(None, description="Why it was skipped, timed out or cancelled.")
    timeout_seconds: int = 3600
    max_concurrent: int = 1
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    throttle: ThrottleSpec | None = None
    throttle_key: str | None = None
    circuit_breaker: CircuitBreakerSpec | None = None
    attempt: int = Field(1, description="The current attempt, 1 unless the trigger retries.")
    retry_at: datetime | None = Field(
        None, description="When the next attempt starts, while it waits for its backoff."
    )
    retry: RetrySpec | None = None
    on_failure: OnFailure | None = None
    concurrency: ConcurrencySpec | None = None
    concurrency_key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _note_id(cls, data: Any) -> Any:
        """`id` is the note's name for `execution_id`; both may be present (we write both)."""
        if isinstance(data, dict) and "id" in data and "execution_id" in data:
            data = {k: v for k, v in data.items() if k != "id"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def id(self) -> str:
        return self.execution_id


class WebhookDelivery(_Message):
    """An HTTP call accepted by the gateway, on `webhooks` keyed by trigger id."""

    delivery_id: str
    trigger_id: str
    method: str
    path: str
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    received_at: datetime


class CronTick(_Message):
    """A scheduler tick on `cron-ticks`: the scheduled time it stands for."""

    tick: datetime


class DeadLetter(_Message):
    """A record the product could not use, with where it came from and why."""

    topic: str
    partition: int
    offset: int
    key: str | None = Field(None, description="Original key, base64.")
    value: str | None = Field(
        None, description="Original value, base64: all of it, up to 3 MiB (see value_bytes)."
    )
    value_bytes: int = Field(0, description="Size of the original value.")
    headers: list[tuple[str, str | None]] | None = Field(
        None, description="Original headers: name and base64 value, in order."
    )
    error: str
    component: str
    at: datetime = Field(default_factory=utcnow)
