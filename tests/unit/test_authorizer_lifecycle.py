"""Money after a decision: clearing, reversal, expiry, refund, force-post, holds the issuer placed
without our approval, holds that age out.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from schemas.common import CapKind, ReasonCode
from schemas.policies import WalletCaps
from schemas.wallet import BindTrace, CapBreachedByIssuer, MoneyMoved
from services.authorizer.state import WalletState, held_minor, spent_minor
from tests.support.builders import (
    CARD,
    NOW,
    WALLET,
    approved_by_issuer,
    cleared,
    command_fields,
    expired,
    force_post,
    refund,
    request,
    reversed_,
    run_on,
    usd,
    wallet,
)


def _usage(state: WalletState) -> tuple[int, int]:
    """(spent, held) against the wallet's rolling cap at NOW."""
    return (
        spent_minor(state, CapKind.WALLET_ROLLING_24H, WALLET, NOW),
        held_minor(state, CapKind.WALLET_ROLLING_24H, WALLET),
    )


def _held_then(*events: object) -> tuple[int, int]:
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, request(500, auth="a1"), *events)  # type: ignore[arg-type]
    return _usage(state)


def test_clearing_turns_the_hold_into_spend_and_the_difference_counts() -> None:
    """A $5.00 hold cleared at $4.00 spends $4.00; cleared at $6.00 spends $6.00."""
    assert [_held_then(cleared("a1", 400)), _held_then(cleared("a1", 600))] == [(400, 0), (600, 0)]


def test_partial_capture_keeps_the_rest_of_the_hold() -> None:
    """A non-final capture of $2.00 leaves $3.00 held."""
    assert _held_then(cleared("a1", 200, final=False)) == (200, 300)


def test_reversals_release_all_or_part_of_a_hold() -> None:
    """A partial reversal releases what it names; a full one releases everything."""
    assert [_held_then(reversed_("a1", 200)), _held_then(reversed_("a1", 0, full=True))] == [(0, 300), (0, 0)]


def test_expiry_releases_the_hold() -> None:
    """The gateway's deadline expiry releases a late approval's hold."""
    assert _held_then(expired("a1")) == (0, 0)


def test_an_expiry_before_the_request_makes_the_late_request_decline() -> None:
    """If the expiry overtakes the request, the request is declined instead of holding money forever."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    events, state = run_on(state, expired("a9"), request(100, auth="a9"))
    assert ([(e.approved, e.reason) for e in events], _usage(state)) == (
        [(False, ReasonCode.DEADLINE_EXCEEDED)],
        (0, 0),
    )


def test_refund_returns_spend() -> None:
    """A $3.00 refund after a $5.00 capture leaves $2.00 spent, never below zero."""
    assert [_held_then(cleared("a1", 500), refund(300)), _held_then(cleared("a1", 500), refund(900))] == [
        (200, 0),
        (0, 0),
    ]


def test_force_post_counts_and_reports_a_breach() -> None:
    """Spend the issuer let through is counted; pushing a cap over says so with an event."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000), monthly=usd(50_000)))
    _, state = run_on(state, request(800, auth="a1"))
    events, state = run_on(state, force_post(300))
    breaches = [e for e in events if isinstance(e, CapBreachedByIssuer)]
    assert [(b.cap, b.limit.amount_minor, b.spent.amount_minor, b.over_by.amount_minor) for b in breaches] == [
        (CapKind.WALLET_ROLLING_24H, 1_000, 1_100, 100)
    ]
    assert _usage(state) == (300, 800)


