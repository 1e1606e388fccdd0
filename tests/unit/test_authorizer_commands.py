"""Wallet commands: applied once, in log order, rejected with a reason when they cannot apply."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from schemas.common import CapKind, Issuer, ReasonCode
from schemas.policies import PolicyTemplate, WalletCaps, template_caps
from schemas.wallet import (
    AnyWalletCommand,
    BindTrace,
    CloseCard,
    CreateCard,
    CreateWallet,
    RaiseCap,
    UnfreezeCard,
    UpdateCaps,
)
from services.authorizer.domain import decide
from services.authorizer.state import WalletState
from services.platform.postgres import transient
from tests.support.builders import CARD, NOW, command_fields, request, run, run_on, usd, wallet


def _types(events: list[object]) -> list[str]:
    return [getattr(event, "type", "") for event in events]


def test_create_wallet_from_a_template_gets_the_starter_caps() -> None:
    """A wallet created from `starter` has the template's four caps and its raise step."""
    events, state = decide(None, CreateWallet(**command_fields(), template=PolicyTemplate.STARTER), NOW)
    assert state is not None
    assert (_types(list(events)), state.caps, state.raise_step) == (
        ["wallet_created"],
        template_caps(PolicyTemplate.STARTER, "USD"),
        usd(1_000),
    )


def test_a_command_id_seen_twice_is_applied_once() -> None:
    """Retrying a command changes nothing the second time."""
    state = wallet()
    bind = BindTrace(**command_fields(), trace_id="PR-1")
    first, once = run_on(state, bind)
    second, twice = run_on(once, bind)
    assert (_types(first), second, twice) == (["trace_bound"], [], once)


def test_commands_that_cannot_apply_are_rejected_and_change_nothing() -> None:
    """Unknown cards, duplicates, wrong currencies and a closed card's unfreeze are rejected with reasons."""
    state = wallet()
    _, closed = run_on(state, CloseCard(**command_fields(), card_id=CARD, reason="done"))
    cases: list[tuple[WalletState, AnyWalletCommand]] = [
        (state, CreateWallet(**command_fields())),
        (state, UnfreezeCard(**command_fields(), card_id="card_x", reason="r")),
        (
            state,
            CreateCard(**command_fields(), card_id=CARD, issuer=Issuer.STRIPE, issuer_card_token="t", last4="1111"),
        ),
        (
            state,
            CreateCard(
                **command_fields(), card_id="card_2", issuer=Issuer.STRIPE, issuer_card_token="ic_1", last4="1111"
            ),
        ),
        (
            state,
            UpdateCaps(
                **command_fields(), wallet_caps=WalletCaps(monthly=usd(1).model_copy(update={"currency": "EUR"}))
            ),
        ),
        (closed, UnfreezeCard(**command_fields(), card_id=CARD, reason="r")),
    ]
    outcomes = [run(before, command) for before, command in cases]
    assert [getattr(events[0], "error", "") for events, _ in outcomes] == [
        "wallet wal_1 already exists",
        "card card_x does not exist on wallet wal_1",
        "card card_1 already exists",
        "stripe card token ic_1 is card card_1's",
        "amount in EUR on a USD wallet",
        "card card_1 is closed",
    ]
    assert [after for _, after in outcomes] == [before for before, _ in cases]
    events, _ = run(None, BindTrace(**command_fields(), trace_id="PR-1"))
    assert getattr(events[0], "error", "") == "wallet wal_1 does not exist"


def test_a_temporary_raise_lets_the_declined_authorization_through_until_it_ends() -> None:
    """Raise the rolling cap by $5 for an hour: approved now, declined again after the hour."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    _, state = run_on(state, request(1_000, auth="a1"))
    raise_cap = RaiseCap(
        **command_fields(), cap=CapKind.WALLET_ROLLING_24H, amount=usd(500), until=NOW + timedelta(hours=1)
    )
    events, _ = run_on(state, raise_cap, request(500, auth="a2"))
    assert [getattr(e, "new_limit", None) or getattr(e, "reason", None) for e in events] == [
        usd(1_500),
        ReasonCode.APPROVED,
    ]
    later = NOW + timedelta(hours=1, seconds=1)
    after, _ = run_on(state, raise_cap, request(500, auth="a3", at=later), at=later)
    assert getattr(after[-1], "reason", None) == ReasonCode.WALLET_ROLLING_24H_CAP


def test_a_raise_above_the_wallet_maximum_is_refused() -> None:
    """An approval may not lift a cap past the wallet's configured maximum."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)), max_raise=usd(1_200))
    too_much = RaiseCap(
        **command_fields(), cap=CapKind.WALLET_ROLLING_24H, amount=usd(500), until=NOW + timedelta(hours=1)
    )
    events, after = run_on(state, too_much)
    assert (getattr(events[0], "error", ""), after) == (
        "raising wallet_rolling_24h to 1500 exceeds the wallet's maximum 12.00 USD",
        state,
    )


def test_a_failure_is_retried_only_when_reading_the_batch_again_may_succeed() -> None:
    """Postgres away or restarting: retried. A constraint, a value refused, a bug: taken apart instead."""
    cases = {
        "connection lost": (ConnectionResetError("reset"), True),
        "postgres restarting": (asyncpg.CannotConnectNowError("starting up"), True),
        "connection closed": (asyncpg.ConnectionDoesNotExistError("closed"), True),
        "serialization": (asyncpg.SerializationError("retry"), True),
        "protocol confused by a restart": (
            asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
            True,
        ),
        "unique": (asyncpg.UniqueViolationError("duplicate key"), False),
        "check": (asyncpg.CheckViolationError("check"), False),
        "numeric range": (asyncpg.NumericValueOutOfRangeError("out of range"), False),
        "argument refused by asyncpg": (asyncpg.exceptions._base.DataError("invalid input for $1"), False),  # noqa: SLF001 - asyncpg exports it only there
        "a bug": (KeyError("card"), False),
    }
    assert {name: transient(error) for name, (error, _) in cases.items()} == {
        name: transient for name, (_, transient) in cases.items()
    }
