from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.language.signatures import (
    PRESETS,
    AuthType,
    Rejected,
    Scheme,
    Verified,
    signed_headers,
    verify_hmac,
    verify_seed_hmac,
    verify_token,
)

# Published examples from each provider's documentation.
GITHUB_SECRET, GITHUB_BODY = "It's a Secret to Everybody", b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
SLACK_SECRET, SLACK_TS = "8f742231b10e8888abcd99yyyzzz85a5", "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SW_SECRET, SW_ID, SW_TS = (
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "1614265330",
)
SW_BODY, SW_SIGNATURE = b'{"test": 2432232314}', "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_github_published_example() -> None:
    headers = {"x-hub-signature-256": GITHUB_SIGNATURE, "x-github-delivery": "d-1"}
    verdict = verify_hmac(
        AuthType.GITHUB, PRESETS[AuthType.GITHUB], [GITHUB_SECRET], headers, GITHUB_BODY, 0
    )
    assert verdict == Verified("d-1")


def test_slack_published_example_within_tolerance_only() -> None:
    headers = {"x-slack-signature": SLACK_SIGNATURE, "x-slack-request-timestamp": SLACK_TS}
    scheme = PRESETS[AuthType.SLACK]
    assert isinstance(
        verify_hmac(
            AuthType.SLACK, scheme, [SLACK_SECRET], headers, SLACK_BODY, int(SLACK_TS) + 60
        ),
        Verified,
    )
    late = verify_hmac(
        AuthType.SLACK, scheme, [SLACK_SECRET], headers, SLACK_BODY, int(SLACK_TS) + 301
    )
    assert late == Rejected("timestamp outside the tolerance (replayed or clock skew)")


def test_standard_webhooks_published_example() -> None:
    headers = {
        "webhook-id": SW_ID,
        "webhook-timestamp": SW_TS,
        "webhook-signature": f"v1,bogus= {SW_SIGNATURE}",
    }
    verdict = verify_hmac(
        AuthType.STANDARD_WEBHOOKS,
        PRESETS[AuthType.STANDARD_WEBHOOKS],
        [SW_SECRET],
        headers,
        SW_BODY,
        int(SW_TS),
    )
    assert verdict == Verified(SW_ID)


def test_stripe_scheme_with_several_v1_signatures() -> None:
    secret, ts, body = "whsec_test", "1700000000", b'{"id": "evt_1"}'
    good = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"stripe-signature": f"t={ts},v1={'0' * 64},v1={good},v0=ignored"}
    assert isinstance(
        verify_hmac(
            AuthType.STRIPE, PRESETS[AuthType.STRIPE], [secret], headers, body, int(ts) + 10
        ),
        Verified,
    )
    assert verify_hmac(
        AuthType.STRIPE, PRESETS[AuthType.STRIPE], [secret], {"stripe-signature": "v1=abc"}, body, 0
    ) == Rejected("missing or malformed timestamp")


def test_seed_hmac_is_hex_sha256_of_the_raw_body_and_rotation_tries_every_secret() -> None:
    scheme = Scheme(header="x-signature")
    body = b'{"a": 1}'
    signature = hmac.new(b"new", body, hashlib.sha256).hexdigest()
    assert isinstance(
        verify_seed_hmac(scheme, ["old", "new"], {"x-signature": signature}, body, 0), Verified
    )
    assert verify_seed_hmac(scheme, ["old"], {"x-signature": signature}, body, 0) == Rejected(
        "signature does not match"
    )


def test_seed_hmac_on_slacks_header_accepts_slacks_real_scheme_too() -> None:
    scheme = Scheme(header="x-slack-signature")
    headers = {"x-slack-signature": SLACK_SIGNATURE, "x-slack-request-timestamp": SLACK_TS}
    assert isinstance(
        verify_seed_hmac(scheme, [SLACK_SECRET], headers, SLACK_BODY, int(SLACK_TS)), Verified
    )
    raw = hmac.new(SLACK_SECRET.encode(), SLACK_BODY, hashlib.sha256).hexdigest()
    assert isinstance(
        verify_seed_hmac(scheme, [SLACK_SECRET], {"x-slack-signature": raw}, SLACK_BODY, 0),
        Verified,
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing x-hub-signature-256 header"),
        ({"x-hub-signature-256": ""}, "missing x-hub-signature-256 header"),
        ({"x-hub-signature-256": "md5=abc"}, "malformed x-hub-signature-256 header"),
        ({"x-hub-signature-256": "sha256=zz"}, "signature does not match"),
    ],
)
def test_missing_or_malformed_headers_are_rejected_not_raised(
    headers: dict[str, str], reason: str
) -> None:
    assert verify_hmac(
        AuthType.GITHUB, PRESETS[AuthType.GITHUB], ["s"], headers, b"x", 0
    ) == Rejected(reason)