def test_clearing_above_the_hold_that_breaches_is_reported() -> None:
    """A capture larger than its hold is money moved without asking: over a cap, it is reported."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, request(1_000, auth="a1"))
    events, _ = run_on(state, cleared("a1", 1_200))
    assert [(e.cap, e.over_by.amount_minor) for e in events if isinstance(e, CapBreachedByIssuer)] == [
        (CapKind.WALLET_ROLLING_24H, 200)
    ]


def test_holds_without_clearing_expire_after_seven_days() -> None:
    """A hold nobody clears is released after 7 days, with an expiry event for the ledger."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, request(1_000, auth="a1"))
    later = NOW + timedelta(days=7, seconds=1)
    events, state = run_on(state, request(1_000, auth="a2", at=later), at=later)
    assert [(type(e).__name__, getattr(e, "cause", None), getattr(e, "approved", None)) for e in events] == [
        ("AuthorizationExpired", "hold_timeout", None),
        ("MoneyMoved", None, None),
        ("AuthorizationDecided", None, True),
    ]
    moved = next(e for e in events if isinstance(e, MoneyMoved))
    assert (moved.source_type, moved.hold_released_minor, moved.spent_minor) == ("authorization_expired", 1_000, 0)
    assert list(state.holds) == ["a2"]


def test_a_refund_without_its_decision_in_memory_lands_on_the_trace_of_its_open_hold() -> None:
    """Bought on PR-1, captured in part (the rest still held), the card rebound to PR-2, and the
    decision no longer in memory (a restart): the refund is counted against PR-1, the hold's trace.
    """
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    bind = partial(BindTrace, card_id=CARD)
    _, state = run_on(state, bind(**command_fields(), trace_id="PR-1"), request(500, auth="a1"),
                      cleared("a1", 200, final=False), bind(**command_fields(), trace_id="PR-2"))  # fmt: skip
    events, _ = run_on(state.evolve(decisions={}), refund(100, auth="a1"))
    [moved] = [e for e in events if isinstance(e, MoneyMoved)]
    assert (moved.trace_id, moved.spent_minor) == ("PR-1", -100)


def _moved(events: list[object]) -> list[tuple[int, int, int, int]]:
    """(version, placed, released, spent) of each MoneyMoved."""
    return [
        (e.schema_version, e.hold_placed_minor, e.hold_released_minor, e.spent_minor)
        for e in events
        if isinstance(e, MoneyMoved)
    ]


def test_an_authorization_the_issuer_approved_without_asking_is_held_over_the_cap_and_reported() -> None:
    """A stand-in approval of $4.00 on a wallet with $8.00 held of $10.00: held all the same (the money
    is held at the issuer), the breach reported, a MoneyMoved version 2 for the ledger; the next
    request finds the cap used up. Then it clears like any hold.
    """
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, request(800, auth="a1"))
    events, state = run_on(state, approved_by_issuer("s1", 400))
    assert _moved(events) == [(2, 400, 0, 0)]
    assert [(e.cap, e.over_by.amount_minor, e.issuer_transaction_id) for e in events
            if isinstance(e, CapBreachedByIssuer)] == [(CapKind.WALLET_ROLLING_24H, 200, "s1")]  # fmt: skip
    assert _usage(state) == (0, 1_200)
    events, state = run_on(state, request(1, auth="a2"), cleared("s1", 400))
    assert events[0].reason == ReasonCode.WALLET_ROLLING_24H_CAP
    assert (_moved(events), _usage(state)) == ([(1, 0, 400, 400)], (400, 800))


