from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processor.definitions.loader import parse_document
from processor.messages import WebhookDelivery, execution_id_for
from processor.webhooks.gateway import Refused, parse_body
from processor.webhooks.mapping import fire_for_delivery

TRIGGER = parse_document(
    {
        "name": "slack",
        "type": "webhook",
        "webhook": {},
        "agent": {
            "id": "bot",
            "input": {"fixed": 1, "text": "overridden"},
            "input_mapping": {
                "text": "$.body.text",
                "who": "$.headers['x-user']",
                "q": "$.query.page",
                "missing": "$.body.nope",
                "at": "$.received_at",
            },
        },
    },
    "t",
).resolved("default")


def test_mapping_reads_the_delivery_and_missing_paths_are_null() -> None:
    delivery = WebhookDelivery(
        delivery_id="d-1",
        trigger_id=TRIGGER.trigger_id,
        method="POST",
        path="/webhooks/x",
        headers={"x-user": "ann"},
        query={"page": "2"},
        body={"text": "hi"},
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    fire, missing = fire_for_delivery(TRIGGER, delivery)
    assert fire.input == {
        "fixed": 1,
        "text": "hi",
        "who": "ann",
        "q": "2",
        "missing": None,
        "at": "2026-01-01T00:00:00+00:00",
    }
    assert missing == ["missing"]
    assert fire.execution_id == execution_id_for(TRIGGER.trigger_id, "webhook", "d-1")


def test_body_parsing() -> None:
    assert parse_body("application/json; charset=utf-8", b'{"a": 1}') == {"a": 1}
    assert parse_body("application/x-www-form-urlencoded", b"text=hi+there&tag=a&tag=b") == {
        "text": "hi there",
        "tag": ["a", "b"],
    }
    assert parse_body("text/plain", b"hello") == "hello"
    assert parse_body("application/json", b"") is None
    deep = b"[" * 300 + b"]" * 300  # parsed (up to 1024 levels), but no fire could carry it
    with pytest.raises(Refused, match="nests deeper than 128 levels") as refused:
        parse_body("application/json", b'{"a": ' + deep + b"}")
    assert refused.value.status == 400


def test_client_ip_believes_forwarded_for_only_through_trusted_proxies() -> None:
    from processor.config import Settings
    from processor.webhooks.gateway import Gateway

    def forwarded(hops: str) -> dict[str, str]:
        return {"x-forwarded-for": hops}

    trusting = Gateway(Settings(trusted_proxies=["10.0.0.0/8"]), view=None, producer=None)  # type: ignore[arg-type]
    assert trusting.client_ip("10.1.1.1", forwarded("203.0.113.7")) == "203.0.113.7"
    assert (
        trusting.client_ip("10.1.1.1", forwarded("198.51.100.1, 203.0.113.7, 10.2.2.2"))
        == "203.0.113.7"
    )
    # An untrusted peer's header is ignored.
    assert trusting.client_ip("192.0.2.9", forwarded("203.0.113.7")) == "192.0.2.9"
    plain = Gateway(Settings(), view=None, producer=None)  # type: ignore[arg-type]
    assert plain.client_ip("10.1.1.1", forwarded("203.0.113.7")) == "10.1.1.1"
    assert plain.client_ip("10.1.1.1", {}) == "10.1.1.1"


def test_a_delivery_record_maps_to_a_fire_unless_its_trigger_is_gone_or_disabled() -> None:
    import pytest
    from pydantic import ValidationError

    from processor.definitions.registry import Registry
    from processor.serde import to_json
    from processor.webhooks.mapping import map_delivery

    delivery = WebhookDelivery(
        delivery_id="d-2",
        trigger_id=TRIGGER.trigger_id,
        method="POST",
        path="/webhooks/x",
        body={"text": "hi"},
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    registry = Registry()
    assert map_delivery(registry, to_json(delivery)) is None  # no such trigger
    registry.put(TRIGGER)
    mapped = map_delivery(registry, to_json(delivery))
    assert mapped is not None and mapped[0].input["text"] == "hi"
    registry.put(TRIGGER.model_copy(update={"enabled": False}))
    assert map_delivery(registry, to_json(delivery)) is None
    with pytest.raises(ValidationError):
        map_delivery(registry, b'{"not": "a delivery"}')
