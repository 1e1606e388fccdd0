"""Velocity limits (issue 21): at most N authorizations per rolling minute or hour on a card or a
wallet, whatever their amounts, so that a runaway retry loop stops at exactly N.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from schemas.authorizations import AuthorizationDecided
from schemas.common import ReasonCode
from schemas.wallet import CommandRejected, FreezeCard, SetVelocityLimit, VelocityLimitSet
from tests.support.builders import CARD, NOW, command_fields, request, run_on, usd, wallet


def _limited(most: int | None, per: Literal["minute", "hour"] = "minute", card: str | None = CARD) -> Any:
    return SetVelocityLimit(**command_fields(), card_id=card, max_authorizations=most, per=per)


def _reasons(events: list[Any]) -> list[ReasonCode]:
    return [event.reason for event in events if isinstance(event, AuthorizationDecided)]


def test_a_tight_loop_is_stopped_at_exactly_n() -> None:
    """3 a minute: the first 3 are decided as ever, the 4th and 5th declined `velocity_limit`."""
    state = wallet(funded_amount=usd(10_000))
    _, state = run_on(state, _limited(3))
    events, _ = run_on(state, *(request(100, auth=f"loop{n}", at=NOW + timedelta(seconds=n)) for n in range(5)))
    assert _reasons(events) == [ReasonCode.APPROVED] * 3 + [ReasonCode.VELOCITY_LIMIT] * 2


def test_the_window_rolls_and_declined_attempts_count_too() -> None:
    """Declined attempts (a frozen card) count; once the minute has passed since the oldest, one more."""
    state = wallet(funded_amount=usd(10_000))
    _, state = run_on(state, _limited(2), FreezeCard(**command_fields(), card_id=CARD, reason="runaway"))
    events, state = run_on(state, *(request(100, auth=f"f{n}", at=NOW + timedelta(seconds=n)) for n in range(3)))
    later, _ = run_on(state, request(100, auth="later", at=NOW + timedelta(seconds=61)))
    assert (_reasons(events), _reasons(later)) == ([ReasonCode.CARD_FROZEN] * 3, [ReasonCode.CARD_FROZEN])
    _, unfrozen = run_on(state, _limited(2))  # the limit set again: the times asked stay
    assert unfrozen.asked_at == state.asked_at


def test_a_wallet_limit_counts_every_card_and_a_lifted_limit_counts_nothing() -> None:
    """A wallet-wide limit of 2 an hour: the 3rd is declined; lifted, the next is approved."""
    state = wallet(funded_amount=usd(10_000))
    _, state = run_on(state, _limited(2, per="hour", card=None))
    events, state = run_on(state, *(request(100, auth=f"w{n}") for n in range(3)))
    lifted, state = run_on(state, _limited(None, card=None), request(100, auth="after"))
    assert (_reasons(events), _reasons(lifted), state.velocity, state.asked_at) == (
        [ReasonCode.APPROVED, ReasonCode.APPROVED, ReasonCode.VELOCITY_LIMIT],
        [ReasonCode.APPROVED],
        {},
        {},
    )


def test_a_redelivered_request_is_not_counted_again() -> None:
    """The same authorization twice (a redelivery) is one authorization asked."""
    state = wallet(funded_amount=usd(10_000))
    _, state = run_on(state, _limited(2))
    events, _ = run_on(state, request(100, auth="r1"), request(100, auth="r1"), request(100, auth="r2"))
    assert _reasons(events) == [ReasonCode.APPROVED] * 3


def test_the_limit_is_said_and_an_unknown_card_refused() -> None:
    """The command's event says the limit; a card the wallet does not have is rejected."""
    state = wallet()
    said, _ = run_on(state, _limited(5, per="hour"))
    refused, _ = run_on(state, _limited(5, card="card_x"))
    assert [(e.max_authorizations, e.per) for e in said if isinstance(e, VelocityLimitSet)] == [(5, "hour")]
    assert [type(e) for e in refused] == [CommandRejected]
