"""Building a fire: one place, whatever caused it (event, schedule, webhook)."""

from __future__ import annotations

from typing import Any

from processor.definitions.model import TriggerDocument
from processor.messages import Cause, CauseKind, Fire, execution_id_for


def new_fire(
    trigger: TriggerDocument, kind: CauseKind, cause_key: str, cause: Cause, input_: dict[str, Any]
) -> Fire:
    """A fire whose execution id derives from the trigger and what caused it; the input
    is the trigger's `input` with `input_` on top; the execution settings travel along."""
    return Fire(
        execution_id=execution_id_for(trigger.trigger_id, kind, cause_key),
        trigger_id=trigger.trigger_id,
        trigger_name=trigger.name,
        agent_id=trigger.agent.id,
        workspace_id=trigger.workspace or "default",
        timeout_seconds=trigger.timeout_seconds,
        max_concurrent=trigger.max_concurrent,
        overlap=trigger.overlap,
        cause=cause,
        input={**trigger.agent.input, **input_},
    )
