"""Verifying webhook calls: HMAC schemes (with provider presets), bearer and basic.

Pure functions over the request's raw body and headers. Every comparison is constant
time (`hmac.compare_digest`), every secret list is tried (rotation), and a missing or
malformed header is a `Rejected` with a reason, never an exception.

    scheme            signed message                 header (format)
    hmac (seed)       {body}                         <header>: hex(HMAC-SHA256)
    github            {body}                         X-Hub-Signature-256: sha256=<hex>
    slack             v0:{timestamp}:{body}          X-Slack-Signature: v0=<hex>
    stripe            {timestamp}.{body}             Stripe-Signature: t=<ts>,v1=<hex>[,v1=...]
    standard-webhooks {id}.{timestamp}.{body}        webhook-signature: v1,<base64> [v1,...]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "sha512": hashlib.sha512}
SLACK_HEADER = "x-slack-signature"


class AuthType(StrEnum):
    """How a webhook proves it comes from its sender."""

    HMAC = "hmac"
    """HMAC of a signed message (default: the raw body) in a header; fully configurable."""
    BEARER = "bearer"
    """`Authorization: Bearer <secret>` (or the token alone in `header`)."""
    BASIC = "basic"
    """HTTP basic authentication; `secret` is the password, `username` the user."""
    GITHUB = "github"
    """GitHub: X-Hub-Signature-256, delivery id X-GitHub-Delivery."""
    STRIPE = "stripe"
    """Stripe: Stripe-Signature with timestamp; 5 minutes tolerance."""
    SLACK = "slack"
    """Slack: v0 signature over timestamp and body; 5 minutes tolerance."""
    STANDARD_WEBHOOKS = "standard-webhooks"
    """Standard Webhooks (Svix and others): webhook-id/-timestamp/-signature."""


@dataclass(frozen=True)
class Scheme:
    """A fully spelled-out HMAC scheme (what the presets expand to)."""

    header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    message: str = "{body}"
    timestamp_header: str | None = None
    id_header: str | None = None
    tolerance_seconds: int = 300
    secret_encoding: str = "utf8"


PRESETS: dict[AuthType, Scheme] = {
    AuthType.GITHUB: Scheme(
        header="x-hub-signature-256", prefix="sha256=", id_header="x-github-delivery"
    ),
    AuthType.SLACK: Scheme(
        header=SLACK_HEADER,
        prefix="v0=",
        message="v0:{timestamp}:{body}",
        timestamp_header="x-slack-request-timestamp",
    ),
    AuthType.STRIPE: Scheme(header="stripe-signature", message="{timestamp}.{body}"),
    AuthType.STANDARD_WEBHOOKS: Scheme(
        header="webhook-signature",
        encoding="base64",
        message="{id}.{timestamp}.{body}",
        timestamp_header="webhook-timestamp",
        id_header="webhook-id",
        secret_encoding="whsec",
    ),
}


@dataclass(frozen=True)
class Verified:
    """The call is authentic. `delivery_id` identifies it for replay protection."""

    delivery_id: str | None


@dataclass(frozen=True)
class Rejected:
    """Not authentic; `reason` is short and safe to show (and to count in metrics)."""

    reason: str


Verdict = Verified | Rejected


def secret_bytes(secret: str, encoding: str) -> bytes | None:
    """The key bytes of a secret written in `encoding`; None when it does not decode."""
    try:
        if encoding == "whsec":
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        if encoding == "base64":
            return base64.b64decode(secret, validate=True)
        if encoding == "hex":
            return bytes.fromhex(secret)
    except (binascii.Error, ValueError):
        return None
    return secret.encode()


def sign(
    scheme: Scheme, key: bytes, body: bytes, timestamp: str = "", delivery_id: str = ""
) -> str:
    """The signature a sender puts in the header (without the prefix)."""
    message = scheme.message.replace("{timestamp}", timestamp).replace("{id}", delivery_id).encode()
    head, _, tail = message.partition(b"{body}")
    digest = hmac.new(
        key, head + body + tail if b"{body}" in message else message, ALGORITHMS[scheme.algorithm]
    ).digest()
    return base64.b64encode(digest).decode() if scheme.encoding == "base64" else digest.hex()


def signed_headers(
    kind: AuthType, scheme: Scheme, secret: str, body: bytes, now: float, delivery_id: str
) -> dict[str, str]:
    """The headers a sender of this scheme puts on a call with this body (for testing a
    trigger by hand: `triggers sign`). `delivery_id` is used where the scheme signs one."""
    key = secret_bytes(secret, scheme.secret_encoding)
    if key is None:
        raise ValueError(f"the secret is not valid {scheme.secret_encoding}")
    timestamp = str(int(now))
    signature = sign(scheme, key, body, timestamp, delivery_id)
    headers: dict[str, str] = {}
    if kind is AuthType.STRIPE:
        headers[scheme.header] = f"t={timestamp},v1={signature}"
    elif kind is AuthType.STANDARD_WEBHOOKS:
        headers[scheme.header] = f"v1,{signature}"
    else:
        headers[scheme.header] = scheme.prefix + signature
    if scheme.timestamp_header and "{timestamp}" in scheme.message:
        headers[scheme.timestamp_header] = timestamp
    if scheme.id_header:
        headers[scheme.id_header] = delivery_id
    return headers


def _signatures_in(scheme: Scheme, kind: AuthType, value: str) -> tuple[list[str], str | None]:
    """Candidate signatures in the header, and a timestamp carried in it (Stripe)."""
    if kind is AuthType.STRIPE:
        fields = [part.split("=", 1) for part in value.split(",") if "=" in part]
        timestamp = next((v for k, v in fields if k.strip() == "t"), None)
        return [v for k, v in fields if k.strip() == "v1"], timestamp
    if kind is AuthType.STANDARD_WEBHOOKS:
        return [part[3:] for part in value.split() if part.startswith("v1,")], None
    if scheme.prefix and not value.startswith(scheme.prefix):
        return [], None
    return [value[len(scheme.prefix) :]], None


def verify_hmac(
    kind: AuthType,
    scheme: Scheme,
    secrets: list[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> Verdict:
    """Check an HMAC-signed call against every secret (for rotation)."""
    value = headers.get(scheme.header)
    if not value:
        return Rejected(f"missing {scheme.header} header")
    signatures, timestamp = _signatures_in(scheme, kind, value)
    if not signatures:
        return Rejected(f"malformed {scheme.header} header")
    if scheme.timestamp_header:
        timestamp = headers.get(scheme.timestamp_header)
    needs_timestamp = "{timestamp}" in scheme.message
    if needs_timestamp:
        if timestamp is None or not timestamp.strip().isdigit():
            return Rejected("missing or malformed timestamp")
        if abs(now - int(timestamp)) > scheme.tolerance_seconds:
            return Rejected("timestamp outside the tolerance (replayed or clock skew)")
    delivery_id = headers.get(scheme.id_header) if scheme.id_header else None
    if "{id}" in scheme.message and not delivery_id:
        return Rejected(f"missing {scheme.id_header} header")
    for secret in secrets:
        key = secret_bytes(secret, scheme.secret_encoding)
        if key is None:
            continue
        expected = sign(scheme, key, body, timestamp or "", delivery_id or "")
        if any(hmac.compare_digest(expected.encode(), s.strip().encode()) for s in signatures):
            replay_key = delivery_id or f"{scheme.header}:{timestamp or ''}:{expected}"
            return Verified(replay_key)
    return Rejected("signature does not match")


def verify_seed_hmac(
    scheme: Scheme, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float
) -> Verdict:
    """The seed's `hmac`: hex SHA-256 of the raw body in `header`. When that header is
    Slack's, Slack's real scheme (v0, timestamped) is accepted too, so the seed's Slack
    trigger works with calls that Slack actually signs."""
    verdict = verify_hmac(AuthType.HMAC, scheme, secrets, headers, body, now)
    if isinstance(verdict, Rejected) and scheme.header == SLACK_HEADER:
        slack = verify_hmac(AuthType.SLACK, PRESETS[AuthType.SLACK], secrets, headers, body, now)
        if isinstance(slack, Verified):
            return slack
    return verdict


def verify_token(
    kind: AuthType,
    secrets: list[str],
    headers: Mapping[str, str],
    header: str | None,
    username: str | None,
) -> Verdict:
    """Bearer or basic credentials, compared in constant time against each secret."""
    value = headers.get((header or "authorization").lower())
    if not value:
        return Rejected("missing credentials")
    if kind is AuthType.BEARER:
        scheme, _, token = value.partition(" ")
        presented = token if scheme.lower() == "bearer" else (value if header else "")
        if not presented:
            return Rejected("malformed bearer credentials")
        candidates = [s.encode() for s in secrets]
    else:
        scheme, _, encoded = value.partition(" ")
        try:
            presented = (
                base64.b64decode(encoded, validate=True).decode()
                if scheme.lower() == "basic"
                else ""
            )
        except (binascii.Error, UnicodeDecodeError):
            presented = ""
        if not presented:
            return Rejected("malformed basic credentials")
        candidates = [f"{username or ''}:{s}".encode() for s in secrets]
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, presented.encode())
    return Verified(None) if matched else Rejected("credentials do not match")


def with_overrides(base: Scheme, **overrides: object) -> Scheme:
    """A preset or default scheme with the trigger's own settings on top."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
