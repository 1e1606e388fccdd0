"""What each issuer sends, read into one shape, and what each expects back.

An `Ask` is an authorization request before its wallet is known (the card token says which); a
`Notice` is a lifecycle event in the same state. The gateway resolves the card, then builds the
`schemas/` contracts. Anything that does not read raises `WebhookInvalid` with the reason, which
becomes a 400; event types we do not handle are `Ignored` (200, so the issuer stops retrying).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from pydantic_core import from_json

from schemas.common import Issuer, Merchant, ReasonCode
from schemas.countries import ALPHA_2_OF_ALPHA_3
from schemas.issuer_events import (
    ISSUER_EVENT_TYPES,
    AnyIssuerEvent,
    AuthorizationApprovedByIssuer,
    AuthorizationCleared,
    AuthorizationExpired,
    AuthorizationReversed,
    ForcePosted,
    RefundPosted,
)
from schemas.money import Money

NoticeType = type[AnyIssuerEvent]


class WebhookInvalid(ValueError):
    """The body is not a request we can act on; the message says why."""


@dataclass(frozen=True)
class Ignored:
    """A well-formed event we have nothing to do with (an informational type)."""

    event_type: str


@dataclass(frozen=True)
class Ask:
    """An issuer's authorization request, before its wallet is known."""

    issuer: Issuer
    issuer_authorization_id: str
    card_token: str
    amount: Money
    merchant_amount: Money
    merchant: Merchant
    # An incremental authorization: more to hold on this earlier authorization (see read_stripe).
    increment_of: str | None = None


@dataclass(frozen=True)
class Notice:
    """An issuer's lifecycle event, before its wallet is known: the contract's type and fields."""

    issuer: Issuer
    issuer_event_id: str
    card_token: str
    occurred_at: datetime
    event_type: NoticeType
    fields: dict[str, Any]


