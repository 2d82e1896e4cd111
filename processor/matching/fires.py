"""Building a fire: one place, whatever caused it (event, schedule, webhook)."""

from __future__ import annotations

from typing import Any

import jsonpath
import orjson

from processor.definitions.model import ThrottleSpec, TriggerDocument
from processor.messages import Cause, CauseKind, Fire, execution_id_for


def new_fire(
    trigger: TriggerDocument, kind: CauseKind, cause_key: str, cause: Cause, input_: dict[str, Any]
) -> Fire:
    """A fire whose execution id derives from the trigger and what caused it; the input
    is the trigger's `input` with `input_` on top; the execution settings (concurrency,
    timeout, throttle and its key, circuit breaker) travel along."""
    input_ = {**trigger.agent.input, **input_}
    return Fire(
        execution_id=execution_id_for(trigger.trigger_id, kind, cause_key),
        trigger_id=trigger.trigger_id,
        trigger_name=trigger.name,
        agent_id=trigger.agent.id,
        workspace_id=trigger.workspace or "default",
        timeout_seconds=trigger.timeout_seconds,
        max_concurrent=trigger.max_concurrent,
        overlap=trigger.overlap,
        throttle=trigger.throttle,
        throttle_key=throttle_key(trigger.throttle, input_),
        circuit_breaker=trigger.circuit_breaker,
        cause=cause,
        input=input_,
    )


def throttle_key(throttle: ThrottleSpec | None, input_: dict[str, Any]) -> str | None:
    """The throttle bucket of a run: the first value `throttle.key` finds in its input,
    as compact JSON ("" when it finds none); None when the whole trigger is one bucket."""
    if throttle is None or throttle.key is None:
        return None
    try:
        found = jsonpath.findall(throttle.key, input_)
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
