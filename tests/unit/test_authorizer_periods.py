"""Issue 21, part 3: the intervals and lists issuers offer — weekly, yearly and all-time caps (card
and wallet), and merchant country allow / block lists (card and wallet).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.authorizations import AuthorizationDecided
from schemas.common import CapKind, Issuer, Merchant, ReasonCode
from schemas.policies import CardCaps, WalletCaps
from schemas.wallet import CommandRejected, CreateCard, RaiseCap, SetMerchantCountries
from services.authorizer.decide import forget_old, post_spend
from services.authorizer.state import Posting, WalletState, kept_periods, period_end, period_key
from services.notifier.requests import window
from tests.support.builders import CARD, MERCHANT, NOW, cleared, command_fields, refund, request, run, run_on, usd
from tests.support.builders import wallet as build_wallet

NEW_YORK = ZoneInfo("America/New_York")


def _decision(state: WalletState, amount_minor: int, at: datetime = NOW, **fields: Any) -> AuthorizationDecided:
    events, _ = run(state, request(amount_minor, at=at, **fields), at=at)
    [decision] = [event for event in events if isinstance(event, AuthorizationDecided)]
    return decision


def _answer(state: WalletState, amount_minor: int, at: datetime = NOW, **fields: Any) -> tuple[bool, ReasonCode]:
    decision = _decision(state, amount_minor, at, **fields)
    return decision.approved, decision.reason


def _spent(state: WalletState, amount_minor: int, at: datetime, auth: str) -> WalletState:
    """`state` after an approved authorization of `amount_minor` at `at`, cleared at once."""
    _, state = run_on(state, request(amount_minor, auth=auth, at=at), at=at)
    _, state = run_on(state, cleared(auth, amount_minor, at), at=at)
    return state


@pytest.mark.parametrize(
    ("caps", "card_caps", "reason", "cap"),
    [
        (None, CardCaps(weekly=usd(99)), ReasonCode.CARD_WEEKLY_CAP, CapKind.CARD_WEEKLY),
        (None, CardCaps(yearly=usd(99)), ReasonCode.CARD_YEARLY_CAP, CapKind.CARD_YEARLY),
        (None, CardCaps(all_time=usd(99)), ReasonCode.CARD_ALL_TIME_CAP, CapKind.CARD_ALL_TIME),
        (WalletCaps(weekly=usd(99)), None, ReasonCode.WALLET_WEEKLY_CAP, CapKind.WALLET_WEEKLY),
        (WalletCaps(yearly=usd(99)), None, ReasonCode.WALLET_YEARLY_CAP, CapKind.WALLET_YEARLY),
        (WalletCaps(all_time=usd(99)), None, ReasonCode.WALLET_ALL_TIME_CAP, CapKind.WALLET_ALL_TIME),
    ],
)
def test_each_new_cap_declines_what_does_not_fit_and_explains_itself(
    caps: WalletCaps | None, card_caps: CardCaps | None, reason: ReasonCode, cap: CapKind
) -> None:
    """$1.00 against a $0.99 cap is declined naming the cap, whose status is in the decision; $0.99 is
    approved.
    """
    state = build_wallet(caps or WalletCaps(), card_caps)
    declined = _decision(state, 100)
    assert (declined.approved, declined.reason, declined.failed_cap) == (False, reason, cap)
    [status] = [status for status in declined.caps if status.cap == cap]
    assert (status.limit, status.remaining) == (usd(99), usd(99))
    if cap in (CapKind.CARD_ALL_TIME, CapKind.WALLET_ALL_TIME):
        assert status.window_ends_at is None
    else:
        assert status.window_ends_at is not None
        assert status.window_ends_at > NOW
    assert _answer(state, 99) == (True, ReasonCode.APPROVED)


def test_a_calendar_week_starts_on_monday_in_the_wallets_time_zone() -> None:
    """Spend on Sunday 23:30 in New York (Monday in UTC) counts in the week ending there: the rest of
    that Sunday is declined, Monday 00:30 starts a new week; the cap says when its week ends.
    """
    sunday_late = datetime(2026, 12, 6, 23, 30, tzinfo=NEW_YORK)
    monday = datetime(2026, 12, 7, 0, 30, tzinfo=NEW_YORK)
    state = _spent(build_wallet(WalletCaps(weekly=usd(1_000)), time_zone="America/New_York"), 1_000, sunday_late, "a1")
    declined = _decision(state, 1, sunday_late + timedelta(minutes=10))
    assert (declined.reason, declined.caps[0].window_ends_at) == (
        ReasonCode.WALLET_WEEKLY_CAP,
        datetime(2026, 12, 7, tzinfo=NEW_YORK),
    )
    assert _answer(state, 1_000, monday) == (True, ReasonCode.APPROVED)


def test_a_calendar_year_ends_at_new_year_in_the_wallets_time_zone() -> None:
    """A card's yearly cap: spent on Dec 31, 23:00 in New York; declined until Jan 1 there."""
    new_years_eve = datetime(2026, 12, 31, 23, 0, tzinfo=NEW_YORK)
    state = build_wallet(WalletCaps(), CardCaps(yearly=usd(5_000)), time_zone="America/New_York")
    state = _spent(state, 5_000, new_years_eve, "a1")
    assert [
        _answer(state, 1, new_years_eve + timedelta(minutes=59)),
        _answer(state, 5_000, datetime(2027, 1, 1, 0, 1, tzinfo=NEW_YORK)),
    ] == [(False, ReasonCode.CARD_YEARLY_CAP), (True, ReasonCode.APPROVED)]


