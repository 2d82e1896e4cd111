from __future__ import annotations

from datetime import UTC, datetime

from processor.definitions.loader import parse_document
from processor.messages import WebhookDelivery, execution_id_for
from processor.webhooks.gateway import parse_body
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
