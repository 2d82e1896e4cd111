"""The webhook gateway: authenticate a call, write it to `webhooks`, answer 202.

A 2xx means the delivery is in Kafka (acks=all, idempotent producer); anything the
broker did not acknowledge in time is a 503 with Retry-After, so the sender retries.
The execution id in the answer is derived from the trigger and the delivery id, so a
retried delivery gets the same id and starts no second run (the dispatcher drops it).

    route ─► method ─► IP allow-list ─► rate limit ─► size ─► signature ─► body ─► Kafka
     404      405          403             429         413      401      400/415    503
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from processor import topics
from processor.config import Settings
from processor.definitions.model import TriggerDocument, WebhookAuth
from processor.definitions.view import DefinitionsView
from processor.durations import parse_duration
from processor.errors import KafkaUnavailable
from processor.kafka.async_producer import AsyncProducer
from processor.messages import CauseKind, WebhookDelivery, execution_id_for
from processor.metrics import WEBHOOK_AUTH_FAILURES, WEBHOOK_LATENCY, WEBHOOK_REQUESTS
from processor.serde import to_json
from processor.webhooks.signatures import (
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

log = logging.getLogger(__name__)
SECRET_NAME = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
NEVER_FORWARDED = {"authorization", "proxy-authorization", "cookie"}


class Refused(Exception):
    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        self.status, self.reason, self.headers = status, reason, dict(headers or {})
        super().__init__(reason)


def scheme_for(auth: WebhookAuth) -> Scheme:
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


def parse_body(content_type: str, body: bytes) -> Any:
    """JSON, form-encoded (Slack) or text; anything else is a 415."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return None
    try:
        if media == "application/json" or media.endswith("+json"):
            return orjson.loads(body)
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


class Gateway:
    def __init__(self, settings: Settings, view: DefinitionsView, producer: AsyncProducer) -> None:
        self.settings = settings
        self.view = view
        self.producer = producer
        self.topic = topics.topic_name(topics.WEBHOOKS, settings)
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def client_ip(self, request: Request) -> str:
        """The caller: the peer, or, behind trusted proxies, the nearest untrusted hop."""
        peer = request.client.host if request.client else ""
        hops = [
            h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()
        ]
        chain = [*hops, peer]
        for hop in reversed(chain):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                return hop
            if not any(address in network for network in self.trusted):
                return hop
        return chain[0]

    def _route(self, request: Request) -> TriggerDocument:
        if not self.view.ready.is_set():
            raise Refused(503, "still loading trigger definitions", {"Retry-After": "1"})
        with_methods = self.view.route(request.url.path)
        if not with_methods:
            raise Refused(404, "no enabled webhook trigger here")
        trigger_id = with_methods.get(request.method)
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

    def _admit(self, request: Request, trigger: TriggerDocument) -> None:
        webhook = trigger.webhook
        assert webhook is not None
        if webhook.ip_whitelist:
            ip = self.client_ip(request)
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
                webhook.rate_limit.requests, int(parse_duration(webhook.rate_limit.period))
            )
            if not self.limiter.hit(limit, trigger.trigger_id):
                reset_at = self.limiter.get_window_stats(limit, trigger.trigger_id).reset_time
                retry = max(1, int(reset_at - time.time()) + 1)
                raise Refused(429, "rate limit reached", {"Retry-After": str(retry)})
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.settings.webhook_max_body_bytes:
            raise Refused(
                413, f"bodies are limited to {self.settings.webhook_max_body_bytes} bytes"
            )

    async def _body(self, request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.settings.webhook_max_body_bytes:
                raise Refused(
                    413, f"bodies are limited to {self.settings.webhook_max_body_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        trigger_label = "unknown"
        try:
            trigger = self._route(request)
            trigger_label = trigger.trigger_id
            self._admit(request, trigger)
            body = await self._body(request)
            headers = {k.lower(): v for k, v in request.headers.items()}
            assert trigger.webhook is not None
            auth = trigger.webhook.authentication
            delivery_id = headers.get("idempotency-key")
            if auth is not None:
                verdict = authenticate(auth, headers, body, time.time())
                if isinstance(verdict, Rejected):
                    WEBHOOK_AUTH_FAILURES.labels(verdict.reason).inc()
                    raise Refused(401, verdict.reason, {"WWW-Authenticate": auth.type.value})
                delivery_id = verdict.delivery_id or delivery_id
            parsed = parse_body(headers.get("content-type", ""), body)
            if auth is not None and _is_slack_handshake(auth, parsed):
                # Slack checks an Events API URL with a signed challenge before it sends
                # anything; it wants the challenge back, and it is not an event.
                WEBHOOK_REQUESTS.labels(trigger_label, "200").inc()
                return JSONResponse({"challenge": parsed["challenge"]})
            if auth is not None and auth.type is AuthType.STRIPE and isinstance(parsed, dict):
                delivery_id = str(parsed.get("id") or delivery_id)
            delivery_id = delivery_id or f"random:{uuid.uuid4()}"
            forwarded = {k: v for k, v in headers.items() if k not in NEVER_FORWARDED}
            if auth is not None and auth.type in (AuthType.BEARER, AuthType.BASIC) and auth.header:
                forwarded.pop(auth.header, None)
            delivery = WebhookDelivery(
                delivery_id=delivery_id,
                trigger_id=trigger.trigger_id,
                method=request.method,
                path=request.url.path,
                headers=forwarded,
                query={k: v for k, v in request.query_params.items()},
                body=parsed,
                received_at=datetime.now(UTC),
            )
            try:
                await self.producer.send(self.topic, trigger.trigger_id.encode(), to_json(delivery))
            except KafkaUnavailable as exc:
                raise Refused(503, str(exc), {"Retry-After": "5"}) from None
            execution_id = execution_id_for(trigger.trigger_id, CauseKind.WEBHOOK, delivery_id)
            WEBHOOK_REQUESTS.labels(trigger_label, "202").inc()
            return JSONResponse({"execution_id": execution_id}, status_code=202)
        except Refused as refused:
            WEBHOOK_REQUESTS.labels(trigger_label, str(refused.status)).inc()
            if refused.status >= 500:
                log.warning("webhook %s %s: %s", request.method, request.url.path, refused.reason)
            return JSONResponse(
                {"error": refused.reason}, status_code=refused.status, headers=refused.headers
            )
        finally:
            WEBHOOK_LATENCY.observe(time.perf_counter() - started)
