"""The webhook gateway: authenticate a call, write it to `webhooks`, answer 202.

A 2xx means the delivery is in Kafka (acks=all, idempotent producer); anything the
broker did not acknowledge in time is a 503 with Retry-After, so the sender retries.
The execution id in the answer is derived from the trigger and the delivery id, so a
retried delivery gets the same id and starts no second run (the dispatcher drops it).

    route ─► method ─► IP allow-list ─► rate limit ─► size ─► signature ─► body ─► Kafka
     404      405          403             429         413      401      400/415    503

The gateway speaks ASGI itself (`answer` takes the connection's scope and receive
channel): webhook calls are most of what the HTTP service takes, and going through
the framework's routing, middleware and request objects cost more than all of the
above together (docs/benchmarks.md, "Webhook gateway").
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import orjson
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from processor import topics
from processor.config import Settings
from processor.definitions.model import TriggerDocument, WebhookAuth
from processor.definitions.view import DefinitionsView
from processor.errors import KafkaUnavailable, RecordTooLarge
from processor.kafka.async_producer import AsyncProducer
from processor.language.signatures import (
    PRESETS,
    SLACK_HEADER,
    AuthType,
    Rejected,
    Scheme,
    Verdict,
    verify_hmac,
    verify_seed_hmac,
    verify_token,
    with_overrides,
)
from processor.logs import about
from processor.messages import CauseKind, execution_id_for
from processor.metrics import WEBHOOK_AUTH_FAILURES, WEBHOOK_LATENCY, WEBHOOK_REQUESTS
from processor.metrics import trigger_label as label_of
from processor.serde import MAX_NESTING, may_nest_too_deep, nesting

log = logging.getLogger(__name__)
SECRET_NAME = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
NEVER_FORWARDED = {"authorization", "proxy-authorization", "cookie"}
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Refused(Exception):
    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        self.status, self.reason, self.headers = status, reason, dict(headers or {})
        super().__init__(reason)


_SCHEMES: dict[int, tuple[WebhookAuth, Scheme]] = {}
"""Each trigger's scheme, spelled out once per definition (by the definition's identity:
the entry holds the definition, so its id cannot be reused while the entry is here)."""


def scheme_for(auth: WebhookAuth) -> Scheme:
    known = _SCHEMES.get(id(auth))
    if known is not None and known[0] is auth:
        return known[1]
    if len(_SCHEMES) > 4096:  # definitions replaced over a long life
        _SCHEMES.clear()
    scheme = _spelled_out(auth)
    _SCHEMES[id(auth)] = (auth, scheme)
    return scheme


def _spelled_out(auth: WebhookAuth) -> Scheme:
    base = PRESETS.get(auth.type) or Scheme(header=auth.header or "")
    return with_overrides(
        base,
        header=auth.header,
        algorithm=auth.algorithm,
        encoding=auth.encoding,
        prefix=auth.prefix,
        message=auth.message,
        timestamp_header=auth.timestamp_header,
        id_header=auth.id_header,
        tolerance_seconds=auth.tolerance_seconds,
        secret_encoding=auth.secret_encoding,
    )


def resolve_secrets(auth: WebhookAuth) -> list[str]:
    """The secrets' values, from the environment of this process only."""
    values = []
    for reference in auth.secret_references:
        match = SECRET_NAME.match(reference)
        value = os.environ.get(match.group(1)) if match else None
        if not value:
            raise Refused(
                503, f"the secret {reference} is not set on the gateway", {"Retry-After": "30"}
            )
        values.append(value)
    return values


