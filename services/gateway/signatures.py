"""Webhook signatures, verified exactly as each issuer signs, and signed the same way (for the CLI's
`simulate` and the tests, which must speak the issuer's protocol byte for byte).

- Stripe (`Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`): HMAC-SHA256 with the endpoint
  secret over "{t}.{raw body}"; any v1 may match (Stripe sends one per active secret during a
  rotation); the timestamp must be within the tolerance (300 s).
- Lithic ASA (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature:
  v1,<base64> [v1,<base64>...]`): HMAC-SHA256 over "{id}.{timestamp}.{raw body}" with the secret's
  bytes (base64 after the `whsec_` prefix).
- Generic: the Stripe scheme under the header `Pursestrings-Signature`.

Every comparison is constant-time. A failure names its reason; it never says what was expected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

TOLERANCE_S = 300
STRIPE_HEADER = "Stripe-Signature"
GENERIC_HEADER = "Pursestrings-Signature"


class SignatureInvalid(ValueError):
    """The request is not provably from the issuer; `reason` is a short code for metrics and logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _hmac_hex(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def _fresh(timestamp: str, now: float, tolerance_s: int) -> int:
    try:
        seconds = int(timestamp)
    except ValueError:
        raise SignatureInvalid("malformed_header", f"timestamp {timestamp[:20]!r} is not an integer") from None
    if abs(now - seconds) > tolerance_s:
        raise SignatureInvalid("stale_timestamp", f"timestamp is {int(now - seconds)} s from now (limit {tolerance_s})")
    return seconds


def sign_stripe(body: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` value Stripe would send for `body` at `timestamp`."""
    return f"t={timestamp},v1={_hmac_hex(secret.encode(), f'{timestamp}.'.encode() + body)}"


def verify_stripe(header: str | None, body: bytes, secret: str, now: float, tolerance_s: int = TOLERANCE_S) -> None:
    """Raise SignatureInvalid unless `header` signs `body` with `secret`, recently."""
    if not header:
        raise SignatureInvalid("missing_header", "no signature header")
    timestamp, candidates = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureInvalid("malformed_header", "expected t=<unix seconds>,v1=<hex signature>")
    _fresh(timestamp, now, tolerance_s)
    expected = _hmac_hex(secret.encode(), f"{timestamp}.".encode() + body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureInvalid("mismatch", "no v1 signature matches this body and secret")


def _standard_key(secret: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return secret.encode()  # a plain secret: use its bytes as they are


def sign_lithic(body: bytes, secret: str, message_id: str, timestamp: int) -> dict[str, str]:
    """The three headers Lithic (Standard Webhooks) would send for `body`."""
    digest = hmac.new(_standard_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
    }


def verify_lithic(
    headers: Mapping[str, str], body: bytes, secret: str, now: float, tolerance_s: int = TOLERANCE_S
) -> None:
    """Raise SignatureInvalid unless the Standard Webhooks headers sign `body` with `secret`."""
    message_id, timestamp, signatures = (
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
    )
    if not message_id or not timestamp or not signatures:
        raise SignatureInvalid("missing_header", "expected webhook-id, webhook-timestamp and webhook-signature")
    _fresh(timestamp, now, tolerance_s)
    digest = hmac.new(_standard_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    candidates = [value for version, _, value in (s.partition(",") for s in signatures.split()) if version == "v1"]
    if not candidates:
        raise SignatureInvalid("malformed_header", "expected webhook-signature: v1,<base64>")
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureInvalid("mismatch", "no v1 signature matches this body and secret")