def test_an_all_time_cap_never_resets_and_a_refund_gives_room_back() -> None:
    """Two years later the card is still spent; a $4.00 refund lets $4.00 through, not a cent more."""
    state = _spent(build_wallet(WalletCaps(), CardCaps(all_time=usd(1_000))), 1_000, NOW, "a1")
    later = NOW + timedelta(days=730)
    assert _answer(state, 1, later) == (False, ReasonCode.CARD_ALL_TIME_CAP)
    _, state = run_on(state, refund(400, later), at=later)
    assert [_answer(state, 401, later), _answer(state, 400, later)] == [
        (False, ReasonCode.CARD_ALL_TIME_CAP),
        (True, ReasonCode.APPROVED),
    ]


def test_the_wallets_caps_count_every_cards_spend() -> None:
    """A wallet's weekly and all-time caps add up both of its cards; a card's own cap only its own."""
    state = build_wallet(WalletCaps(weekly=usd(5_000), all_time=usd(1_500)), CardCaps(weekly=usd(1_000)))
    second = CreateCard(
        **command_fields(), card_id="card_2", issuer=Issuer.STRIPE, issuer_card_token="ic_2", last4="1111"
    )
    _, state = run_on(state, second)
    state = _spent(state, 900, NOW, "a1")
    _, state = run_on(
        state, request(500, auth="a2", card="card_2"), cleared("a2", 500).model_copy(update={"card_id": "card_2"})
    )
    assert [_answer(state, 101, card="card_2"), _answer(state, 100, card="card_2"), _answer(state, 101)] == [
        (False, ReasonCode.WALLET_ALL_TIME_CAP),
        (True, ReasonCode.APPROVED),
        (False, ReasonCode.CARD_WEEKLY_CAP),
    ]


def test_spend_is_kept_by_period_and_old_periods_are_forgotten() -> None:
    """A posting counts in its week, month and year for the wallet and its card; a wallet keeps the
    current and the previous period of each kind, and the lifetime totals forever.
    """
    state = build_wallet(WalletCaps(weekly=usd(10_000)))
    at = datetime(2026, 12, 5, 12, tzinfo=ZoneInfo("UTC"))  # a Saturday of ISO week 49
    state = post_spend(state, Posting("p1", at, CARD, "PR-1", 700))
    assert state.periods == {key: {"wallet": 700, f"card:{CARD}": 700} for key in ("2026-W49", "2026-12", "2026")}
    assert state.lifetime == {"wallet": 700, f"card:{CARD}": 700, "trace:PR-1": 700}
    two_weeks = forget_old(state, at + timedelta(days=14))
    a_year = forget_old(state, at + timedelta(days=400))
    assert set(two_weeks.periods) == {"2026-12", "2026"}
    assert (a_year.periods, a_year.lifetime) == ({}, state.lifetime)
    assert kept_periods(at, "UTC") == {"2026-W49", "2026-W48", "2026-12", "2026-11", "2026", "2025"}