def test_configurable_hmac_base64_sha512_with_prefix_and_base64_secret() -> None:
    key = b"\x00\x01secret"
    scheme = Scheme(
        header="x-sig",
        algorithm="sha512",
        encoding="base64",
        prefix="sig=",
        secret_encoding="base64",
    )
    signature = base64.b64encode(hmac.new(key, b"body", hashlib.sha512).digest()).decode()
    verdict = verify_hmac(
        AuthType.HMAC,
        scheme,
        [base64.b64encode(key).decode()],
        {"x-sig": f"sig={signature}"},
        b"body",
        0,
    )
    assert isinstance(verdict, Verified)


def test_bearer_and_basic() -> None:
    assert verify_token(
        AuthType.BEARER, ["t1", "t2"], {"authorization": "Bearer t2"}, None, None
    ) == Verified(None)
    assert verify_token(
        AuthType.BEARER, ["t1"], {"authorization": "Bearer nope"}, None, None
    ) == Rejected("credentials do not match")
    assert verify_token(AuthType.BEARER, ["t1"], {"x-token": "t1"}, "x-token", None) == Verified(
        None
    )
    assert verify_token(AuthType.BEARER, ["t1"], {}, None, None) == Rejected("missing credentials")
    basic = "Basic " + base64.b64encode(b"bot:pw").decode()
    assert verify_token(AuthType.BASIC, ["pw"], {"authorization": basic}, None, "bot") == Verified(
        None
    )
    assert verify_token(
        AuthType.BASIC, ["pw"], {"authorization": "Basic !!!"}, None, "bot"
    ) == Rejected("malformed basic credentials")


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "x-hub-signature-256",
                "x-slack-signature",
                "x-slack-request-timestamp",
                "stripe-signature",
                "webhook-signature",
                "webhook-id",
                "webhook-timestamp",
                "authorization",
            ]
        ),
        st.text(max_size=80),
        max_size=6,
    ),
    st.binary(max_size=64),
    st.sampled_from(list(AuthType)),
)
def test_verification_never_raises(headers: dict[str, str], body: bytes, kind: AuthType) -> None:
    if kind in (AuthType.BEARER, AuthType.BASIC):
        verdict = verify_token(kind, ["s"], headers, None, "u")
    elif kind is AuthType.HMAC:
        verdict = verify_seed_hmac(Scheme(header="x-slack-signature"), ["s"], headers, body, 0)
    else:
        verdict = verify_hmac(kind, PRESETS[kind], ["whsec_c2VjcmV0"], headers, body, 0)
    assert isinstance(verdict, Verified | Rejected)


@pytest.mark.parametrize(
    ("kind", "secret"),
    [
        (AuthType.GITHUB, GITHUB_SECRET),
        (AuthType.SLACK, SLACK_SECRET),
        (AuthType.STRIPE, "whsec_stripe_test"),
        (AuthType.STANDARD_WEBHOOKS, SW_SECRET),
    ],
)
def test_signed_headers_are_what_the_verifier_accepts(kind: AuthType, secret: str) -> None:
    body, now = b'{"a": 1}', 1_700_000_000.0
    headers = signed_headers(kind, PRESETS[kind], secret, body, now, "delivery-1")
    assert isinstance(verify_hmac(kind, PRESETS[kind], [secret], headers, body, now), Verified)
    other = verify_hmac(kind, PRESETS[kind], [secret], headers, body + b" ", now)
    assert isinstance(other, Rejected)


def test_signed_headers_for_the_seed_hmac_are_a_hex_body_digest() -> None:
    scheme = Scheme(header="x-slack-signature")
    headers = signed_headers(AuthType.HMAC, scheme, "s", b"body", 0.0, "d")
    assert headers == {"x-slack-signature": hmac.new(b"s", b"body", hashlib.sha256).hexdigest()}
    assert isinstance(verify_seed_hmac(scheme, ["s"], headers, b"body", 0.0), Verified)


def test_signed_headers_refuse_a_secret_in_the_wrong_encoding() -> None:
    with pytest.raises(ValueError, match="whsec"):
        signed_headers(
            AuthType.STANDARD_WEBHOOKS, PRESETS[AuthType.STANDARD_WEBHOOKS], "whsec_!!", b"", 0, "d"
        )
