"""The webhook mapper: a delivery on `webhooks` becomes a fire (runs in the worker).

The agent's input is the trigger's `input` plus each `input_mapping` key, read with
JSONPath from `{"body", "headers", "query", "path", "method", "received_at"}`. A path
that finds nothing maps to null (and is counted), never to an error.
"""

from __future__ import annotations

from typing import Any

import jsonpath

from processor.definitions.model import TriggerDocument
from processor.messages import Cause, CauseKind, Fire, WebhookDelivery, execution_id_for


def mapping_root(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "body": delivery.body,
        "headers": delivery.headers,
        "query": delivery.query,
        "path": delivery.path,
        "method": delivery.method,
        "received_at": delivery.received_at.isoformat(),
    }


def map_input(
    trigger: TriggerDocument, delivery: WebhookDelivery
) -> tuple[dict[str, Any], list[str]]:
    """The agent input, and the mapping keys whose path found nothing."""
    root = mapping_root(delivery)
    mapped: dict[str, Any] = {}
    missing = []
    for key, path in trigger.agent.input_mapping.items():
        try:
            found = jsonpath.findall(path, root)
        except jsonpath.JSONPathError:
            found = []
        mapped[key] = found[0] if found else None
        if not found:
            missing.append(key)
    return {**trigger.agent.input, **mapped}, missing


def fire_for_delivery(
    trigger: TriggerDocument, delivery: WebhookDelivery
) -> tuple[Fire, list[str]]:
    input_, missing = map_input(trigger, delivery)
    fire = Fire(
        execution_id=execution_id_for(trigger.trigger_id, CauseKind.WEBHOOK, delivery.delivery_id),
        trigger_id=trigger.trigger_id,
        trigger_name=trigger.name,
        agent_id=trigger.agent.id,
        workspace_id=trigger.workspace or "default",
        timeout_seconds=trigger.timeout_seconds,
        cause=Cause(
            type=CauseKind.WEBHOOK,
            delivery_id=delivery.delivery_id,
            method=delivery.method,
            path=delivery.path,
            received_at=delivery.received_at.isoformat(),
        ),
        input=input_,
    )
    return fire, missing