def test_period_keys_and_ends_follow_iso_weeks_and_the_time_zone() -> None:
    """Jan 1 2027 is a Friday of ISO week 53 of 2026; its week ends on Monday Jan 4 at midnight."""
    friday = datetime(2027, 1, 1, 12, tzinfo=NEW_YORK)
    assert [period_key(friday, "America/New_York", p) for p in ("week", "month", "year")] == [
        "2026-W53", "2027-01", "2027",
    ]  # fmt: skip
    assert [period_end(friday, "America/New_York", p) for p in ("week", "month", "year")] == [
        datetime(2027, 1, 4, tzinfo=NEW_YORK),
        datetime(2027, 2, 1, tzinfo=NEW_YORK),
        datetime(2028, 1, 1, tzinfo=NEW_YORK),
    ]


def test_a_weekly_cap_can_be_raised_for_its_week_and_the_request_window_is_the_week() -> None:
    """An approval raises the wallet's weekly cap (the notifier's window is that ISO week); a raise of
    an unset yearly cap is refused.
    """
    state = _spent(build_wallet(WalletCaps(weekly=usd(1_000))), 1_000, NOW, "a1")
    declined = _decision(state, 300)
    [status] = declined.caps
    key, ends = window(CapKind.WALLET_WEEKLY, status, declined.decided_at, "UTC")
    assert (key, ends) == (period_key(NOW, "UTC", "week"), period_end(NOW, "UTC", "week"))
    raised = RaiseCap(**command_fields(), cap=CapKind.WALLET_WEEKLY, amount=usd(500), until=ends)
    unset = RaiseCap(**command_fields(), cap=CapKind.WALLET_YEARLY, amount=usd(500), until=ends)
    events, state = run_on(state, raised, unset)
    assert isinstance(events[-1], CommandRejected)
    assert "wallet_yearly is not set" in events[-1].error
    assert _answer(state, 300) == (True, ReasonCode.APPROVED)


def _countries(
    card_id: str | None, allow: frozenset[str] = frozenset(), block: frozenset[str] = frozenset()
) -> SetMerchantCountries:
    return SetMerchantCountries(**command_fields(), card_id=card_id, allow=allow, block=block)


def _at(country: str | None) -> Merchant:
    return MERCHANT.model_copy(update={"country": country})


def test_merchant_country_lists_of_the_card_and_the_wallet_both_apply() -> None:
    """The card may buy in the US and Canada only; the wallet blocks Canada: a US merchant is
    approved, a Canadian one blocked, a French one not allowed, one with no country not allowed.
    Both lists empty lifts the card's rules.
    """
    _, state = run_on(
        build_wallet(), _countries(CARD, allow=frozenset({"US", "CA"})), _countries(None, block=frozenset({"CA"}))
    )
    assert [_answer(state, 100, merchant=_at(country)) for country in ("US", "CA", "FR", None)] == [
        (True, ReasonCode.APPROVED),
        (False, ReasonCode.MERCHANT_COUNTRY_BLOCKED),
        (False, ReasonCode.MERCHANT_COUNTRY_NOT_ALLOWED),
        (False, ReasonCode.MERCHANT_COUNTRY_NOT_ALLOWED),
    ]
    _, lifted = run_on(state, _countries(CARD))
    assert [_answer(lifted, 100, merchant=_at(country)) for country in ("FR", None, "CA")] == [
        (True, ReasonCode.APPROVED),
        (True, ReasonCode.APPROVED),
        (False, ReasonCode.MERCHANT_COUNTRY_BLOCKED),
    ]
    assert lifted.countries == {"wallet": (frozenset(), frozenset({"CA"}))}


def test_country_rules_are_refused_for_an_unknown_card_or_an_overlap() -> None:
    """A card that does not exist is a rejected command; a country both allowed and blocked is an
    invalid command.
    """
    events, state = run_on(build_wallet(), _countries("card_nope", block=frozenset({"RU"})))
    assert isinstance(events[-1], CommandRejected)
    assert "card_nope does not exist" in events[-1].error
    assert state.countries == {}
    with pytest.raises(ValueError, match="both allowed and blocked"):
        _countries(CARD, allow=frozenset({"US"}), block=frozenset({"US"}))
