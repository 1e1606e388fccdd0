"""Webhook signatures, verified as Stripe and Lithic (Standard Webhooks) sign them."""

from __future__ import annotations

import base64

import pytest

from services.gateway.signatures import SignatureInvalid, sign_lithic, sign_stripe, verify_lithic, verify_stripe

SECRET = "whsec_test_secret"  # noqa: S105 - a test secret
BODY = b'{"id": "evt_1", "type": "issuing_authorization.request"}'
NOW = 1_790_000_000
LITHIC_SECRET = "whsec_" + base64.b64encode(b"lithic-secret-bytes").decode()


def test_a_stripe_signature_made_with_the_secret_is_accepted() -> None:
    """t= and v1= over "{t}.{body}"; a second v1 (a rotation) may be the matching one."""
    header = sign_stripe(BODY, SECRET, NOW)
    verify_stripe(header, BODY, SECRET, NOW + 10)
    verify_stripe(header.replace("v1=", "v1=00ff,v1="), BODY, SECRET, NOW)


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (sign_stripe(BODY, "whsec_other", NOW), BODY, NOW, "mismatch"),
        (sign_stripe(BODY, SECRET, NOW), BODY + b" ", NOW, "mismatch"),
        (sign_stripe(BODY, SECRET, NOW), BODY, NOW + 301, "stale_timestamp"),
        (sign_stripe(BODY, SECRET, NOW), BODY, NOW - 301, "stale_timestamp"),
        (None, BODY, NOW, "missing_header"),
        ("", BODY, NOW, "missing_header"),
        ("v1=abc", BODY, NOW, "malformed_header"),
        (f"t={NOW}", BODY, NOW, "malformed_header"),
        ("t=yesterday,v1=abc", BODY, NOW, "malformed_header"),
    ],
)
def test_a_bad_stripe_signature_is_refused_with_its_reason(
    header: str | None, body: bytes, now: int, reason: str
) -> None:
    """Wrong secret, tampered body, stale or future timestamp, missing or malformed header."""
    with pytest.raises(SignatureInvalid) as refused:
        verify_stripe(header, body, SECRET, now)
    assert refused.value.reason == reason


def test_a_lithic_signature_is_accepted_and_a_forged_one_refused() -> None:
    """HMAC-SHA256 over "{id}.{timestamp}.{body}" with the secret's base64 bytes."""
    headers = sign_lithic(BODY, LITHIC_SECRET, "msg_1", NOW)
    verify_lithic(headers, BODY, LITHIC_SECRET, NOW)
    reasons = []
    for changed in (
        headers | {"webhook-id": "msg_2"},
        headers | {"webhook-timestamp": str(NOW - 400)},
        {k: v for k, v in headers.items() if k != "webhook-signature"},
        headers | {"webhook-signature": "v2,abc"},
    ):
        with pytest.raises(SignatureInvalid) as refused:
            verify_lithic(changed, BODY, LITHIC_SECRET, NOW)
        reasons.append(refused.value.reason)
    assert reasons == ["mismatch", "stale_timestamp", "missing_header", "malformed_header"]
