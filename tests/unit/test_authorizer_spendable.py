"""What a card can spend next (`spendable`): the number `pursestrings balance`, the API's card and
MCP's `check_balance` headline, and the one the authorizer applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.authorizations import AuthorizationDecided
from schemas.common import CAP_REASONS, CapKind, ReasonCode
from schemas.money import Money
from schemas.policies import CardCaps, WalletCaps
from schemas.wallet import BindTrace, FreezeCard, FreezeWallet
from services.authorizer.decide import Decided
from services.authorizer.domain import decide
from services.authorizer.spendable import spendable
from services.authorizer.state import WalletState
from services.client import per_call_line, spendable_headline
from services.gateway.management import DryRunIn, _card_out, dry_run
from tests.support.builders import CARD, MERCHANT, NOW, command_fields, request, run_on, usd, wallet
from tests.unit.test_authorizer_properties import _replay, _start, operations

BIG = usd(10**8)
_REASON_OF = {cap: reason for reason, cap in CAP_REASONS.items()}


def _card_json(state: WalletState) -> dict[str, Any]:
    """The card as the API returns it."""
    return _card_out(state, CARD, NOW).model_dump(mode="json")


def _decided(state: WalletState, amount_minor: int, auth: str) -> Decided:
    events, _ = decide(state, request(amount_minor, auth=auth), NOW)
    decision = events[-1]
    assert isinstance(decision, Decided)
    return decision


# Each cumulative cap made the tightest in turn (its limit in cents), every other one far above it.
TIGHTEST: dict[CapKind, int] = {
    CapKind.CARD_FUNDED: 2_000,
    CapKind.CARD_ROLLING_24H: 1_900,
    CapKind.CARD_WEEKLY: 1_800,
    CapKind.CARD_MONTHLY: 1_700,
    CapKind.CARD_YEARLY: 1_600,
    CapKind.CARD_ALL_TIME: 1_500,
    CapKind.TRACE: 1_400,
    CapKind.WALLET_ROLLING_24H: 1_300,
    CapKind.WALLET_WEEKLY: 1_200,
    CapKind.WALLET_MONTHLY: 1_100,
    CapKind.WALLET_YEARLY: 1_000,
    CapKind.WALLET_ALL_TIME: 900,
}
# The field of `WalletCaps` / `CardCaps` each cap kind is set by.
_FIELD = {
    "rolling_24h": (CapKind.WALLET_ROLLING_24H, CapKind.CARD_ROLLING_24H),
    "weekly": (CapKind.WALLET_WEEKLY, CapKind.CARD_WEEKLY),
    "monthly": (CapKind.WALLET_MONTHLY, CapKind.CARD_MONTHLY),
    "yearly": (CapKind.WALLET_YEARLY, CapKind.CARD_YEARLY),
    "all_time": (CapKind.WALLET_ALL_TIME, CapKind.CARD_ALL_TIME),
}


def _wallet_tightest_at(cap: CapKind) -> WalletState:
    """A wallet whose `cap` is the tightest, with $1.50 spent on its card (under a bound trace)."""
    limit = usd(TIGHTEST[cap])
    own = {name: limit for name, (on_wallet, _) in _FIELD.items() if cap == on_wallet}
    wallet_caps = WalletCaps(**{"rolling_24h": BIG, "monthly": BIG} | own)
    card_caps = CardCaps(**{name: limit for name, (_, on_card) in _FIELD.items() if cap == on_card})
    state = wallet(wallet_caps, card_caps, funded_amount=limit if cap == CapKind.CARD_FUNDED else BIG)
    bind = BindTrace(**command_fields(), card_id=CARD, trace_id="PR-7", cap=limit if cap == CapKind.TRACE else BIG)
    _, state = run_on(state, bind, request(150, auth="spent"))
    return state


@pytest.mark.parametrize("cap", list(TIGHTEST))
def test_the_headline_names_the_cap_that_leaves_the_least(cap: CapKind) -> None:
    """With $1.50 spent, the headline is what the tightest cap leaves, of its limit, named; an
    authorization for exactly that is approved and one cent more is declined by that cap.
    """
    state = _wallet_tightest_at(cap)
    limit = TIGHTEST[cap]
    left = limit - 150
    card = _card_json(state)
    exact, above = _decided(state, left, "exact"), _decided(state, left + 1, "above")
    assert spendable_headline(card) == f"Remaining: ${left // 100}.{left % 100:02d} of ${limit // 100}.00  ({cap})"
    assert (card["spendable"]["cap"], card["spendable"]["amount"]["amount_minor"]) == (cap.value, left)
    assert (exact.approved, above.approved, above.reason, above.failed_cap) == (True, False, _REASON_OF[cap], cap)


def test_a_funded_card_under_a_spent_wallet_day_says_what_the_wallet_leaves() -> None:
    """Issue 21's report: a $500 card under the starter template's $50 day. Before any purchase the
    headline was "$500.00 of $500.00 (card_funded)"; it is $50.00 of the wallet's day, and $0.00
    once $50 is spent, with the per-authorization cap given as a limit per call.
    """
    starter = WalletCaps(rolling_24h=usd(5_000), monthly=usd(50_000), per_authorization=usd(1_000))
    state = wallet(starter, funded_amount=usd(50_000))
    before = _card_json(state)
    _, state = run_on(state, *(request(100, auth=f"a{n}") for n in range(50)))
    after = _card_json(state)
    assert [spendable_headline(before), spendable_headline(after)] == [
        "Remaining: $50.00 of $50.00  (wallet_rolling_24h)",
        "Remaining: $0.00 of $50.00  (wallet_rolling_24h)",
    ]
    assert per_call_line(after) == "at most $10.00 per authorization"
    assert _decided(state, 1, "one_cent").reason == ReasonCode.WALLET_ROLLING_24H_CAP


def test_a_frozen_card_or_wallet_can_spend_nothing_and_says_why() -> None:
    """Whatever the caps leave, a frozen card (or wallet) gets nothing: the headline says so."""
    state = wallet(funded_amount=usd(1_000))
    _, card_frozen = run_on(state, FreezeCard(**command_fields(), card_id=CARD, reason="runaway"))
    _, wallet_frozen = run_on(state, FreezeWallet(**command_fields(), reason="audit"))
    assert [spendable_headline(_card_json(s)) for s in (card_frozen, wallet_frozen)] == [
        "Remaining: $0.00  (card_frozen: every authorization is declined)",
        "Remaining: $0.00  (wallet_frozen: every authorization is declined)",
    ]


def test_with_only_a_per_authorization_cap_there_is_no_budget_only_a_per_call_limit() -> None:
    """A per-authorization cap is not a budget: with no cumulative cap, none is headlined."""
    state = wallet(WalletCaps(per_authorization=usd(2_500)))
    card = _card_json(state)
    assert (spendable_headline(card), per_call_line(card), card["spendable"]["cap"]) == (
        "Remaining: no cumulative cap",
        "at most $25.00 per authorization",
        None,
    )


def test_holds_past_their_expiry_do_not_count_against_what_is_left() -> None:
    """The next decision releases holds that aged out first: so does what is said to be left."""
    state = wallet(funded_amount=usd(1_000))
    _, state = run_on(state, request(400, auth="old"))
    later = NOW.replace(year=NOW.year + 1)
    assert (spendable(state, CARD, NOW).amount_minor, spendable(state, CARD, later).amount_minor) == (600, 1_000)


def _bound(caps: WalletCaps, card_caps: CardCaps | None, funded_minor: int) -> WalletState:
    state = wallet(caps, card_caps, funded_amount=usd(funded_minor))
    _, state = run_on(state, BindTrace(**command_fields(), card_id=CARD, trace_id="PR-1"))
    return state


# Starting wallets whose tightest cap differs (the property's own, then one per kind of cap),
# some with no per-authorization cap, so that every cap gets to bind.
STARTS: dict[str, Callable[[], WalletState]] = {
    "trace under per-call caps": _start,
    "trace": lambda: _bound(WalletCaps(rolling_24h=usd(2_000), monthly=usd(5_000), per_trace=usd(500)), None, 4_000),
    "wallet day": lambda: _bound(WalletCaps(rolling_24h=usd(600), monthly=usd(5_000)), None, 4_000),
    "wallet month": lambda: _bound(WalletCaps(monthly=usd(700)), None, 4_000),
    "funded": lambda: _bound(WalletCaps(rolling_24h=usd(2_000), monthly=usd(5_000)), None, 500),
    "card day": lambda: _bound(WalletCaps(monthly=usd(5_000)), CardCaps(rolling_24h=usd(450)), 4_000),
    "card month": lambda: _bound(WalletCaps(monthly=usd(5_000)), CardCaps(monthly=usd(650)), 4_000),
    "card week": lambda: _bound(WalletCaps(monthly=usd(5_000)), CardCaps(weekly=usd(550)), 4_000),
    "wallet week": lambda: _bound(WalletCaps(weekly=usd(750), monthly=usd(5_000)), None, 4_000),
    "card year": lambda: _bound(WalletCaps(monthly=usd(5_000)), CardCaps(yearly=usd(850)), 4_000),
    "wallet year": lambda: _bound(WalletCaps(yearly=usd(800)), None, 4_000),
    "card all time": lambda: _bound(WalletCaps(rolling_24h=usd(2_000)), CardCaps(all_time=usd(600)), 4_000),
    "wallet all time": lambda: _bound(WalletCaps(all_time=usd(900)), CardCaps(monthly=usd(5_000)), 4_000),
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(STARTS)), operations)
def test_exactly_the_spendable_amount_is_approved_and_a_cent_more_is_declined(
    start: str, ops: list[tuple[Any, ...]]
) -> None:
    """For any state reached by any sequence (requests at caps' edges, captures, reversals, refunds,
    expiries, freezes, time passing): an authorization for what `spendable` says (within the
    per-authorization limit) is approved, one cent more is declined by the cap it named.
    """
    for step in _replay(ops, STARTS[start]()):
        state, now = step.after, step.now
        can = spendable(state, CARD, now)
        per_call = None if can.per_authorization is None else can.per_authorization.limit_minor
        assert can.amount_minor is not None  # every starting wallet has cumulative caps
        exact = can.amount_minor if per_call is None else min(can.amount_minor, per_call)
        above = can.amount_minor + 1
        above_decision = decide(state, request(above, auth="above", at=now), now)[0][-1]
        assert isinstance(above_decision, Decided | AuthorizationDecided)
        assert not above_decision.approved
        if can.blocked is not None:
            assert above_decision.reason == can.blocked
            continue
        if per_call is None or above <= per_call:
            assert can.binding is not None
            assert (above_decision.reason, above_decision.failed_cap) == (_REASON_OF[can.binding.cap], can.binding.cap)
        if exact > 0:
            exact_decision = decide(state, request(exact, auth="exact", at=now), now)[0][-1]
            assert isinstance(exact_decision, Decided | AuthorizationDecided)
            assert exact_decision.approved, (exact, can)


def test_a_dry_run_answers_as_decide_would_and_changes_nothing() -> None:
    """`dry_run` (the API's authorize:dry-run): the decision `decide` would make for an amount and a
    merchant, every cap as it stands, and the wallet left as it was (it is not even handed back).
    """
    state = wallet(WalletCaps(rolling_24h=usd(5_000), per_authorization=usd(1_000)), funded_amount=usd(1_500))
    _, state = run_on(state, request(1_000, auth="spent"))
    before = _card_json(state)
    fits = dry_run(state, CARD, DryRunIn(amount=usd(500), merchant=MERCHANT), NOW)
    per_call = dry_run(state, CARD, DryRunIn(amount=usd(1_001), merchant=MERCHANT), NOW)
    funded = dry_run(state, CARD, DryRunIn(amount=usd(501), merchant=MERCHANT), NOW)
    in_euros = dry_run(state, CARD, DryRunIn(amount=Money.of(100, "EUR"), merchant=MERCHANT), NOW)
    assert [(d.approved, d.reason, d.failed_cap) for d in (fits, per_call, funded, in_euros)] == [
        (True, ReasonCode.APPROVED, None),
        (False, ReasonCode.PER_AUTHORIZATION_CAP, CapKind.PER_AUTHORIZATION),
        (False, ReasonCode.CARD_FUNDS_INSUFFICIENT, CapKind.CARD_FUNDED),
        (False, ReasonCode.FX_RATE_MISSING, None),
    ]
    assert (fits.spendable.amount, fits.spendable.cap) == (usd(500), CapKind.CARD_FUNDED)
    assert (_card_json(state), len(state.holds)) == (before, 1)
