"""The fast `decide` (issue 20: decisions encoded straight from integers) gives, for every message
of 100,000 generated sequences, what the reference it replaced gives: the same decision bytes
(outcome, reason, failed cap, every cap's limit, spend, holds, remaining and over-by, trace, times),
the same other events and the same wallet state.

Sequences come from a seeded generator rather than hypothesis: a hundred thousand of them must run
in under a minute. Each starts from one of a few dozen wallets with varied caps (every cap kind,
some absent), time zones, merchant rules, a trace bound to a card or to the whole wallet, and goes
through requests (near every cap's edge, unknown cards, late, other currencies with and without a
rate, redelivered), captures, reversals, expiries, refunds, freezes, raises and the clock moving
(across days and months). `EQUIVALENCE_SEQUENCES` changes the count.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind, Issuer, Merchant
from schemas.money import Money
from schemas.policies import CardCaps, WalletCaps
from schemas.wallet import BindTrace, CreateCard, CreateWallet, FreezeCard, RaiseCap, UnfreezeCard
from services.authorizer.decide import Decided, applicable_caps, wallet_caps
from services.authorizer.domain import Inbound, decide
from services.authorizer.reference import reference_applicable_caps, reference_decide, reference_wallet_caps
from services.authorizer.state import RateTable, WalletState, remember
from tests.support.builders import NOW, cleared, expired, force_post, refund, reversed_, usd

pytestmark = pytest.mark.unit

SEQUENCES = int(os.environ.get("EQUIVALENCE_SEQUENCES", "100000"))
WALLETS = 48
STEPS = (1, 6)  # messages per sequence, at least and at most
WALLET, CARDS, TRACE = "wal_eq", ("card_a", "card_b"), 'PR-"7\\x'
RATES = RateTable({("EUR", "USD"): Fraction("1.0852"), ("JPY", "USD"): Fraction("0.0067")})
MERCHANTS = (
    Merchant(name="Anthropic", mcc="5734", network_id="anthropic_api_1", country="US", city="San Francisco"),
    Merchant(name='Café "Zürich" \\ \u2028', mcc="5812", network_id="cafe_1", country="CH"),
    Merchant(name="GPU Cloud", mcc="7372", network_id="gpu_1"),
)
ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")


def _maybe(rng: random.Random, low: int, high: int) -> Money | None:
    return None if rng.random() < 0.3 else usd(rng.randint(low, high))


def _rarely(rng: random.Random, low: int, high: int) -> Money | None:
    """A cap most wallets do not have (weekly, yearly, all time)."""
    return None if rng.random() < 0.7 else usd(rng.randint(low, high))


def _wallet(rng: random.Random) -> WalletState:
    """A wallet with two cards and varied caps and rules, built through the commands."""
    at = NOW - timedelta(days=rng.randint(0, 40))
    fields: dict[str, Any] = {"wallet_id": WALLET, "actor": "eq", "issued_at": at}
    caps = WalletCaps(rolling_24h=_maybe(rng, 500, 5_000), monthly=_maybe(rng, 500, 20_000),
                      per_trace=_maybe(rng, 300, 3_000), per_authorization=_maybe(rng, 500, 3_000),
                      weekly=_rarely(rng, 1_000, 10_000), yearly=_rarely(rng, 2_000, 40_000),
                      all_time=_rarely(rng, 2_000, 40_000))  # fmt: skip
    messages: list[Inbound] = [
        CreateWallet(command_id=uuid.uuid4(), **fields, caps=caps, time_zone=rng.choice(ZONES)),
    ]
    for card_id in CARDS:
        block = rng.choice((frozenset(), frozenset({"5812"})))
        allow = rng.choice((frozenset(), frozenset({"5734", "7372"}))) if not block else frozenset()
        messages.append(
            CreateCard(
                command_id=uuid.uuid4(), **fields, card_id=card_id, issuer=Issuer.STRIPE,
                issuer_card_token=f"tok_{card_id}", last4="4242", funded_amount=_maybe(rng, 1_000, 8_000),
                caps=CardCaps(per_authorization=_maybe(rng, 500, 3_000), rolling_24h=_maybe(rng, 500, 5_000),
                              monthly=_maybe(rng, 500, 20_000), weekly=_rarely(rng, 1_000, 10_000),
                              yearly=_rarely(rng, 2_000, 40_000), all_time=_rarely(rng, 2_000, 40_000)),
                mcc_allow=allow, mcc_block=block, merchant_lock=rng.choice((None, None, None, None, "anthropic_api_1")),
                expires_at=rng.choice((None, None, None, NOW + timedelta(days=rng.randint(30, 120)))),
            )
        )  # fmt: skip
    scope = rng.choice((CARDS[0], None))
    messages.append(BindTrace(command_id=uuid.uuid4(), **fields, trace_id=TRACE, card_id=scope,
                              cap=_maybe(rng, 200, 2_500)))  # fmt: skip
    state: WalletState | None = None
    for message in messages:
        _, state = decide(state, message, at)
    assert state is not None
    return state


def _request(rng: random.Random, state: WalletState, now: datetime, index: int) -> AuthorizationRequested:
    card_id = rng.choice((*CARDS, *CARDS, "card_unknown"))
    amount_minor = rng.randint(1, 2_500)
    if card_id in state.cards and rng.random() < 0.4:  # at the edge of the tightest cap
        checks = applicable_caps(state, card_id, None, now)
        if checks:
            tightest = min(c.limit_minor - c.spent_minor - c.held_minor for c in checks)
            amount_minor = max(1, tightest + rng.randint(-1, 1))
    currency = rng.choices(("USD", "EUR", "JPY", "GBP"), (12, 2, 1, 1))[0]
    amount = Money.of(amount_minor, currency)
    requested_at = now - timedelta(seconds=rng.choice((0, 0, 1, 5)))
    return AuthorizationRequested(
        event_id=uuid.uuid4(), wallet_id=WALLET, card_id=card_id, issuer=Issuer.STRIPE,
        issuer_authorization_id=f"eq_{index}", amount=amount, merchant_amount=amount, merchant=rng.choice(MERCHANTS),
        requested_at=requested_at, deadline_at=requested_at + timedelta(seconds=rng.choice((2,) * 9 + (0,))),
    )  # fmt: skip


def _message(rng: random.Random, state: WalletState, now: datetime, index: int, asked: list[str]) -> Inbound:  # noqa: PLR0911 - one return per kind
    kind = rng.choices(
        ("request", "redeliver", "clear", "reverse", "expire", "refund", "force", "freeze", "unfreeze", "raise"),
        (40, 4, 12, 5, 4, 3, 2, 2, 2, 2),
    )[0]
    held = list(state.holds) or asked
    if kind == "request" or (kind != "refund" and not held) or (kind == "redeliver" and not asked):
        request = _request(rng, state, now, index)
        asked.append(request.issuer_authorization_id)
        return request
    if kind == "redeliver":
        again = rng.choice(asked)
        return AuthorizationRequested.model_validate(_request(rng, state, now, index).model_dump()
                                                     | {"issuer_authorization_id": again})  # fmt: skip
    if kind == "refund" or not held:  # only a refund may name no authorization
        return refund(rng.randint(1, 800), now, auth=rng.choice((None, *held[:1])))
    auth = rng.choice(held)
    if kind == "clear":
        return cleared(auth, rng.randint(0, 3_000), now, final=rng.random() < 0.8)
    if kind == "reverse":
        return reversed_(auth, rng.randint(0, 1_500), now, full=rng.random() < 0.3)
    if kind == "expire":
        return expired(auth, now)
    if kind == "force":
        return force_post(rng.randint(1, 900), now)
    fields: dict[str, Any] = {"command_id": uuid.uuid4(), "wallet_id": WALLET, "actor": "eq", "issued_at": now}
    if kind == "freeze":
        return FreezeCard(**fields, card_id=rng.choice(CARDS), reason="eq")
    if kind == "unfreeze":
        return UnfreezeCard(**fields, card_id=rng.choice(CARDS), reason="eq")
    cap = rng.choice((CapKind.WALLET_ROLLING_24H, CapKind.CARD_FUNDED, CapKind.TRACE))
    return RaiseCap(
        **fields, cap=cap, card_id=CARDS[0] if cap == CapKind.CARD_FUNDED else None,
        trace_id=TRACE if cap == CapKind.TRACE else None, amount=usd(rng.randint(100, 1_000)),
        until=now + timedelta(hours=rng.randint(1, 30)),
    )  # fmt: skip


def _as_bytes(event: Any) -> Any:
    """A decision as the bytes published (the fast one's payload, the reference's JSON); others as they are."""
    if isinstance(event, Decided):
        return event.payload
    if isinstance(event, AuthorizationDecided):
        return remember(event)[1]
    return event


def _step(state: WalletState, message: Inbound, now: datetime) -> WalletState:
    fast_events, fast_state = decide(state, message, now, RATES)
    reference_events, reference_state = reference_decide(state, message, now, RATES)
    assert [_as_bytes(e) for e in fast_events] == [_as_bytes(e) for e in reference_events], message
    assert fast_state == reference_state, message
    for event in fast_events:
        if isinstance(event, Decided):  # the fields the runtime reads agree with the bytes
            contract = event.contract()
            assert (event.approved, event.reason, event.failed_cap, event.trace_id, event.event_id) == (
                contract.approved, contract.reason, contract.failed_cap, contract.trace_id, contract.event_id,
            )  # fmt: skip
    assert fast_state is not None
    for card_id in CARDS:  # the caps as lifecycle events and the API see them, computed both ways
        for trace_id in (None, TRACE):
            assert applicable_caps(fast_state, card_id, trace_id, now) == reference_applicable_caps(
                fast_state, card_id, trace_id, now
            )
    assert wallet_caps(fast_state, now) == reference_wallet_caps(fast_state, now)
    return fast_state


@pytest.mark.slow
def test_fast_decide_agrees_with_the_reference_on_generated_sequences() -> None:
    """For every message of every sequence: the same events, byte for byte, and the same state."""
    rng = random.Random(20)
    wallets = [_wallet(rng) for _ in range(WALLETS)]
    decisions = 0
    for sequence in range(SEQUENCES):
        state, now = rng.choice(wallets), NOW + timedelta(minutes=rng.randint(0, 90 * 24 * 60))
        asked: list[str] = []
        for step in range(rng.randint(*STEPS)):
            message = _message(rng, state, now, sequence * 10 + step, asked)
            decisions += isinstance(message, AuthorizationRequested)
            state = _step(state, message, now)
            now += rng.choice((timedelta(0), timedelta(seconds=3), timedelta(hours=5), timedelta(days=9)))
    assert decisions > SEQUENCES
