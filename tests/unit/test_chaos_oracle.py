"""The chaos oracle catches what it claims to: an approval over the cap or on a frozen card, and
none where the history is sound (raises, releases and refunds counted).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from chaos.oracle import replay
from schemas.authorizations import AuthorizationDecided
from schemas.common import CapKind, Issuer, ReasonCode
from schemas.policies import CardCaps, PolicyTemplate, WalletCaps
from schemas.wallet import CapRaised, CardCreated, MoneyMoved, StatusChanged, WalletCreated
from tests.support.samples import MERCHANT, NOW, usd

pytestmark = pytest.mark.unit
_EVENT: dict[str, Any] = {"command_id": None, "wallet_id": "w", "actor": "t", "occurred_at": NOW}


def _approved(auth: str, amount: int, card: str = "c") -> AuthorizationDecided:
    return AuthorizationDecided(
        event_id=uuid.uuid4(), request_event_id=uuid.uuid4(), wallet_id="w", card_id=card, issuer=Issuer.STRIPE,
        issuer_authorization_id=auth, approved=True, reason=ReasonCode.APPROVED, amount=usd(amount),
        cap_amount=usd(amount), merchant=MERCHANT, decided_at=NOW, hold_expires_at=NOW + timedelta(days=7),
    )  # fmt: skip


def _released(auth: str, released: int, spent: int = 0) -> MoneyMoved:
    return MoneyMoved(
        **_EVENT | {"event_id": uuid.uuid4()}, source_event_id=uuid.uuid4(), source_type="authorization_reversed",
        card_id="c", trace_id=None, issuer=Issuer.STRIPE, issuer_authorization_id=auth, issuer_transaction_id=None,
        issuer_amount=None, merchant_amount=None, merchant=None, currency="USD", hold_released_minor=released,
        spent_minor=spent, counted_at=NOW,
    )  # fmt: skip


def _setup(cap: int, funded: int | None = None) -> list[Any]:
    return [
        WalletCreated(**_EVENT | {"event_id": uuid.uuid4()}, template=PolicyTemplate.STARTER, currency="USD",
                      time_zone="UTC", label="", caps=WalletCaps(rolling_24h=usd(cap)), slack_channel=None,
                      approvers=(), raise_step=usd(100), max_raise=None),
        CardCreated(**_EVENT | {"event_id": uuid.uuid4()}, card_id="c", issuer=Issuer.STRIPE, issuer_card_token="t",
                    last4="4242", label="", funded_amount=None if funded is None else usd(funded), caps=CardCaps(),
                    mcc_allow=frozenset(), mcc_block=frozenset(), merchant_lock=None, expires_at=None),
    ]  # fmt: skip


def test_a_sound_history_has_nothing_over() -> None:
    """$10 cap: $6 held, released, $6 again, a raise of $5, then $8 more fits ($6 + $8 ≤ $15)."""
    until = NOW + timedelta(hours=1)
    raise_ = CapRaised(**_EVENT | {"event_id": uuid.uuid4()}, cap=CapKind.WALLET_ROLLING_24H, card_id=None,
                       trace_id=None, amount=usd(500), new_limit=usd(1_500), until=until)  # fmt: skip
    found = replay([*_setup(1_000), _approved("a", 600), _released("a", 600), _approved("b", 600), raise_,
                    _approved("c", 800), _approved("b", 600)])  # fmt: skip
    assert (found.cents_over_cap, found.approved_while_frozen, found.approvals) == (0, 0, 3)


def test_an_approval_over_the_cap_or_the_funds_is_counted_in_cents() -> None:
    """$10 cap with $6 spent: approving $7 is $3 over; a $5 funded card approving $6 is $1 over."""
    over_cap = replay([*_setup(1_000), _approved("a", 600), _released("a", 600, spent=600), _approved("b", 700)])
    over_funds = replay([*_setup(10_000, funded=500), _approved("a", 600)])
    assert (over_cap.cents_over_cap, over_funds.cents_over_cap) == (300, 100)


def test_an_approval_on_a_frozen_card_is_counted() -> None:
    """A freeze is effective for every authorization after it."""
    frozen = StatusChanged(**_EVENT | {"event_id": uuid.uuid4()}, card_id="c", status="frozen", reason="stop")
    assert replay([*_setup(1_000), frozen, _approved("a", 100)]).approved_while_frozen == 1


def test_a_hold_the_issuer_placed_counts_as_exposure() -> None:
    """$10 cap, $6 held by the issuer without our approval (MoneyMoved version 2): approving $5 after
    it is $1 over; once the issuer's hold is released, $5 fits.
    """
    placed = MoneyMoved(
        **_EVENT | {"event_id": uuid.uuid4()}, schema_version=2, source_event_id=uuid.uuid4(),
        source_type="authorization_approved_by_issuer", card_id="c", trace_id=None, issuer=Issuer.STRIPE,
        issuer_authorization_id="s", issuer_transaction_id=None, issuer_amount=usd(600), merchant_amount=None,
        merchant=None, currency="USD", hold_released_minor=0, spent_minor=0, counted_at=NOW, hold_placed_minor=600,
    )  # fmt: skip
    over = replay([*_setup(1_000), placed, _approved("a", 500)])
    fits = replay([*_setup(1_000), placed, _released("s", 600), _approved("a", 500)])
    assert (over.cents_over_cap, fits.cents_over_cap) == (100, 0)
