"""From one message to its journal entry and balanced postings. Pure: no I/O.

Every amount posted is in the wallet's (caps') currency, as the authorizer counted it: a decision's
`cap_amount`, and the `MoneyMoved` the authorizer says for each lifecycle event. The ledger never
re-derives the authorizer's rules (which hold a clearing ends, how a foreign refund converts), so its
balances and the authorizer's agree by construction; `reconcile` checks that they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from schemas.authorizations import AuthorizationDecided
from schemas.common import Merchant
from schemas.issuer_events import AnyIssuerEvent
from schemas.money import Money
from schemas.wallet import CardCreated, MoneyMoved, WalletCreated

Account = Literal["available", "held", "spent", "issuer_settlement"]


@dataclass(frozen=True)
class Leg:
    """One posting: a signed amount on one account (debit positive)."""

    account: Account
    amount_minor: int
    card_id: str | None


@dataclass(frozen=True)
class Entry:
    """One source event in the journal, with its legs (which sum to zero)."""

    entry_id: UUID
    kind: Literal["decision", "money_moved", "card_funded"]
    source_type: str
    wallet_id: str
    card_id: str
    trace_id: str | None
    issuer: str
    currency: str
    occurred_at: datetime
    counted_at: datetime
    issuer_authorization_id: str | None = None
    issuer_transaction_id: str | None = None
    merchant: Merchant | None = None
    amount: Money | None = None
    merchant_amount: Money | None = None
    cap_amount_minor: int | None = None
    held_minor: int = 0
    hold_released_minor: int = 0
    spent_minor: int = 0
    approved: bool | None = None
    reason: str | None = None
    failed_cap: str | None = None
    increment_of: str | None = None  # a decision of an increment: the authorization it adds to
    legs: tuple[Leg, ...] = field(default=())

    def __post_init__(self) -> None:
        if sum(leg.amount_minor for leg in self.legs) != 0:
            raise ValueError(f"entry {self.entry_id} does not balance: {self.legs}")


@dataclass(frozen=True)
class Wallet:
    """What the views need to know about a wallet: its currency and time zone."""

    wallet_id: str
    label: str
    currency: str
    time_zone: str
    created_at: datetime


@dataclass(frozen=True)
class Card:
    """What the views need to know about a card."""

    card_id: str
    wallet_id: str
    label: str
    issuer: str
    issuer_card_token: str
    last4: str
    funded_minor: int | None
    currency: str | None
    created_at: datetime


Journaled = Entry | Wallet | Card


def journal(message: AuthorizationDecided | MoneyMoved | WalletCreated | CardCreated) -> tuple[Journaled, ...]:
    """What `message` adds to the ledger (nothing for wallet events that move no money)."""
    if isinstance(message, AuthorizationDecided):
        return (_decision(message),)
    if isinstance(message, MoneyMoved):
        return (_moved(message),)
    if isinstance(message, WalletCreated):
        return (Wallet(message.wallet_id, message.label, message.currency, message.time_zone, message.occurred_at),)
    return _card(message)


def _decision(decision: AuthorizationDecided) -> Entry:
    currency = (decision.cap_amount or decision.amount).currency
    held = decision.cap_amount.amount_minor if decision.approved and decision.cap_amount is not None else 0
    # A decline is journaled too, with zero legs: "what did the agent try to buy?" has an answer.
    legs = (Leg("held", held, decision.card_id), Leg("available", -held, decision.card_id))
    return Entry(
        entry_id=decision.event_id,
        kind="decision",
        source_type=decision.type,
        wallet_id=decision.wallet_id,
        card_id=decision.card_id,
        trace_id=decision.trace_id,
        issuer=decision.issuer,
        currency=currency,
        occurred_at=decision.decided_at,
        counted_at=decision.decided_at,
        issuer_authorization_id=decision.issuer_authorization_id,
        merchant=decision.merchant,
        amount=decision.amount,
        merchant_amount=decision.merchant_amount,
        cap_amount_minor=None if decision.cap_amount is None else decision.cap_amount.amount_minor,
        held_minor=held,
        approved=decision.approved,
        reason=decision.reason.value,
        failed_cap=None if decision.failed_cap is None else decision.failed_cap.value,
        increment_of=decision.increment_of,
        legs=legs,
    )


def _moved(moved: MoneyMoved) -> Entry:
    released, spent, placed = moved.hold_released_minor, moved.spent_minor, moved.hold_placed_minor
    legs = (
        Leg("held", placed - released, moved.card_id),
        Leg("spent", spent, moved.card_id),
        Leg("available", released - spent - placed, moved.card_id),
    )
    return Entry(
        entry_id=moved.event_id,
        kind="money_moved",
        source_type=moved.source_type,
        wallet_id=moved.wallet_id,
        card_id=moved.card_id,
        trace_id=moved.trace_id,
        issuer=moved.issuer,
        currency=moved.currency,
        occurred_at=moved.occurred_at,
        counted_at=moved.counted_at,
        issuer_authorization_id=moved.issuer_authorization_id,
        issuer_transaction_id=moved.issuer_transaction_id,
        merchant=moved.merchant,
        amount=moved.issuer_amount,
        merchant_amount=moved.merchant_amount,
        held_minor=placed,  # a hold the issuer placed without our approval (MoneyMoved version 2)
        hold_released_minor=released,
        spent_minor=spent,
        legs=tuple(leg for leg in legs if leg.amount_minor != 0),
    )


def _card(created: CardCreated) -> tuple[Journaled, ...]:
    funded = created.funded_amount
    currency = None if funded is None else funded.currency  # else the wallet's
    card = Card(
        created.card_id,
        created.wallet_id,
        created.label,
        created.issuer,
        created.issuer_card_token,
        created.last4,
        None if funded is None else funded.amount_minor,
        currency,
        created.occurred_at,
    )
    if funded is None or funded.amount_minor == 0:
        return (card,)
    # Loading a card moves money to the issuer: the card's available balance is its counterpart.
    funding = Entry(
        entry_id=created.event_id,
        kind="card_funded",
        source_type=created.type,
        wallet_id=created.wallet_id,
        card_id=created.card_id,
        trace_id=None,
        issuer=created.issuer,
        currency=funded.currency,
        occurred_at=created.occurred_at,
        counted_at=created.occurred_at,
        amount=funded,
        legs=(
            Leg("available", funded.amount_minor, created.card_id),
            Leg("issuer_settlement", -funded.amount_minor, None),
        ),
    )
    return (card, funding)


def issuer_report(event: AnyIssuerEvent) -> dict[str, object]:
    """The columns of `ledger.issuer_reports` for one issuer event (the payload is added by the store)."""
    amount = getattr(event, "amount", None)
    return {
        "event_id": event.event_id,
        "type": event.type,
        "wallet_id": event.wallet_id,
        "card_id": event.card_id,
        "issuer": event.issuer,
        "issuer_authorization_id": getattr(event, "issuer_authorization_id", None),
        "issuer_transaction_id": getattr(event, "issuer_transaction_id", None),
        "amount_minor": None if amount is None else amount.amount_minor,
        "currency": None if amount is None else amount.currency,
        "occurred_at": event.occurred_at,
    }