def test_our_own_approval_confirmed_by_the_issuer_is_held_once() -> None:
    """The issuer approving what we approved (and hold) changes nothing; said twice, it still does not."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    events, state = run_on(state, request(500, auth="a1"), approved_by_issuer("a1", 500), approved_by_issuer("a1", 500))
    assert (_moved(events), _usage(state)) == ([], (0, 500))


def test_a_decline_the_issuer_approved_anyway_is_held_and_our_deadline_does_not_release_it() -> None:
    """We declined (over the cap); the issuer approved all the same: the amount is held. Our own
    deadline's expiry, said after it (a late relay), leaves it held; the issuer's reversal ends it.
    """
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    events, state = run_on(state, request(1_500, auth="a1"), approved_by_issuer("a1", 1_500), expired("a1"))
    assert (events[0].approved, _moved(events), _usage(state)) == (False, [(2, 1_500, 0, 0)], (0, 1_500))
    events, state = run_on(state, reversed_("a1", 0, full=True))
    assert (_moved(events), _usage(state)) == ([(1, 0, 1_500, 0)], (0, 0))


def test_our_deadline_then_the_issuers_approval_holds_and_a_late_request_is_declined() -> None:
    """Our deadline passed before any decision (its expiry first); the issuer approved anyway: held.
    The request, arriving last, is declined and holds nothing more.
    """
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    events, state = run_on(state, expired("a9"), approved_by_issuer("a9", 300), request(300, auth="a9"))
    decisions = [e for e in events if hasattr(e, "approved")]
    assert [(d.approved, d.reason) for d in decisions] == [(False, ReasonCode.DEADLINE_EXCEEDED)]
    assert (_moved(events), _usage(state)) == ([(2, 300, 0, 0)], (0, 300))


def test_a_late_approval_released_at_our_deadline_is_held_again_when_the_issuer_approved() -> None:
    """We approved after our deadline (the hold released by its expiry); the issuer approved anyway
    (our decline was too late for it): held again, once.
    """
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    events, state = run_on(state, request(600, auth="a1"), expired("a1"), approved_by_issuer("a1", 600))
    assert (_moved(events), _usage(state)) == ([(1, 0, 600, 0), (2, 600, 0, 0)], (0, 600))


def test_the_issuers_approvals_are_forgotten_with_the_rest() -> None:
    """What the issuer approved is remembered as long as decisions are (MEMORY_HORIZON), not forever."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, approved_by_issuer("s1", 100))
    assert "s1" in state.issuer_held
    _, state = run_on(state, request(1, auth="later"), at=NOW + timedelta(days=9))
    assert "s1" not in state.issuer_held


def test_an_increment_the_issuer_approved_without_us_grows_the_hold() -> None:
    """We hold $5.00; the issuer says it holds $8.00 (an increment approved without us): the hold
    grows by $3.00, over the $7.00 cap, reported; said again, nothing more.
    """
    state = wallet(WalletCaps(rolling_24h=usd(700)))
    _, state = run_on(state, request(500, auth="a1"))
    events, state = run_on(state, approved_by_issuer("a1", 800), approved_by_issuer("a1", 800))
    assert _moved(events) == [(2, 300, 0, 0)]
    assert [(e.cap, e.over_by.amount_minor) for e in events if isinstance(e, CapBreachedByIssuer)] == [
        (CapKind.WALLET_ROLLING_24H, 100)
    ]
    assert _usage(state) == (0, 800)


def test_a_hold_the_issuer_placed_is_never_placed_again_once_it_ended() -> None:
    """Placed, then captured: the same authorization approved again (a late delivery under another
    event id) holds nothing more.
    """
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    events, state = run_on(state, approved_by_issuer("s1", 300), cleared("s1", 300), approved_by_issuer("s1", 300))
    assert (_moved(events), _usage(state)) == ([(2, 300, 0, 0), (1, 0, 300, 300)], (300, 0))


def test_our_deadlines_expiry_of_a_request_reusing_an_id_leaves_the_first_ones_hold() -> None:
    """$5.00 approved as a1. Another request reused a1 for $9.00 (or on another card) at another
    gateway, got the first decision repeated, was declined, and its deadline's expiry names its own
    amount: a1's hold stays. The expiry of a1's own request ($5.00 on its card) releases it. With
    the decision no longer in memory, the hold is compared instead.
    """
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, request(500, auth="a1"))
    _, kept = run_on(state, expired("a1", amount_minor=900), expired("a1", amount_minor=500, card="card_9"))
    _, released = run_on(state, expired("a1", amount_minor=500))
    assert (_usage(kept), _usage(released)) == ((0, 500), (0, 0))
    forgotten = state.evolve(decisions={})
    _, kept = run_on(forgotten, expired("a1", amount_minor=900))
    _, released = run_on(forgotten, expired("a1", amount_minor=500))
    assert (_usage(kept), _usage(released)) == ((0, 500), (0, 0))
