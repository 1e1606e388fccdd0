"""Incremental authorizations (issue 21): an increment is decided against every cap for its own
amount and, approved, grows the hold of the authorization it adds to; our deadline's expiry of an
approved increment shrinks that hold back by what it added, once.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind, ReasonCode
from schemas.policies import WalletCaps
from schemas.wallet import MoneyMoved
from services.authorizer.decide import Decided
from services.authorizer.domain import decide
from services.authorizer.spendable import spendable
from services.authorizer.state import WalletState, hold_of
from tests.support.builders import CARD, NOW, approved_by_issuer, cleared, expired, request, run_on, usd, wallet


def increment(auth: str, number: int, amount_minor: int, card: str = CARD) -> AuthorizationRequested:
    """Stripe's increment `number` of `auth`: an id of its own, the authorization it adds to."""
    return request(amount_minor, auth=f"{auth}:evt_{number}", card=card, schema_version=2, increment_of=auth)


def _ten_dollar_card() -> WalletState:
    """$6.00 approved on a card funded with $10.00 (wallet caps far above)."""
    state = wallet(WalletCaps(rolling_24h=usd(100_000), monthly=usd(100_000)), funded_amount=usd(1_000))
    _, state = run_on(state, request(600, auth="iauth_h"))
    return state


def _decisions(events: list[Any]) -> list[tuple[bool, ReasonCode, CapKind | None]]:
    return [(e.approved, e.reason, e.failed_cap) for e in events if isinstance(e, AuthorizationDecided)]


def _held(state: WalletState, auth: str = "iauth_h") -> int | None:
    hold = hold_of(state, auth)
    return None if hold is None else hold.amount_minor


def test_an_approved_increment_grows_the_authorizations_hold_and_counts_against_every_cap() -> None:
    """$6 held; +$3 approved (hold $9); +$2 declined by the funded balance ($1 left); the
    authorization is then captured for its $9 in full, and the card has $1 left to spend.
    """
    state = _ten_dollar_card()
    events, state = run_on(state, increment("iauth_h", 1, 300), increment("iauth_h", 2, 200))
    grown = _held(state)
    assert (_decisions(events), grown, spendable(state, CARD, NOW).amount_minor) == (
        [(True, ReasonCode.APPROVED, None), (False, ReasonCode.CARD_FUNDS_INSUFFICIENT, CapKind.CARD_FUNDED)],
        900,
        100,
    )
    _, state = run_on(state, cleared("iauth_h", 900))
    assert (_held(state), spendable(state, CARD, NOW).amount_minor) == (None, 100)


def test_an_increment_decision_is_version_2_and_names_its_authorization() -> None:
    """The decision's JSON is the contract's (version 2, `increment_of`; every field as the model
    writes it); its hold expiry is the authorization's own (an increment does not extend it).
    """
    state = _ten_dollar_card()
    before = hold_of(state, "iauth_h")
    events, _ = decide(state, increment("iauth_h", 1, 300), NOW)
    [decision] = events
    assert isinstance(decision, Decided)
    contract = decision.contract()
    assert json.loads(decision.payload) == json.loads(contract.model_dump_json())
    assert before is not None
    assert (contract.schema_version, contract.increment_of, contract.hold_expires_at) == (
        2,
        "iauth_h",
        before.expires_at,
    )


def test_a_redelivered_increment_gets_its_first_answer_and_grows_the_hold_once() -> None:
    """The same increment twice (Kafka redelivery, Stripe's retry): one growth."""
    state = _ten_dollar_card()
    events, state = run_on(state, increment("iauth_h", 1, 300), increment("iauth_h", 1, 300))
    assert (_decisions(events), _held(state)) == ([(True, ReasonCode.APPROVED, None)] * 2, 900)


def test_an_increment_of_nothing_held_on_the_card_is_declined() -> None:
    """No open hold under that id (never approved, captured already, another card's): declined
    `invalid_request`, nothing held.
    """
    state = _ten_dollar_card()
    _, captured = run_on(state, cleared("iauth_h", 600))
    unknown, _ = run_on(state, increment("iauth_x", 1, 100))
    after_capture, after = run_on(captured, increment("iauth_h", 1, 100))
    invalid = (False, ReasonCode.INVALID_REQUEST, None)
    assert (_decisions(unknown), _decisions(after_capture), _held(after)) == ([invalid], [invalid], None)


def test_our_deadline_on_an_approved_increment_shrinks_the_hold_back_once() -> None:
    """The gateway gave up on the +$3 (the issuer was answered decline): the hold goes back to $6,
    said in a MoneyMoved on the authorization; a second expiry of the same increment changes nothing.
    """
    state = _ten_dollar_card()
    _, state = run_on(state, increment("iauth_h", 1, 300))
    events, state = run_on(state, expired("iauth_h:evt_1", amount_minor=300))
    again, state = run_on(state, expired("iauth_h:evt_1"))
    [moved] = [event for event in events if isinstance(event, MoneyMoved)]
    assert (_held(state), moved.issuer_authorization_id, moved.hold_released_minor, again) == (
        600,
        "iauth_h",
        300,
        [],
    )


def test_an_expiry_that_overtakes_its_increment_declines_it() -> None:
    """Our deadline's expiry before the increment is decided: the late increment is declined."""
    state = _ten_dollar_card()
    events, state = run_on(state, expired("iauth_h:evt_1"), increment("iauth_h", 1, 300))
    assert (_decisions(events), _held(state)) == ([(False, ReasonCode.DEADLINE_EXCEEDED, None)], 600)


def test_an_increment_the_issuer_approved_anyway_stays_held_at_our_deadline() -> None:
    """The issuer held the +$3 whatever we answered (`issuing_authorization.updated` to $9): our
    deadline's expiry of the increment leaves the issuer's hold alone.
    """
    state = _ten_dollar_card()
    _, state = run_on(state, increment("iauth_h", 1, 300), approved_by_issuer("iauth_h", 900))
    _, state = run_on(state, expired("iauth_h:evt_1", amount_minor=300))
    assert _held(state) == 900


def test_an_expiry_of_a_declined_increment_changes_nothing() -> None:
    """A declined increment held nothing: its expiry releases nothing of the authorization."""
    state = _ten_dollar_card()
    _, state = run_on(state, increment("iauth_h", 1, 500))  # $11 in all: above the $10 card
    events, state = run_on(state, expired("iauth_h:evt_1", amount_minor=500))
    assert (_held(state), [e for e in events if isinstance(e, MoneyMoved)]) == (600, [])
