"""Building a fire: one place, whatever caused it (event, schedule, webhook, a person)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

import jsonpath
import orjson

from processor.definitions.model import OnFailure, TriggerDocument
from processor.errors import TriggerDisabled
from processor.messages import (
    Cause,
    CauseKind,
    ExecutionRecord,
    ExecutionStatus,
    Fire,
    as_utc,
    execution_id_for,
    trusted,
    utcnow,
)
from processor.serde import plain_fields, to_json


def new_fire(
    trigger: TriggerDocument, kind: CauseKind, cause_key: str, cause: Cause, input_: dict[str, Any]
) -> Fire:
    """A fire whose execution id derives from the trigger and what caused it; the input
    is the trigger's `input` with `input_` on top; the execution settings (concurrency,
    timeout, throttle, circuit breaker, retry, per-key concurrency) travel along."""
    input_ = {**trigger.agent.input, **input_}
    return trusted(
        Fire,
        execution_id=execution_id_for(trigger.trigger_id, kind, cause_key),
        trigger_id=trigger.trigger_id,
        trigger_name=trigger.name,
        agent_id=trigger.agent.id,
        workspace_id=trigger.workspace or "default",
        timeout_seconds=trigger.timeout_seconds,
        max_concurrent=trigger.max_concurrent,
        overlap=trigger.overlap,
        throttle=trigger.throttle,
        throttle_key=key_value(trigger.throttle.key if trigger.throttle else None, input_),
        circuit_breaker=trigger.circuit_breaker,
        retry=trigger.retry,
        on_failure=trigger.on_failure if trigger.on_failure is OnFailure.EMIT else None,
        concurrency=trigger.concurrency,
        concurrency_key=key_value(trigger.concurrency.key if trigger.concurrency else None, input_),
        cause=cause,
        input=input_,
    )


class EncodedFire(NamedTuple):
    """A fire as a matcher writes it to `trigger-fires`: its key, its cause's kind (for
    the metric) and its JSON."""

    trigger_id: str
    cause_type: str
    value: bytes


def encoded(fire: Fire) -> EncodedFire:
    return EncodedFire(fire.trigger_id, fire.cause.type.value, to_json(fire))


class _Template(NamedTuple):
    """What every fire of one trigger version writes alike, as `to_json` writes it."""

    trigger: TriggerDocument
    head: dict[str, Any]
    """`trigger_id` to `throttle`, in the model's order, nulls left out."""
    middle: dict[str, Any]
    """`circuit_breaker` to `concurrency`."""


_TEMPLATES_KEPT = 4096
_templates: dict[int, _Template] = {}
"""By the trigger document's identity (an edit makes a new document)."""
_PER_FIRE = frozenset(
    {"execution_id", "throttle_key", "concurrency_key", "cause", "input", "fired_at"}
)


def _template(trigger: TriggerDocument) -> _Template:
    found = _templates.get(id(trigger))
    if found is not None and found.trigger is trigger:
        return found
    cause = trusted(Cause, type=CauseKind.EVENT)
    probe = plain_fields(new_fire(trigger, CauseKind.EVENT, "", cause, {}))
    head: dict[str, Any] = {}
    middle: dict[str, Any] = {}
    part = head
    for name in Fire.model_fields:
        if name == "throttle_key":
            part = middle
        elif name not in _PER_FIRE and name in probe:
            part[name] = probe[name]
    if len(_templates) >= _TEMPLATES_KEPT:
        _templates.clear()
    found = _templates[id(trigger)] = _Template(trigger, head, middle)
    return found


def encoded_fire(
    trigger: TriggerDocument,
    kind: CauseKind,
    cause_key: str,
    cause: dict[str, Any],
    input_: dict[str, Any],
) -> EncodedFire:
    """`encoded(new_fire(trigger, kind, cause_key, trusted(Cause, **cause), input_))`
    without making the models: the event matcher's way (a fire's two models and their
    walk for JSON cost three times the rest of it). Unit tests hold the two to the same
    bytes."""
    template = _template(trigger)
    merged = {**trigger.agent.input, **input_}
    trigger_id = trigger.trigger_id
    out = {"execution_id": execution_id_for(trigger_id, kind, cause_key), **template.head}
    if trigger.throttle is not None:
        out["throttle_key"] = key_value(trigger.throttle.key, merged)
    out.update(template.middle)
    if trigger.concurrency is not None:
        out["concurrency_key"] = key_value(trigger.concurrency.key, merged)
    out["cause"] = {name: value for name, value in cause.items() if value is not None}
    out["input"] = merged
    out["fired_at"] = fired_at = utcnow()
    try:
        value = orjson.dumps(out, option=orjson.OPT_UTC_Z)
    except TypeError:  # orjson.JSONEncodeError: a value only pydantic writes
        fire = new_fire(trigger, kind, cause_key, trusted(Cause, **cause), input_)
        return encoded(fire.model_copy(update={"fired_at": fired_at}))
    return EncodedFire(trigger_id, str(cause["type"]), value)