class _In(BaseModel):
    """An issuer's payload: strict about what we read, ignoring the rest."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _money(amount: int, currency: str) -> Money:
    try:
        return Money(amount_minor=abs(amount), currency=currency.upper())
    except ValidationError as error:
        raise WebhookInvalid(f"amount {amount} {currency!r}: {error.errors()[0]['msg']}") from None


def _alpha_2(country: str | None) -> str | None:
    """The ISO 3166-1 alpha-2 code of `country` given as alpha-2 (Stripe) or alpha-3 (Lithic); None
    when it is neither (merchant country rules then treat the merchant as of no known country).
    """
    code = (country or "").strip().upper()
    if len(code) == 2 and code.isalpha() and code.isascii():  # noqa: PLR2004 - alpha-2
        return code
    return ALPHA_2_OF_ALPHA_3.get(code)


def _merchant(name: str | None, mcc: str, network_id: str, country: str | None, city: str | None) -> Merchant:
    try:
        return Merchant(
            name=(name or "")[:200],
            mcc=mcc,
            network_id=network_id,
            country=_alpha_2(country),
            city=city[:100] if city else None,
        )
    except ValidationError as error:
        problem = error.errors()[0]
        raise WebhookInvalid(f"merchant {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None


def _read(model: type[_In], data: object, what: str) -> Any:  # noqa: ANN401 - the model asked for
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(map(str, problem["loc"])) or what
        raise WebhookInvalid(f"{what}: {where}: {problem['msg']}") from None


# ---- Stripe Issuing -------------------------------------------------------------------------


class _StripeMerchantData(_In):
    category_code: str
    name: str | None = None
    network_id: str
    country: str | None = None
    city: str | None = None


class _StripePendingRequest(_In):
    amount: StrictInt
    currency: str
    merchant_amount: StrictInt
    merchant_currency: str


class _StripeCard(_In):
    id: str


class _StripeAuthorization(_In):
    id: str
    card: _StripeCard
    status: str = "pending"
    approved: bool = False
    amount: StrictInt = 0
    currency: str = "usd"
    merchant_amount: StrictInt | None = None
    merchant_currency: str | None = None
    pending_request: _StripePendingRequest | None = None
    request_history: list[object] = []
    merchant_data: _StripeMerchantData


class _StripeTransaction(_In):
    id: str
    type: str
    amount: StrictInt
    currency: str
    merchant_amount: StrictInt | None = None
    merchant_currency: str | None = None
    authorization: str | None = None
    card: str
    merchant_data: _StripeMerchantData


class _StripeData(_In):
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class _StripeEvent(_In):
    id: str
    type: str
    created: StrictInt = Field(ge=0, le=253_402_300_799)  # seconds since 1970, up to the year 9999
    data: _StripeData


def read_stripe(body: bytes) -> Ask | Notice | Ignored:
    """A Stripe Issuing event: an authorization request, a lifecycle change, or something to ignore."""
    event: _StripeEvent = _read(_StripeEvent, _json(body), "event")
    if event.type == "issuing_authorization.request":
        auth: _StripeAuthorization = _read(_StripeAuthorization, event.data.object, "data.object")
        pending = auth.pending_request
        if pending is None:
            raise WebhookInvalid("data.object.pending_request: required for issuing_authorization.request")
        # An incremental authorization (a hotel adding a night) asks again on the same authorization:
        # `amount` holds what was approved so far, `request_history` the earlier requests, and
        # `pending_request` only the increment. It is not a retry of the first request, so it must
        # not get that request's answer: it has an id of its own (one per event: a redelivered event
        # is a retry) and names the authorization it would grow.
        increment = auth.amount > 0 or bool(auth.request_history)
        return Ask(
            issuer=Issuer.STRIPE,
            issuer_authorization_id=f"{auth.id}:{event.id}" if increment else auth.id,
            card_token=auth.card.id,
            amount=_money(pending.amount, pending.currency),
            merchant_amount=_money(pending.merchant_amount, pending.merchant_currency),
            merchant=_stripe_merchant(auth.merchant_data),
            increment_of=auth.id if increment else None,
        )
    if event.type == "issuing_authorization.created":
        return _stripe_authorization_created(event)
    if event.type == "issuing_authorization.updated":
        return _stripe_authorization_update(event)
    if event.type == "issuing_transaction.created":
        return _stripe_transaction(event)
    return Ignored(event.type)


def _stripe_merchant(data: _StripeMerchantData) -> Merchant:
    return _merchant(data.name, data.category_code, data.network_id, data.country, data.city)


def _stripe_notice(event: _StripeEvent, card_token: str, event_type: NoticeType, **fields: Any) -> Notice:  # noqa: ANN401
    return Notice(Issuer.STRIPE, event.id, card_token, datetime.fromtimestamp(event.created, UTC), event_type, fields)


def _stripe_authorization_created(event: _StripeEvent) -> Notice | Ignored:
    """An authorization Stripe created: approved, its `amount` is held at Stripe whoever decided
    (us, or Stripe without us: a stand-in, our answer too late with the timeout behaviour "approve").
    The gateway publishes it unless the approval was ours (`Answering.notify`). A decline moves no
    money.
    """
    auth: _StripeAuthorization = _read(_StripeAuthorization, event.data.object, "data.object")
    if not auth.approved:
        return Ignored(f"{event.type} (declined)")
    merchant_amount = None
    if auth.merchant_amount is not None and auth.merchant_currency is not None:
        merchant_amount = _money(auth.merchant_amount, auth.merchant_currency)
    return _stripe_notice(
        event, auth.card.id, AuthorizationApprovedByIssuer, issuer_authorization_id=auth.id,
        amount=_money(auth.amount, auth.currency), merchant_amount=merchant_amount,
        merchant=_stripe_merchant(auth.merchant_data),
    )  # fmt: skip


def _stripe_authorization_update(event: _StripeEvent) -> Notice | Ignored:
    auth: _StripeAuthorization = _read(_StripeAuthorization, event.data.object, "data.object")
    before = (event.data.previous_attributes or {}).get("amount")
    card = auth.card.id
    if auth.status == "reversed":
        amount = _money(before if isinstance(before, int) else auth.amount, auth.currency)
        return _stripe_notice(
            event, card, AuthorizationReversed, issuer_authorization_id=auth.id, amount=amount, full=True
        )
    if auth.status == "expired":
        return _stripe_notice(
            event, card, AuthorizationExpired, issuer_authorization_id=auth.id, cause="issuer_expired"
        )
    if auth.status == "pending" and isinstance(before, int) and before < auth.amount:
        # More held than before: an increment Stripe approved. We decline every increment we are
        # asked (decision 0006), so this one was approved without us: held as Stripe holds it.
        return _stripe_notice(
            event, card, AuthorizationApprovedByIssuer, issuer_authorization_id=auth.id,
            amount=_money(auth.amount, auth.currency), merchant=_stripe_merchant(auth.merchant_data),
        )  # fmt: skip
    if auth.status == "pending" and isinstance(before, int) and before > auth.amount:
        released = _money(before - auth.amount, auth.currency)
        return _stripe_notice(
            event, card, AuthorizationReversed, issuer_authorization_id=auth.id, amount=released, full=False
        )
    return Ignored(f"{event.type} ({auth.status})")


def _stripe_transaction(event: _StripeEvent) -> Notice | Ignored:
    tx: _StripeTransaction = _read(_StripeTransaction, event.data.object, "data.object")
    amount = _money(tx.amount, tx.currency)
    merchant_amount = None
    if tx.merchant_amount is not None and tx.merchant_currency is not None:
        merchant_amount = _money(tx.merchant_amount, tx.merchant_currency)
    if tx.type == "refund" and tx.amount >= 0:
        return _stripe_notice(
            event, tx.card, RefundPosted, issuer_transaction_id=tx.id, issuer_authorization_id=tx.authorization,
            amount=amount, merchant=_stripe_merchant(tx.merchant_data),
        )  # fmt: skip
    if tx.type not in {"refund", "capture"}:
        return Ignored(f"{event.type} ({tx.type})")
    # Money moved without an authorization asked of us: a force capture, or a refund reversed ("a
    # refund with a negative amount", Stripe's docs: the merchant takes back what it refunded). Spend,
    # counted like any (a cap it passes is reported), not one more refund.
    if tx.type == "refund" or tx.authorization is None:
        return _stripe_notice(
            event, tx.card, ForcePosted, issuer_transaction_id=tx.id, amount=amount, merchant_amount=merchant_amount,
            merchant=_stripe_merchant(tx.merchant_data),
        )  # fmt: skip
    return _stripe_notice(
        event, tx.card, AuthorizationCleared, issuer_authorization_id=tx.authorization, issuer_transaction_id=tx.id,
        amount=amount, merchant_amount=merchant_amount, final=True,
    )  # fmt: skip


def stripe_answer(approved: bool, reason: ReasonCode) -> dict[str, Any]:  # noqa: FBT001 - the answer's one flag
    """The body Stripe expects for issuing_authorization.request."""
    return {"approved": approved, "metadata": {"pursestrings_reason": reason.value}}


# ---- Lithic Auth Stream Access ----------------------------------------------------------------


class _LithicMerchant(_In):
    acceptor_id: str
    descriptor: str = ""
    mcc: str
    country: str | None = None
    city: str | None = None


class _LithicCard(_In):
    token: str


class _LithicAsa(_In):
    token: str
    status: str = "AUTHORIZATION"
    amount: StrictInt
    cardholder_currency: str = "USD"
    merchant_amount: StrictInt | None = None
    merchant_currency: str | None = None
    card: _LithicCard
    merchant: _LithicMerchant


LITHIC_DECIDED_STATUSES = frozenset({"AUTHORIZATION", "FINANCIAL_AUTHORIZATION"})


def read_lithic(body: bytes) -> Ask:
    """A Lithic ASA request (authorizations only: other statuses are refused with the reason)."""
    asa: _LithicAsa = _read(_LithicAsa, _json(body), "request")
    if asa.status not in LITHIC_DECIDED_STATUSES:
        raise WebhookInvalid(f"status {asa.status!r}: only {sorted(LITHIC_DECIDED_STATUSES)} are decided here")
    amount = _money(asa.amount, asa.cardholder_currency)
    merchant_amount = amount
    if asa.merchant_amount is not None and asa.merchant_currency is not None:
        merchant_amount = _money(asa.merchant_amount, asa.merchant_currency)
    merchant = _merchant(
        asa.merchant.descriptor, asa.merchant.mcc, asa.merchant.acceptor_id, asa.merchant.country, asa.merchant.city
    )
    return Ask(Issuer.LITHIC, asa.token, asa.card.token, amount, merchant_amount, merchant)


# Lithic's decline results, from our reason codes: the closest one the network understands.
_LITHIC_RESULTS: dict[ReasonCode, str] = {
    ReasonCode.APPROVED: "APPROVED",
    **dict.fromkeys(
        (ReasonCode.CARD_NOT_FOUND, ReasonCode.CARD_CLOSED, ReasonCode.CARD_FROZEN, ReasonCode.CARD_EXPIRED,
         ReasonCode.WALLET_FROZEN, ReasonCode.WALLET_CLOSED),
        "CARD_PAUSED",
    ),
    **dict.fromkeys(
        (ReasonCode.MCC_NOT_ALLOWED, ReasonCode.MCC_BLOCKED, ReasonCode.MERCHANT_LOCKED,
         ReasonCode.MERCHANT_COUNTRY_NOT_ALLOWED, ReasonCode.MERCHANT_COUNTRY_BLOCKED, ReasonCode.FX_RATE_MISSING),
        "UNAUTHORIZED_MERCHANT",
    ),
    ReasonCode.CARD_FUNDS_INSUFFICIENT: "INSUFFICIENT_FUNDS",
    ReasonCode.PER_AUTHORIZATION_CAP: "INSUFFICIENT_FUNDS",
    **dict.fromkeys(
        (ReasonCode.CARD_ROLLING_24H_CAP, ReasonCode.CARD_WEEKLY_CAP, ReasonCode.CARD_MONTHLY_CAP,
         ReasonCode.CARD_YEARLY_CAP, ReasonCode.CARD_ALL_TIME_CAP, ReasonCode.TRACE_CAP,
         ReasonCode.WALLET_ROLLING_24H_CAP, ReasonCode.WALLET_WEEKLY_CAP, ReasonCode.WALLET_MONTHLY_CAP,
         ReasonCode.WALLET_YEARLY_CAP, ReasonCode.WALLET_ALL_TIME_CAP, ReasonCode.VELOCITY_LIMIT),
        "VELOCITY_EXCEEDED",
    ),
    **dict.fromkeys(
        (ReasonCode.DEADLINE_EXCEEDED, ReasonCode.INCREMENT_NOT_SUPPORTED, ReasonCode.INVALID_REQUEST,
         ReasonCode.SYSTEM_UNAVAILABLE),
        "CARD_PAUSED",
    ),
}  # fmt: skip


def lithic_answer(token: str, reason: ReasonCode) -> dict[str, Any]:
    """The body Lithic expects back from an ASA responder."""
    return {"token": token, "result": _LITHIC_RESULTS[reason]}


# ---- Generic (documented in docs/integrations.md) ------------------------------------------------


class _GenericAsk(_In):
    type: Literal["authorization_request"]
    issuer_authorization_id: str
    card_token: str
    amount: Money
    merchant_amount: Money | None = None
    merchant: Merchant


_GENERIC_NOTICES: dict[str, NoticeType] = ISSUER_EVENT_TYPES  # every issuer event, by its type


class _GenericNotice(_In):
    id: str
    type: str
    card_token: str
    occurred_at: datetime


def read_generic(body: bytes) -> Ask | Notice:
    """The generic shape: an authorization request, or one of our lifecycle contracts by type."""
    data = _json(body)
    if isinstance(data, dict) and data.get("type") == "authorization_request":
        ask: _GenericAsk = _read(_GenericAsk, data, "request")
        merchant_amount = ask.merchant_amount or ask.amount
        return Ask(
            Issuer.GENERIC, ask.issuer_authorization_id, ask.card_token, ask.amount, merchant_amount, ask.merchant
        )
    head: _GenericNotice = _read(_GenericNotice, data, "event")
    event_type = _GENERIC_NOTICES.get(head.type)
    if event_type is None:
        raise WebhookInvalid(f"type {head.type!r}: expected authorization_request or one of {sorted(_GENERIC_NOTICES)}")
    if head.occurred_at.tzinfo is None:
        raise WebhookInvalid("occurred_at: needs a time zone offset (e.g. 2026-11-23T10:00:00Z)")
    assert isinstance(data, dict)  # noqa: S101 - _GenericNotice read it as an object
    fields = {k: v for k, v in data.items() if k not in {"id", "type", "card_token", "occurred_at"}}
    return Notice(Issuer.GENERIC, head.id, head.card_token, head.occurred_at, event_type, fields)


def _json(body: bytes) -> object:
    # pydantic-core's parser: a third of json.loads's time, and too deep a nesting is a ValueError
    # like any other bad body rather than a RecursionError.
    try:
        return from_json(body)
    except ValueError as error:
        raise WebhookInvalid(f"body is not JSON: {error}") from None
