"""Issuer traffic as the issuers send it: the bodies and signature headers of Stripe Issuing, Lithic
ASA and the generic shape. Used by `pursestrings simulate`, the demo, the tests and the benchmark,
so all of them go through the real webhook path exactly as an issuer would.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from schemas.countries import ALPHA_2_OF_ALPHA_3
from services.gateway.signatures import GENERIC_HEADER, STRIPE_HEADER, sign_lithic, sign_stripe
from services.platform.settings import Settings


@dataclass(frozen=True)
class Signed:
    """A webhook ready to POST: its path, raw body and headers."""

    path: str
    body: bytes
    headers: dict[str, str]
    authorization_id: str = ""


@dataclass(frozen=True)
class MerchantData:
    """A merchant as the simulator describes it to every issuer."""

    name: str = "OpenAI API"
    mcc: str = "5734"
    network_id: str = "openai-1"
    country: str = "US"
    city: str = "San Francisco"


MERCHANT = MerchantData()
_ALPHA_3 = {alpha_2: alpha_3 for alpha_3, alpha_2 in ALPHA_2_OF_ALPHA_3.items()}


def _stripe_merchant(merchant: MerchantData) -> dict[str, Any]:
    return {
        "category": "computer_software_stores",
        "category_code": merchant.mcc,
        "name": merchant.name,
        "network_id": merchant.network_id,
        "country": merchant.country,
        "city": merchant.city,
    }


def _stripe_event(event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": data,
    }


def stripe_authorization_request(
    authorization_id: str, card_token: str, amount_minor: int, currency: str = "usd", merchant: MerchantData = MERCHANT
) -> dict[str, Any]:
    """An `issuing_authorization.request` event, as Stripe sends it."""
    return _stripe_event(
        "issuing_authorization.request",
        {
            "id": authorization_id,
            "object": "issuing.authorization",
            "amount": 0,
            "currency": currency,
            "approved": False,
            "status": "pending",
            "card": {"id": card_token, "object": "issuing.card", "last4": "4242"},
            "pending_request": {
                "amount": amount_minor,
                "currency": currency,
                "merchant_amount": amount_minor,
                "merchant_currency": currency,
                "is_amount_controllable": False,
            },
            "merchant_data": _stripe_merchant(merchant),
        },
    )


def stripe_incremental_request(
    authorization_id: str, card_token: str, increment_minor: int, approved_minor: int, currency: str = "usd"
) -> dict[str, Any]:
    """An `issuing_authorization.request` for an increment of an approved authorization, as Stripe
    sends it: the same authorization, `amount` the total approved so far, the earlier request in
    `request_history`, and the increment in `pending_request`.
    """
    event = stripe_authorization_request(authorization_id, card_token, increment_minor, currency)
    authorization = event["data"]["object"]
    authorization |= {"amount": approved_minor, "approved": True}
    authorization["request_history"] = [
        {"amount": approved_minor, "currency": currency, "merchant_amount": approved_minor,
         "merchant_currency": currency, "approved": True, "reason": "webhook_approved",
         "created": event["created"]},
    ]  # fmt: skip
    return event


def stripe_authorization_created(
    authorization_id: str, card_token: str, amount_minor: int, *, approved: bool = True, reason: str = "webhook_timeout"
) -> dict[str, Any]:
    """An `issuing_authorization.created` event: the authorization as Stripe created it, `approved`
    for `reason` (its `request_history`: `webhook_approved` when we approved, `webhook_timeout` when
    our answer came too late and the timeout behaviour approved, ...).
    """
    event = stripe_authorization_request(authorization_id, card_token, amount_minor)
    authorization = event["data"]["object"]
    request = authorization.pop("pending_request")
    authorization |= {"amount": amount_minor if approved else 0, "approved": approved,
                      "status": "pending" if approved else "closed",
                      "merchant_amount": amount_minor if approved else 0, "merchant_currency": "usd"}  # fmt: skip
    authorization["pending_request"] = None
    authorization["request_history"] = [
        {"amount": request["amount"], "currency": request["currency"], "merchant_amount": request["merchant_amount"],
         "merchant_currency": request["merchant_currency"], "approved": approved, "reason": reason,
         "created": event["created"]},
    ]  # fmt: skip
    event["type"] = "issuing_authorization.created"
    return event


def stripe_capture(
    transaction_id: str, card_token: str, amount_minor: int, authorization_id: str | None, currency: str = "usd"
) -> dict[str, Any]:
    """An `issuing_transaction.created` capture (a force capture without `authorization_id`)."""
    return _stripe_event(
        "issuing_transaction.created",
        {
            "id": transaction_id,
            "object": "issuing.transaction",
            "type": "capture",
            "amount": -amount_minor,
            "currency": currency,
            "merchant_amount": -amount_minor,
            "merchant_currency": currency,
            "authorization": authorization_id,
            "card": card_token,
            "merchant_data": _stripe_merchant(MERCHANT),
        },
    )


def stripe_refund(
    transaction_id: str, card_token: str, amount_minor: int, authorization_id: str | None, *, reversed_: bool = False
) -> dict[str, Any]:
    """An `issuing_transaction.created` refund: money back to the card (positive), or, `reversed_`, a
    refund reversed (Stripe's "refund with a negative amount": the merchant takes it back).
    """
    sign = -1 if reversed_ else 1
    return _stripe_event(
        "issuing_transaction.created",
        {
            "id": transaction_id,
            "object": "issuing.transaction",
            "type": "refund",
            "amount": sign * amount_minor,
            "currency": "usd",
            "merchant_amount": sign * amount_minor,
            "merchant_currency": "usd",
            "authorization": authorization_id,
            "card": card_token,
            "merchant_data": _stripe_merchant(MERCHANT),
        },
    )


def stripe_reversal(authorization_id: str, card_token: str, held_minor: int, currency: str = "usd") -> dict[str, Any]:
    """An `issuing_authorization.updated` to status reversed (the whole hold released)."""
    return _stripe_event(
        "issuing_authorization.updated",
        {
            "id": authorization_id,
            "object": "issuing.authorization",
            "amount": 0,
            "currency": currency,
            "status": "reversed",
            "card": {"id": card_token, "object": "issuing.card"},
            "merchant_data": _stripe_merchant(MERCHANT),
        },
        previous={"amount": held_minor, "status": "pending"},
    )


def stripe_amount_changed(
    authorization_id: str, card_token: str, amount_minor: int, previous_minor: int
) -> dict[str, Any]:
    """An `issuing_authorization.updated` of a pending authorization whose held amount changed: lowered
    (part of the hold released) or raised (an increment Stripe approved).
    """
    return _stripe_event(
        "issuing_authorization.updated",
        {
            "id": authorization_id,
            "object": "issuing.authorization",
            "amount": amount_minor,
            "currency": "usd",
            "approved": True,
            "status": "pending",
            "card": {"id": card_token, "object": "issuing.card"},
            "merchant_data": _stripe_merchant(MERCHANT),
        },
        previous={"amount": previous_minor},
    )


def sign_for_stripe(event: dict[str, Any], secret: str, timestamp: int | None = None) -> Signed:
    """`event` as Stripe POSTs it to /webhooks/stripe."""
    body = json.dumps(event).encode()
    signature = sign_stripe(body, secret, int(time.time()) if timestamp is None else timestamp)
    return Signed("/webhooks/stripe", body, {STRIPE_HEADER: signature, "Content-Type": "application/json"})


def lithic_asa(token: str, card_token: str, amount_minor: int, merchant: MerchantData = MERCHANT) -> dict[str, Any]:
    """A Lithic ASA request for an authorization."""
    return {
        "token": token,
        "status": "AUTHORIZATION",
        "amount": amount_minor,
        "authorization_amount": amount_minor,
        "cardholder_currency": "USD",
        "merchant_amount": amount_minor,
        "merchant_currency": "USD",
        "card": {"token": card_token, "last_four": "4242", "state": "OPEN"},
        "merchant": {
            "acceptor_id": merchant.network_id,
            "descriptor": merchant.name,
            "mcc": merchant.mcc,
            "country": _ALPHA_3.get(merchant.country, merchant.country),  # Lithic's codes are alpha-3
            "city": merchant.city,
            "state": "CA",
        },
        "created": "2026-11-23T10:00:00Z",
    }


def sign_for_lithic(request: dict[str, Any], secret: str, timestamp: int | None = None) -> Signed:
    """`request` as Lithic POSTs it to /webhooks/lithic (Standard Webhooks headers)."""
    body = json.dumps(request).encode()
    headers = sign_lithic(body, secret, f"msg_{uuid.uuid4().hex}", int(time.time()) if timestamp is None else timestamp)
    return Signed("/webhooks/lithic", body, headers | {"Content-Type": "application/json"})


def generic_authorization_request(
    authorization_id: str, card_token: str, amount_minor: int, currency: str = "USD", merchant: MerchantData = MERCHANT
) -> dict[str, Any]:
    """The generic shape's authorization request."""
    return {
        "type": "authorization_request",
        "issuer_authorization_id": authorization_id,
        "card_token": card_token,
        "amount": {"amount_minor": amount_minor, "currency": currency},
        "merchant": {
            "name": merchant.name,
            "mcc": merchant.mcc,
            "network_id": merchant.network_id,
            "country": merchant.country,
        },
    }


def sign_generic(message: dict[str, Any], secret: str, timestamp: int | None = None) -> Signed:
    """`message` as a processor POSTs it to /webhooks/generic."""
    body = json.dumps(message).encode()
    signature = sign_stripe(body, secret, int(time.time()) if timestamp is None else timestamp)
    return Signed("/webhooks/generic", body, {GENERIC_HEADER: signature, "Content-Type": "application/json"})


def simulated_authorization(
    settings: Settings,
    issuer: str,
    card_token: str,
    *,
    amount_minor: int,
    currency: str = "USD",
    merchant: MerchantData = MERCHANT,
    increment_of: tuple[str, int] | None = None,
) -> Signed:
    """A new authorization request for `card_token`, shaped and signed as `issuer` sends it, with the
    webhook secret the gateway is configured with (PURSESTRINGS_<ISSUER>_WEBHOOK_SECRET). With
    `increment_of` (an authorization's id and the minor units approved on it so far), an incremental
    authorization of `amount_minor` on it, as Stripe asks one (Stripe only: the others have none).
    """
    secret = getattr(settings, f"{issuer}_webhook_secret", None)
    if secret is None:
        raise ValueError(f"set PURSESTRINGS_{issuer.upper()}_WEBHOOK_SECRET to sign {issuer} traffic")
    key = secret.get_secret_value()
    if increment_of is not None:
        if issuer != "stripe":
            raise ValueError(f"incremental authorizations are Stripe's; {issuer} does not send them")
        authorization, approved_minor = increment_of
        event = stripe_incremental_request(authorization, card_token, amount_minor, approved_minor, currency.lower())
        signed = sign_for_stripe(event, key)
        return Signed(signed.path, signed.body, signed.headers, f"{authorization}:{event['id']}")
    if issuer == "stripe":
        authorization_id = f"iauth_{uuid.uuid4().hex[:24]}"
        event = stripe_authorization_request(authorization_id, card_token, amount_minor, currency.lower(), merchant)
        signed = sign_for_stripe(event, key)
    elif issuer == "lithic":
        authorization_id = str(uuid.uuid4())
        signed = sign_for_lithic(lithic_asa(authorization_id, card_token, amount_minor, merchant), key)
    else:
        authorization_id = f"gen_{uuid.uuid4().hex[:24]}"
        message = generic_authorization_request(authorization_id, card_token, amount_minor, currency.upper(), merchant)
        signed = sign_generic(message, key)
    return Signed(signed.path, signed.body, signed.headers, authorization_id)
