"""Small builders for authorizer tests: requests, commands and lifecycle events with defaults."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from schemas.authorizations import AuthorizationRequested
from schemas.common import Issuer
from schemas.issuer_events import (
    AuthorizationApprovedByIssuer,
    AuthorizationCleared,
    AuthorizationExpired,
    AuthorizationReversed,
    ForcePosted,
    RefundPosted,
)
from schemas.money import Money
from schemas.policies import CardCaps, WalletCaps
from schemas.wallet import CreateCard, CreateWallet
from services.authorizer.decide import Decided
from services.authorizer.domain import Inbound, decide
from services.authorizer.state import NO_RATES, RateTable, WalletState
from tests.support.samples import MERCHANT, NOW

WALLET = "wal_1"
CARD = "card_1"


def usd(amount_minor: int) -> Money:
    """Dollars in cents."""
    return Money.of(amount_minor, "USD")


def request(
    amount_minor: int, *, auth: str | None = None, card: str = CARD, at: datetime = NOW, **fields: Any
) -> AuthorizationRequested:
    """An authorization request for `amount_minor` cents on `card` at `at`."""
    merchant = fields.pop("merchant", MERCHANT)
    amount = fields.pop("amount", usd(amount_minor))
    return AuthorizationRequested(
        event_id=uuid.uuid4(),
        wallet_id=WALLET,
        card_id=card,
        issuer=Issuer.STRIPE,
        issuer_authorization_id=auth or f"iauth_{uuid.uuid4().hex[:10]}",
        amount=amount,
        merchant_amount=amount,
        merchant=merchant,
        requested_at=at,
        deadline_at=fields.pop("deadline_at", at + timedelta(seconds=2)),
        **fields,
    )


def command_fields(at: datetime = NOW) -> dict[str, Any]:
    """The fields every command carries."""
    return {"command_id": uuid.uuid4(), "wallet_id": WALLET, "actor": "ops", "issued_at": at}


def lifecycle_fields(at: datetime = NOW, card: str = CARD) -> dict[str, Any]:
    """The fields every issuer lifecycle event carries."""
    return {"event_id": uuid.uuid4(), "wallet_id": WALLET, "card_id": card, "issuer": Issuer.STRIPE, "occurred_at": at}


def cleared(auth: str, amount_minor: int, at: datetime = NOW, *, final: bool = True) -> AuthorizationCleared:
    """A capture of `auth` for `amount_minor`."""
    return AuthorizationCleared(
        **lifecycle_fields(at),
        issuer_authorization_id=auth,
        issuer_transaction_id=f"itx_{uuid.uuid4().hex[:8]}",
        amount=usd(amount_minor),
        final=final,
    )


def reversed_(auth: str, amount_minor: int, at: datetime = NOW, *, full: bool = False) -> AuthorizationReversed:
    """A reversal of `amount_minor` of `auth`'s hold."""
    return AuthorizationReversed(
        **lifecycle_fields(at), issuer_authorization_id=auth, amount=usd(amount_minor), full=full
    )


def expired(auth: str, at: datetime = NOW, amount_minor: int | None = None, card: str = CARD) -> AuthorizationExpired:
    """The gateway gave up on `auth` (version 2, naming its request's amount, when `amount_minor`)."""
    if amount_minor is None:
        return AuthorizationExpired(**lifecycle_fields(at), issuer_authorization_id=auth, cause="gateway_deadline")
    return AuthorizationExpired(
        **lifecycle_fields(at) | {"card_id": card}, schema_version=2, issuer_authorization_id=auth,
        cause="gateway_deadline", amount=usd(amount_minor),
    )  # fmt: skip


def refund(amount_minor: int, at: datetime = NOW, auth: str | None = None) -> RefundPosted:
    """Money back to the card."""
    return RefundPosted(
        **lifecycle_fields(at),
        issuer_transaction_id=f"itx_{uuid.uuid4().hex[:8]}",
        issuer_authorization_id=auth,
        amount=usd(amount_minor),
    )


def approved_by_issuer(auth: str, amount_minor: int, at: datetime = NOW) -> AuthorizationApprovedByIssuer:
    """The issuer approved `auth` whatever we answered (Stripe's issuing_authorization.created)."""
    return AuthorizationApprovedByIssuer(
        **lifecycle_fields(at), issuer_authorization_id=auth, amount=usd(amount_minor), merchant=MERCHANT
    )


def force_post(amount_minor: int, at: datetime = NOW) -> ForcePosted:
    """Spend the issuer let through without asking."""
    return ForcePosted(
        **lifecycle_fields(at),
        issuer_transaction_id=f"itx_{uuid.uuid4().hex[:8]}",
        amount=usd(amount_minor),
        merchant=MERCHANT,
    )


def wallet(
    caps: WalletCaps | None = None,
    card_caps: CardCaps | None = None,
    *,
    time_zone: str = "UTC",
    **card_fields: Any,
) -> WalletState:
    """A wallet with one card, built through the real commands."""
    create = CreateWallet(
        **command_fields(),
        caps=caps or WalletCaps(rolling_24h=usd(5_000), monthly=usd(50_000)),
        time_zone=time_zone,
        max_raise=card_fields.pop("max_raise", None),
    )
    card = CreateCard(
        **command_fields(),
        card_id=CARD,
        issuer=Issuer.STRIPE,
        issuer_card_token="ic_1",
        last4="4242",
        caps=card_caps or CardCaps(),
        **card_fields,
    )
    state = run(None, create, card)[1]
    assert state is not None
    return state


def run(
    state: WalletState | None, *messages: Inbound, at: datetime = NOW, rates: RateTable = NO_RATES
) -> tuple[list[Any], WalletState | None]:
    """Feed messages through `decide` in order; return every event produced and the final state."""
    events: list[Any] = []
    for message in messages:
        produced, state = decide(state, message, at, rates)
        events += [valid(event) for event in produced]
    return events, state


def valid(event: Any) -> Any:
    """`event`, after checking it passes its model's validation: the authorizer builds decisions
    without re-validating them (schemas/trusted.py, or encoded straight to JSON: `Decided`, whose
    contract is parsed from that JSON), so every test decision is validated here.
    """
    if isinstance(event, Decided):
        event = event.contract()
    again = type(event).model_validate(event.model_dump())
    if again != event:
        raise AssertionError(f"{event!r} does not survive validation: {again!r}")
    return event


# Re-exported so authorizer tests take every default from one place.
__all__ = ["MERCHANT", "NOW"]


def run_on(
    state: WalletState, *messages: Inbound, at: datetime = NOW, rates: RateTable = NO_RATES
) -> tuple[list[Any], WalletState]:
    """`run` on a wallet that exists and must go on existing."""
    events, after = run(state, *messages, at=at, rates=rates)
    if after is None:
        raise AssertionError("the wallet vanished")
    return events, after
