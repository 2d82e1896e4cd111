"""The webhook mapper: a delivery on `webhooks` becomes a fire (runs in the worker).

The agent's input is the trigger's `input` plus each `input_mapping` key, read with
JSONPath from `{"body", "headers", "query", "path", "method", "received_at"}`. A path
that finds nothing maps to null (and is counted), never to an error.
"""

from __future__ import annotations

import logging
from typing import Any

from processor.definitions.model import TriggerDocument
from processor.definitions.registry import Registry
from processor.logs import about
from processor.matching.fires import map_paths, new_fire
from processor.messages import Cause, CauseKind, Fire, WebhookDelivery
from processor.serde import from_json

log = logging.getLogger(__name__)


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
    mapped, missing = map_paths(trigger.agent.input_mapping, mapping_root(delivery))
    return {**trigger.agent.input, **mapped}, missing


def fire_for_delivery(
    trigger: TriggerDocument, delivery: WebhookDelivery
) -> tuple[Fire, list[str]]:
    mapped, missing = map_input(trigger, delivery)
    cause = Cause(
        type=CauseKind.WEBHOOK,
        delivery_id=delivery.delivery_id,
        method=delivery.method,
        path=delivery.path,
        received_at=delivery.received_at.isoformat(),
    )
    return new_fire(trigger, CauseKind.WEBHOOK, delivery.delivery_id, cause, mapped), missing


def map_delivery(registry: Registry, value: bytes) -> tuple[Fire, list[str]] | None:
    """A record of `webhooks` as a fire and the mapping keys that found nothing; None
    when its trigger is gone, disabled or no longer a webhook (logged). A record that
    is not a delivery raises ValidationError (the worker dead-letters it)."""
    delivery = from_json(WebhookDelivery, value)
    trigger = registry.get(delivery.trigger_id)
    if trigger is None or not trigger.enabled or trigger.webhook is None:
        log.info(
            "delivery %s for trigger %s: trigger gone or disabled; not fired",
            delivery.delivery_id,
            delivery.trigger_id,
            extra=about(trigger_id=delivery.trigger_id),
        )
        return None
    return fire_for_delivery(trigger, delivery)