def authenticate(auth: WebhookAuth, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
    secrets = resolve_secrets(auth)
    if auth.type in (AuthType.BEARER, AuthType.BASIC):
        return verify_token(auth.type, secrets, headers, auth.header, auth.username)
    scheme = scheme_for(auth)
    if auth.type is AuthType.HMAC:
        return verify_seed_hmac(scheme, secrets, headers, body, now)
    return verify_hmac(auth.type, scheme, secrets, headers, body, now)


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def parse_body(content_type: str, body: bytes) -> Any:
    """JSON, form-encoded (Slack) or text; anything else is a 415."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return None
    try:
        if is_json(media):
            parsed = orjson.loads(body)
            if may_nest_too_deep(body) and nesting(parsed) > MAX_NESTING:
                raise Refused(
                    400,
                    f"the body nests deeper than {MAX_NESTING} levels, more than a run's "
                    "input can carry; flatten it",
                )
            return parsed
        if media == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode(), keep_blank_values=True)
            return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
        if media.startswith("text/") or media == "":
            return body.decode()
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    raise Refused(415, f"{media} is not accepted; send JSON, form-encoded or text")


def _is_slack_handshake(auth: WebhookAuth, body: Any) -> bool:
    """Slack's `url_verification` request, on a trigger that Slack signs."""
    slack_signed = auth.type is AuthType.SLACK or (
        auth.type is AuthType.HMAC and scheme_for(auth).header == SLACK_HEADER
    )
    return (
        slack_signed
        and isinstance(body, dict)
        and body.get("type") == "url_verification"
        and isinstance(body.get("challenge"), str)
    )


@dataclass(slots=True)
class Answer:
    """What the gateway says to a call: a status, a JSON payload and extra headers."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The response's headers and body, as ASGI sends them."""
        content = orjson.dumps(self.payload)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        return headers, content

    async def send(self, send: Send) -> None:
        headers, content = self.encoded()
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def delivery_json(
    *,
    delivery_id: str,
    trigger_id: str,
    method: str,
    path: str,
    headers: dict[str, str],
    query: dict[str, str],
    body: Any,
    raw_json: bytes | None,
    received_at: datetime,
) -> bytes:
    """A `WebhookDelivery` as it goes on `webhooks` (the model's own JSON, without nulls).

    A JSON body that already parsed goes in as it came, byte for byte (`raw_json`): writing
    back what was just read would cost as much again, and could only change it."""
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "trigger_id": trigger_id,
        "method": method,
        "path": path,
        "headers": headers,
        "query": query,
        "received_at": received_at,
    }
    if raw_json is None:
        if body is not None:
            fields["body"] = body
        return orjson.dumps(fields, option=orjson.OPT_UTC_Z)
    head = orjson.dumps(fields, option=orjson.OPT_UTC_Z)
    return b"".join((head[:-1], b',"body":', raw_json.strip(), b"}"))