def map_paths(mapping: dict[str, str], root: Any) -> tuple[dict[str, Any], list[str]]:
    """Each key's value read with its JSONPath from `root` (`agent.input_mapping`), and
    the keys whose path found nothing (those map to null, never to an error)."""
    mapped: dict[str, Any] = {}
    missing = []
    for key, path in mapping.items():
        try:
            found = jsonpath.findall(path, root)
        except jsonpath.JSONPathError:
            found = []
        mapped[key] = found[0] if found else None
        if not found:
            missing.append(key)
    return mapped, missing


def key_value(path: str | None, input_: dict[str, Any]) -> str | None:
    """The bucket of a run under `throttle.key` or `concurrency.key`: the first value
    `path` finds in its input, as compact JSON ("" when it finds none); None when there
    is no key (the whole trigger is one bucket)."""
    if path is None:
        return None
    try:
        found = jsonpath.findall(path, input_)
    except jsonpath.JSONPathError:
        found = []
    if not found:
        return ""
    value = found[0]
    return (
        value
        if isinstance(value, str)
        else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    )


def ensure_enabled(trigger: TriggerDocument) -> None:
    """Refuse an operator's run of a disabled trigger, saying how to enable it."""
    if not trigger.enabled:
        raise TriggerDisabled(
            f"trigger {trigger.name!r} ({trigger.trigger_id}) is disabled; enable it first "
            f"(`triggers enable {trigger.trigger_id}`)"
        )


class TooManyReruns(ValueError):
    """A bulk re-run over RERUN_MAX executions."""


RERUN_MAX = 500
"""The most executions one bulk re-run starts (narrow the range for more)."""


def rerun_fire(
    trigger: TriggerDocument,
    original: ExecutionRecord,
    requested_by: str,
    idempotency_key: str | None = None,
) -> Fire:
    """A new execution of `original`'s trigger with `original`'s input (its cause says
    which execution it re-runs). The same idempotency key gives the same execution id
    (a retried request starts no second run); without one, every request is a new run.
    A disabled trigger is refused."""
    ensure_enabled(trigger)
    key = f"{original.execution_id}/{idempotency_key or uuid.uuid4()}"
    cause = Cause(
        type=CauseKind.RERUN,
        execution_id=original.execution_id,
        requested_by=requested_by,
        requested_at=utcnow().isoformat(),
        **({"idempotency_key": idempotency_key} if idempotency_key else {}),
    )
    return new_fire(trigger, CauseKind.RERUN, key, cause, dict(original.input_data or {}))


def rerun_candidates(
    records: list[ExecutionRecord],
    status: ExecutionStatus,
    since: datetime | None,
    until: datetime | None,
) -> list[ExecutionRecord]:
    """The executions a bulk re-run takes: of `status`, triggered in [since, until),
    oldest first."""
    return sorted(
        (
            r
            for r in records
            if r.status is status
            and (since is None or r.triggered_at >= since)
            and (until is None or r.triggered_at < until)
        ),
        key=lambda r: (r.triggered_at, r.execution_id),
    )


def bulk_rerun_fires(
    trigger: TriggerDocument,
    records: list[ExecutionRecord],
    status: ExecutionStatus,
    since: datetime | None,
    until: datetime | None,
    requested_by: str,
) -> list[tuple[ExecutionRecord, Fire]]:
    """Every `status` execution of `records` triggered in [since, until) (no zone: UTC),
    oldest first, with the fire that runs it again. The same request again gives the same
    execution ids, so a retried bulk re-run (or the real run after its dry run) starts
    nothing else. More than RERUN_MAX is refused."""
    since = as_utc(since) if since else None
    until = as_utc(until) if until else None
    chosen = rerun_candidates(records, status, since, until)
    if len(chosen) > RERUN_MAX:
        raise TooManyReruns(
            f"{len(chosen)} executions match; one re-run takes at most {RERUN_MAX}: narrow "
            "the range (since/until)"
        )
    key = f"bulk:{status.value}:{since}:{until}"
    return [(original, rerun_fire(trigger, original, requested_by, key)) for original in chosen]


def manual_fire(
    trigger: TriggerDocument,
    input_: dict[str, Any],
    requested_by: str,
    idempotency_key: str | None = None,
) -> Fire:
    """A run asked for by a person or a script ("run now"), whatever the trigger's type.

    The input is the trigger's `input` with `input_` on top. The same idempotency key
    gives the same execution id, so a retried request starts no second run; without one,
    every request is a new run. A disabled trigger is refused.
    """
    ensure_enabled(trigger)
    key = idempotency_key or str(uuid.uuid4())
    cause = Cause(
        type=CauseKind.MANUAL,
        requested_by=requested_by,
        requested_at=utcnow().isoformat(),
        **({"idempotency_key": idempotency_key} if idempotency_key else {}),
    )
    return new_fire(trigger, CauseKind.MANUAL, key, cause, input_)
