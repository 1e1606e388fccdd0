"""The authorizer's pure decisions: every reason code, in ARCHITECTURE.md's order, with what remains."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.authorizations import AuthorizationDecided
from schemas.common import CapKind, Merchant, ReasonCode
from schemas.money import Money
from schemas.policies import CardCaps, WalletCaps
from schemas.wallet import BindTrace, FreezeCard, FreezeWallet, UnfreezeCard
from services.authorizer.domain import decide
from services.authorizer.state import RateTable, WalletState, hold_of
from tests.support.builders import CARD, NOW, cleared, command_fields, request, run, run_on, usd, wallet

RATES = RateTable({("EUR", "USD"): Fraction(108, 100)})


def _decision(state: WalletState | None, amount_minor: int, at: datetime = NOW, **fields: Any) -> AuthorizationDecided:
    events, _ = run(state, request(amount_minor, at=at, **fields), at=at, rates=RATES)
    [decision] = [event for event in events if isinstance(event, AuthorizationDecided)]
    return decision


def _reason(state: WalletState | None, amount_minor: int = 100, **fields: Any) -> tuple[bool, ReasonCode]:
    decision = _decision(state, amount_minor, **fields)
    return decision.approved, decision.reason


def test_an_authorization_within_every_cap_is_approved_and_held() -> None:
    """Approval places a hold and reports every cap with what remains after it."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000), monthly=usd(5_000)), CardCaps(per_authorization=usd(500)))
    events, after = run(state, request(300, auth="a1"))
    [decision] = events
    assert after is not None
    held = hold_of(after, "a1")
    assert (decision.approved, decision.reason, held and held.amount_minor) == (True, ReasonCode.APPROVED, 300)
    assert [(c.cap, c.limit.amount_minor, c.held.amount_minor, c.remaining.amount_minor) for c in decision.caps] == [
        (CapKind.PER_AUTHORIZATION, 500, 300, 200),
        (CapKind.WALLET_ROLLING_24H, 1_000, 300, 700),
        (CapKind.WALLET_MONTHLY, 5_000, 300, 4_700),
    ]


def _with_card(**card_fields: object) -> WalletState:
    return wallet(None, None, **card_fields)  # type: ignore[arg-type]


def _status(state: WalletState, *commands: object) -> WalletState:
    _, after = run(state, *commands)  # type: ignore[arg-type]
    assert after is not None
    return after


@pytest.mark.parametrize(
    ("make_state", "fields", "reason"),
    [
        (lambda: None, {}, ReasonCode.CARD_NOT_FOUND),
        (_with_card, {"card": "card_unknown"}, ReasonCode.CARD_NOT_FOUND),
        (lambda: _with_card(expires_at=NOW), {}, ReasonCode.CARD_EXPIRED),
        (lambda: _with_card(mcc_allow=frozenset({"7372"})), {}, ReasonCode.MCC_NOT_ALLOWED),
        (lambda: _with_card(mcc_block=frozenset({"5734"})), {}, ReasonCode.MCC_BLOCKED),
        (lambda: _with_card(merchant_lock="aws_1"), {}, ReasonCode.MERCHANT_LOCKED),
        (_with_card, {"amount": Money.of(100, "JPY")}, ReasonCode.FX_RATE_MISSING),
    ],
)
def test_policy_checks_decline_with_their_reason(
    make_state: Callable[[], WalletState | None], fields: dict[str, Any], reason: ReasonCode
) -> None:
    """Unknown, expired and merchant-restricted cards and missing rates are declined, naming no cap."""
    decision = _decision(make_state(), 100, **fields)
    assert (decision.approved, decision.reason, decision.failed_cap) == (False, reason, None)


def test_a_request_decided_after_its_deadline_is_declined() -> None:
    """The gateway has already answered decline: approving now would hold money nobody will spend."""
    late = request(100, at=NOW - timedelta(seconds=3))
    events, _ = decide(_with_card(), late, NOW)
    assert [(e.approved, e.reason) for e in events] == [(False, ReasonCode.DEADLINE_EXCEEDED)]  # type: ignore[union-attr]


def test_frozen_and_closed_cards_and_wallets_are_declined() -> None:
    """A freeze or close is effective for the next authorization in the log."""
    base = _with_card()
    frozen_card = _status(base, FreezeCard(**command_fields(), card_id=CARD, reason="loop"))
    frozen_wallet = _status(base, FreezeWallet(**command_fields(), reason="kill switch"))
    unfrozen = _status(frozen_card, UnfreezeCard(**command_fields(), card_id=CARD, reason="fixed"))
    assert [_reason(frozen_card), _reason(frozen_wallet), _reason(unfrozen)] == [
        (False, ReasonCode.CARD_FROZEN),
        (False, ReasonCode.WALLET_FROZEN),
        (True, ReasonCode.APPROVED),
    ]


def test_the_first_failing_check_names_the_reason() -> None:
    """A frozen card with a blocked MCC and an amount over every cap is declined as frozen."""
    state = _status(
        wallet(WalletCaps(rolling_24h=usd(1)), CardCaps(per_authorization=usd(1)), mcc_block=frozenset({"5734"})),
        FreezeCard(**command_fields(), card_id=CARD, reason="loop"),
    )
    assert _reason(state, 10_000) == (False, ReasonCode.CARD_FROZEN)