class Gateway:
    def __init__(self, settings: Settings, view: DefinitionsView, producer: AsyncProducer) -> None:
        self.settings = settings
        self.view = view
        self.producer = producer
        self.topic = topics.topic_name(topics.WEBHOOKS, settings)
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def client_ip(self, peer: str, headers: Mapping[str, str]) -> str:
        """The caller: the peer, or, behind trusted proxies, the nearest untrusted hop."""
        hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
        chain = [*hops, peer]
        for hop in reversed(chain):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                return hop
            if not any(address in network for network in self.trusted):
                return hop
        return chain[0]

    def _route(self, method: str, path: str) -> TriggerDocument:
        if not self.view.ready.is_set():
            raise Refused(503, "still loading trigger definitions", {"Retry-After": "1"})
        with_methods = self.view.route(path)
        if not with_methods:
            raise Refused(404, "no enabled webhook trigger here")
        trigger_id = with_methods.get(method)
        if trigger_id is None:
            raise Refused(
                405,
                f"use {', '.join(sorted(with_methods))}",
                {"Allow": ", ".join(sorted(with_methods))},
            )
        trigger = self.view.get(trigger_id)
        if trigger is None or trigger.webhook is None:
            raise Refused(404, "no enabled webhook trigger here")
        return trigger

    def _admit(self, scope: Scope, headers: Mapping[str, str], trigger: TriggerDocument) -> None:
        webhook = trigger.webhook
        assert webhook is not None
        if webhook.ip_whitelist:
            client = scope.get("client")
            ip = self.client_ip(client[0] if client else "", headers)
            try:
                address = ipaddress.ip_address(ip)
                allowed = any(
                    address in ipaddress.ip_network(c, strict=False) for c in webhook.ip_whitelist
                )
            except ValueError:
                allowed = False
            if not allowed:
                raise Refused(403, f"{ip} is not allowed to call this webhook")
        if webhook.rate_limit is not None:
            limit = RateLimitItemPerSecond(
                webhook.rate_limit.requests, int(webhook.rate_limit.period.seconds)
            )
            if not self.limiter.hit(limit, trigger.trigger_id):
                reset_at = self.limiter.get_window_stats(limit, trigger.trigger_id).reset_time
                retry = max(1, int(reset_at - time.time()) + 1)
                raise Refused(429, "rate limit reached", {"Retry-After": str(retry)})
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.settings.webhook_max_body_bytes:
            raise Refused(
                413, f"bodies are limited to {self.settings.webhook_max_body_bytes} bytes"
            )

    async def _body(self, receive: Receive) -> bytes:
        limit = self.settings.webhook_max_body_bytes
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "the caller hung up before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"bodies are limited to {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway as an ASGI application of its own."""
        answer = await self.answer(scope, receive)
        await answer.send(send)

    async def answer(self, scope: Scope, receive: Receive) -> Answer:
        started = time.perf_counter()
        trigger_label = "unknown"
        trigger_id: str | None = None
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            trigger = self._route(method, path)
            trigger_id = trigger.trigger_id
            trigger_label = label_of(trigger_id)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            self._admit(scope, headers, trigger)
            body = await self._body(receive)
            assert trigger.webhook is not None
            auth = trigger.webhook.authentication
            delivery_id = headers.get("idempotency-key")
            if auth is not None:
                verdict = authenticate(auth, headers, body, time.time())
                if isinstance(verdict, Rejected):
                    WEBHOOK_AUTH_FAILURES.labels(verdict.reason).inc()
                    raise Refused(401, verdict.reason, {"WWW-Authenticate": auth.type.value})
                delivery_id = verdict.delivery_id or delivery_id
            content_type = headers.get("content-type", "")
            parsed = parse_body(content_type, body)
            if auth is not None and _is_slack_handshake(auth, parsed):
                # Slack checks an Events API URL with a signed challenge before it sends
                # anything; it wants the challenge back, and it is not an event.
                WEBHOOK_REQUESTS.labels(trigger_label, "200").inc()
                return Answer(200, {"challenge": parsed["challenge"]})
            if auth is not None and auth.type is AuthType.STRIPE and isinstance(parsed, dict):
                delivery_id = str(parsed.get("id") or delivery_id)
            delivery_id = delivery_id or f"random:{uuid.uuid4()}"
            forwarded = {k: v for k, v in headers.items() if k not in NEVER_FORWARDED}
            if auth is not None and auth.type in (AuthType.BEARER, AuthType.BASIC) and auth.header:
                forwarded.pop(auth.header, None)
            value = delivery_json(
                delivery_id=delivery_id,
                trigger_id=trigger.trigger_id,
                method=method,
                path=path,
                headers=forwarded,
                query=dict(parse_qsl(scope["query_string"].decode("latin-1"), True)),
                body=parsed,
                raw_json=body if parsed is not None and is_json(content_type) else None,
                received_at=datetime.now(UTC),
            )
            try:
                await self.producer.send(self.topic, trigger.trigger_id.encode(), value)
            except RecordTooLarge as exc:
                raise Refused(413, f"the delivery is too large to keep: {exc}") from None
            except KafkaUnavailable as exc:
                raise Refused(503, str(exc), {"Retry-After": "5"}) from None
            execution_id = execution_id_for(trigger.trigger_id, CauseKind.WEBHOOK, delivery_id)
            WEBHOOK_REQUESTS.labels(trigger_label, "202").inc()
            return Answer(202, {"execution_id": execution_id})
        except Refused as refused:
            WEBHOOK_REQUESTS.labels(trigger_label, str(refused.status)).inc()
            if refused.status >= 500:
                log.warning(
                    "webhook %s %s: %s",
                    method,
                    path,
                    refused.reason,
                    extra=about(trigger_id),
                )
            return Answer(refused.status, {"error": refused.reason}, refused.headers)
        finally:
            WEBHOOK_LATENCY.observe(time.perf_counter() - started)
