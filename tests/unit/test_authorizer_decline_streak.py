"""Declines in a row that freeze a card (issue 21): a runaway agent hammering a declined card is
stopped by the authorizer itself, and the freeze is an event the notifier says in Slack.
"""

from __future__ import annotations

from typing import Any

from schemas.authorizations import AuthorizationDecided
from schemas.common import ReasonCode
from schemas.wallet import SetDeclineStreakLimit, StatusChanged, UnfreezeCard
from tests.support.builders import CARD, command_fields, request, run_on, usd, wallet


def _limit(most: int | None, card: str | None = None) -> SetDeclineStreakLimit:
    return SetDeclineStreakLimit(**command_fields(), card_id=card, max_declines=most)


def _reasons(events: list[Any]) -> list[ReasonCode]:
    return [event.reason for event in events if isinstance(event, AuthorizationDecided)]


def _frozen(events: list[Any]) -> list[StatusChanged]:
    return [event for event in events if isinstance(event, StatusChanged)]


def test_the_nth_decline_in_a_row_freezes_the_card_and_says_why() -> None:
    """3 declines in a row ($20 asked of a $10 card): the 3rd freezes the card; the 4th is
    declined `card_frozen`, and not counted.
    """
    state = wallet(funded_amount=usd(1_000))
    _, state = run_on(state, _limit(3))
    events, state = run_on(state, *(request(2_000, auth=f"d{n}") for n in range(4)))
    [frozen] = _frozen(events)
    assert _reasons(events) == [ReasonCode.CARD_FUNDS_INSUFFICIENT] * 3 + [ReasonCode.CARD_FROZEN]
    assert (frozen.card_id, frozen.status, frozen.command_id, state.cards[CARD].status) == (
        CARD,
        "frozen",
        None,
        "frozen",
    )
    assert "3 declines in a row" in frozen.reason


def test_an_approval_ends_the_streak_and_an_unfreeze_starts_a_new_one() -> None:
    """decline, decline, approval, decline, decline: never 3 in a row. Frozen, then unfrozen: the
    next decline is the first of a new streak.
    """
    state = wallet(funded_amount=usd(10_000))
    _, state = run_on(state, _limit(3, card=CARD))
    asks = [request(amount, auth=f"a{n}") for n, amount in enumerate([20_000, 20_000, 100, 20_000, 20_000])]
    events, state = run_on(state, *asks)
    assert (_frozen(events), state.declines_in_a_row) == ([], {CARD: 2})
    more, state = run_on(state, request(20_000, auth="third"))
    again, state = run_on(
        state, UnfreezeCard(**command_fields(), card_id=CARD, reason="looked at"), request(20_000, auth="new")
    )
    assert (len(_frozen(more)), _frozen(again)[0].status, state.declines_in_a_row) == (1, "active", {CARD: 1})


def test_a_redelivered_decline_counts_once_and_a_lifted_limit_counts_nothing() -> None:
    """The same declined request twice is one decline; with the limit lifted, nothing is counted."""
    state = wallet(funded_amount=usd(1_000))
    _, state = run_on(state, _limit(2))
    events, counted = run_on(state, request(2_000, auth="same"), request(2_000, auth="same"))
    _, lifted = run_on(counted, _limit(None), request(2_000, auth="other"))
    assert (_frozen(events), counted.declines_in_a_row, lifted.declines_in_a_row) == ([], {CARD: 1}, {})