@pytest.mark.parametrize(
    ("caps", "card_caps", "card_fields", "reason", "cap"),
    [
        (WalletCaps(per_authorization=usd(99)), None, {}, ReasonCode.PER_AUTHORIZATION_CAP, CapKind.PER_AUTHORIZATION),
        (None, CardCaps(per_authorization=usd(99)), {}, ReasonCode.PER_AUTHORIZATION_CAP, CapKind.PER_AUTHORIZATION),
        (None, None, {"funded_amount": usd(99)}, ReasonCode.CARD_FUNDS_INSUFFICIENT, CapKind.CARD_FUNDED),
        (None, CardCaps(rolling_24h=usd(99)), {}, ReasonCode.CARD_ROLLING_24H_CAP, CapKind.CARD_ROLLING_24H),
        (None, CardCaps(monthly=usd(99)), {}, ReasonCode.CARD_MONTHLY_CAP, CapKind.CARD_MONTHLY),
        (WalletCaps(rolling_24h=usd(99)), None, {}, ReasonCode.WALLET_ROLLING_24H_CAP, CapKind.WALLET_ROLLING_24H),
        (WalletCaps(monthly=usd(99)), None, {}, ReasonCode.WALLET_MONTHLY_CAP, CapKind.WALLET_MONTHLY),
    ],
)
def test_each_cap_declines_what_does_not_fit(
    caps: WalletCaps | None,
    card_caps: CardCaps | None,
    card_fields: dict[str, object],
    reason: ReasonCode,
    cap: CapKind,
) -> None:
    """$1.00 against a $0.99 cap is declined naming the cap; $0.99 is approved."""
    state = wallet(caps or WalletCaps(), card_caps, **card_fields)  # type: ignore[arg-type]
    declined = _decision(state, 100)
    assert (declined.approved, declined.reason, declined.failed_cap) == (False, reason, cap)
    assert _reason(state, 99) == (True, ReasonCode.APPROVED)


def test_trace_cap_counts_every_authorization_stamped_with_the_trace() -> None:
    """A $20 per-PR cap: the bound trace is stamped on decisions and its spend is capped."""
    state = _status(
        wallet(WalletCaps(per_trace=usd(2_000))), BindTrace(**command_fields(), trace_id="PR-4823", card_id=CARD)
    )
    events, state = run_on(state, request(1_500, auth="a1"), request(600, auth="a2"), request(500, auth="a3"))
    assert [(e.approved, e.reason, e.trace_id) for e in events] == [
        (True, ReasonCode.APPROVED, "PR-4823"),
        (False, ReasonCode.TRACE_CAP, "PR-4823"),
        (True, ReasonCode.APPROVED, "PR-4823"),
    ]


def test_a_repeated_authorization_id_gets_the_first_answer_and_changes_nothing() -> None:
    """Redelivery is idempotent: same decision, same state."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    first_events, after_first = run(state, request(700, auth="a1"))
    again_events, after_again = run(after_first, request(700, auth="a1"))
    assert (again_events, after_again) == (first_events, after_first)


def test_rolling_window_slides_exactly_24_hours() -> None:
    """Spend leaves the rolling window 24 h after it was authorized, not at midnight."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, request(1_000, auth="a1"))

    _, state = run_on(state, cleared("a1", 1_000, NOW + timedelta(hours=1)), at=NOW + timedelta(hours=1))
    just_inside = NOW + timedelta(hours=24) - timedelta(seconds=1)
    just_outside = NOW + timedelta(hours=24, seconds=1)
    assert [_reason(state, 1, at=just_inside), _reason(state, 1_000, at=just_outside)] == [
        (False, ReasonCode.WALLET_ROLLING_24H_CAP),
        (True, ReasonCode.APPROVED),
    ]


def test_calendar_month_follows_the_wallet_time_zone() -> None:
    """Spend on Jan 31, 23:30 in New York (Feb 1 in UTC) counts in January there."""
    new_york = ZoneInfo("America/New_York")
    jan_31_late = datetime(2027, 1, 31, 23, 30, tzinfo=new_york)
    feb_1_morning = datetime(2027, 2, 1, 9, 0, tzinfo=new_york)
    state = wallet(WalletCaps(monthly=usd(1_000)), time_zone="America/New_York")
    _, state = run_on(state, request(1_000, auth="a1", at=jan_31_late), at=jan_31_late)

    _, state = run_on(state, cleared("a1", 1_000, jan_31_late), at=jan_31_late)
    assert [_reason(state, 1, at=jan_31_late + timedelta(minutes=10)), _reason(state, 1_000, at=feb_1_morning)] == [
        (False, ReasonCode.WALLET_MONTHLY_CAP),
        (True, ReasonCode.APPROVED),
    ]


def test_foreign_amounts_convert_rounding_against_the_agent() -> None:
    """€0.01 at 1.08 is 1.08 cents, counted as 2 cents."""
    decision = _decision(wallet(WalletCaps(rolling_24h=usd(1_000))), 1, amount=Money.of(1, "EUR"))
    assert decision.cap_amount == usd(2)


def test_unknown_merchant_fields_do_not_matter_without_rules() -> None:
    """A card with no MCC lists and no lock accepts any merchant."""
    other = Merchant(name="Lambda Labs", mcc="7372", network_id="lambda_1")
    assert _reason(_with_card(), 100, merchant=other) == (True, ReasonCode.APPROVED)


def test_decide_on_an_unknown_wallet_declines_and_creates_nothing() -> None:
    """No wallet: the request is declined as card_not_found and no state appears."""
    events, state = decide(None, request(100), NOW)
    assert ([(e.approved, e.reason) for e in events], state) == ([(False, ReasonCode.CARD_NOT_FOUND)], None)  # type: ignore[union-attr]
