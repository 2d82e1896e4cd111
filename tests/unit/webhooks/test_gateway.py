"""The gateway's own ASGI face: the delivery it writes, its answers, what it is handed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.http.app import Front
from processor.messages import WebhookDelivery
from processor.serde import to_json
from processor.webhooks.gateway import Answer, delivery_json, parse_body

AT = datetime(2026, 12, 1, 11, 0, 0, 123456, tzinfo=UTC)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def fields(body: Any) -> dict[str, Any]:
    return {
        "delivery_id": "d-1",
        "trigger_id": "t-1",
        "method": "POST",
        "path": "/hooks/x",
        "headers": {"content-type": "application/json", "x-é": "ü"},
        "query": {"page": "2"},
        "body": body,
        "received_at": AT,
    }


@given(JSON_VALUES, st.sampled_from([b"", b" ", b"\n  "]))
def test_a_json_body_goes_in_as_received_and_reads_back_as_the_model(
    value: Any, padding: bytes
) -> None:
    raw = padding + orjson.dumps(value) + padding
    parsed = parse_body("application/json", raw)
    written = delivery_json(**fields(parsed), raw_json=raw if parsed is not None else None)
    expected = WebhookDelivery(**fields(parsed))
    assert WebhookDelivery.model_validate_json(written) == expected
    assert orjson.loads(written) == orjson.loads(to_json(expected))
    if parsed is not None:
        assert b'"body":' + raw.strip() + b"}" in written  # byte for byte


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/x-www-form-urlencoded", b"text=hi&user=U1"),
        ("text/plain", "héllo".encode()),
        ("application/json", b""),
    ],
)
def test_other_bodies_are_written_from_what_was_parsed(content_type: str, raw: bytes) -> None:
    parsed = parse_body(content_type, raw)
    written = delivery_json(**fields(parsed), raw_json=None)
    expected = WebhookDelivery(**fields(parsed))
    assert WebhookDelivery.model_validate_json(written) == expected
    assert orjson.loads(written) == orjson.loads(to_json(expected))


def test_an_answer_is_json_with_its_length_and_extra_headers() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(Answer(429, {"error": "rate limit reached"}, {"Retry-After": "3"}).send(send))
    start, body = sent
    assert start["status"] == 429
    assert dict(start["headers"]) == {
        b"content-type": b"application/json",
        b"content-length": str(len(body["body"])).encode(),
        b"retry-after": b"3",
    }
    assert orjson.loads(body["body"]) == {"error": "rate limit reached"}


class FakeGateway:
    """Only what the Front asks of a gateway: its routes, and its answer."""

    def __init__(self, endpoints: set[str]) -> None:
        self.view = SimpleNamespace(route=lambda path: {"POST": "t"} if path in endpoints else {})
        self.calls: list[str] = []

    async def answer(self, scope: Any, receive: Any) -> Answer:
        self.calls.append(scope["path"])
        return Answer(202, {"execution_id": "e"})


@pytest.mark.parametrize(
    ("path", "to_gateway"),
    [
        ("/webhooks/anything", True),  # the gateway's own 404 if no such trigger
        ("/hooks/github", True),  # a trigger's endpoint
        ("/hooks/other", False),  # no trigger's: FastAPI (whose catch-all asks the gateway)
        ("/v1/triggers", False),  # the API's, whatever an endpoint says
        ("/metrics", False),
        ("/ui/login", False),
    ],
)
def test_the_front_hands_a_webhooks_path_to_the_gateway_and_the_rest_to_the_api(
    path: str, to_gateway: bool
) -> None:
    api_calls: list[str] = []

    async def api(scope: Any, receive: Any, send: Any) -> None:
        api_calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gateway = FakeGateway({"/hooks/github", "/v1/triggers", "/metrics", "/ui/login"})
    api.state = SimpleNamespace(gateway=gateway)  # type: ignore[attr-defined]
    front = Front(api)  # type: ignore[arg-type]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    asyncio.run(front(scope, receive, send))
    assert (gateway.calls, api_calls) == (([path], []) if to_gateway else ([], [path]))
