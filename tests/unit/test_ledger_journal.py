"""The ledger's pure journal: every message becomes balanced legs in the caps' currency."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.authorizations import AuthorizationDecided
from schemas.common import CapKind, Issuer, ReasonCode
from schemas.money import Money
from schemas.policies import CardCaps
from schemas.wallet import CardCreated, MoneyMoved
from services.ledger.journal import Card, Entry, Leg, journal
from tests.support.samples import MERCHANT, NOW, usd

pytestmark = pytest.mark.unit


def _decision(*, approved: bool, amount: Money, cap_amount: Money | None) -> AuthorizationDecided:
    return AuthorizationDecided(
        event_id=uuid.uuid4(),
        request_event_id=uuid.uuid4(),
        wallet_id="wal_1",
        card_id="card_1",
        issuer=Issuer.STRIPE,
        issuer_authorization_id="iauth_1",
        approved=approved,
        reason=ReasonCode.APPROVED if approved else ReasonCode.CARD_ROLLING_24H_CAP,
        failed_cap=None if approved else CapKind.CARD_ROLLING_24H,
        amount=amount,
        cap_amount=cap_amount,
        merchant=MERCHANT,
        trace_id="PR-1",
        decided_at=NOW,
        hold_expires_at=NOW + timedelta(days=7) if approved else None,
    )


def _moved(released: int, spent: int) -> MoneyMoved:
    return MoneyMoved(
        event_id=uuid.uuid4(),
        command_id=None,
        wallet_id="wal_1",
        actor="issuer",
        occurred_at=NOW,
        source_event_id=uuid.uuid4(),
        source_type="authorization_cleared",
        card_id="card_1",
        trace_id="PR-1",
        issuer=Issuer.STRIPE,
        issuer_authorization_id="iauth_1",
        issuer_transaction_id="itx_1",
        issuer_amount=usd(max(spent, 0)),
        merchant_amount=None,
        merchant=None,
        currency="USD",
        hold_released_minor=released,
        spent_minor=spent,
        counted_at=NOW,
    )


def test_an_approval_holds_the_cap_currency_amount() -> None:
    """A EUR purchase approved as $10.87 holds 1087 cents, and says what was asked in EUR."""
    (entry,) = journal(_decision(approved=True, amount=Money.of(1_000, "EUR"), cap_amount=usd(1_087)))
    assert isinstance(entry, Entry)
    assert (entry.currency, entry.held_minor, entry.amount) == ("USD", 1_087, Money.of(1_000, "EUR"))
    assert entry.legs == (Leg("held", 1_087, "card_1"), Leg("available", -1_087, "card_1"))


def test_a_decline_is_recorded_with_zero_legs() -> None:
    """What did the agent try to buy? The decline answers: it is an entry moving nothing."""
    (entry,) = journal(_decision(approved=False, amount=usd(5_000), cap_amount=usd(5_000)))
    assert isinstance(entry, Entry)
    assert (entry.approved, entry.reason, entry.failed_cap, entry.held_minor) == (
        False, "card_rolling_24h_cap", "card_rolling_24h", 0
    )  # fmt: skip
    assert [leg.amount_minor for leg in entry.legs] == [0, 0]


def test_a_clearing_below_its_hold_releases_the_hold_and_posts_the_spend() -> None:
    """Hold $10.00 cleared at $9.00: held -1000, spent +900, available +100."""
    (entry,) = journal(_moved(1_000, 900))
    assert isinstance(entry, Entry)
    assert entry.legs == (
        Leg("held", -1_000, "card_1"),
        Leg("spent", 900, "card_1"),
        Leg("available", 100, "card_1"),
    )


def test_a_funded_card_is_loaded_from_the_issuer_settlement_account() -> None:
    """A $50.00 load-based card: available +5000 against the issuer's settlement account."""
    created = CardCreated(
        event_id=uuid.uuid4(), command_id=uuid.uuid4(), wallet_id="wal_1", actor="ops", occurred_at=NOW,
        card_id="card_1", issuer=Issuer.STRIPE, issuer_card_token="ic_1", last4="4242", label="",
        funded_amount=usd(5_000), caps=CardCaps(), mcc_allow=frozenset(), mcc_block=frozenset(),
        merchant_lock=None, expires_at=None,
    )  # fmt: skip
    card, funding = journal(created)
    assert isinstance(card, Card)
    assert card.funded_minor == 5_000
    assert isinstance(funding, Entry)
    assert funding.legs == (Leg("available", 5_000, "card_1"), Leg("issuer_settlement", -5_000, None))


def test_an_unbalanced_entry_cannot_be_built() -> None:
    """The double-entry rule holds in code too, before Postgres checks it again."""
    with pytest.raises(ValueError, match="does not balance"):
        Entry(
            entry_id=uuid.uuid4(), kind="money_moved", source_type="x", wallet_id="w", card_id="c", trace_id=None,
            issuer="stripe", currency="USD", occurred_at=NOW, counted_at=NOW, legs=(Leg("spent", 1, "c"),),
        )  # fmt: skip


@given(released=st.integers(0, 10**9), spent=st.integers(-(10**9), 10**9))
def test_every_movement_balances(released: int, spent: int) -> None:
    """Whatever the authorizer says moved, the legs sum to zero and no leg is zero."""
    (entry,) = journal(_moved(released, spent))
    assert isinstance(entry, Entry)
    assert sum(leg.amount_minor for leg in entry.legs) == 0
    assert all(leg.amount_minor != 0 for leg in entry.legs)


def test_a_hold_the_issuer_placed_is_held_from_available() -> None:
    """MoneyMoved version 2: what the issuer held without our approval moves from available to held,
    on the entry's `held_minor` (so the views count it like an approval's hold).
    """
    placed = _moved(0, 0).model_copy(
        update={"schema_version": 2, "source_type": "authorization_approved_by_issuer", "hold_placed_minor": 700}
    )
    (entry,) = journal(placed)
    assert isinstance(entry, Entry)
    assert (entry.kind, entry.held_minor, entry.hold_released_minor) == ("money_moved", 700, 0)
    assert entry.legs == (Leg("held", 700, "card_1"), Leg("available", -700, "card_1"))
