"""`decide_us`: the authorizer's pure `decide` timed alone, on one core, with no I/O.

The wallet is a realistic busy one: every wallet cap (rolling 24 h, monthly, per trace, per
authorization), every card cap plus a funded balance, a trace bound to the card, 1,000 postings
spread over the last 24 h (approved, then cleared through `decide` itself), 200 holds still open
and the 1,200 decisions those made remembered. Each timed call decides a new authorization that
is approved (so it places a hold and remembers a decision, the most expensive outcome), on the
state the previous call left, at one `now` (a batch decides every message at one instant).

Run alone: `python -m bench._decide` prints the figure; `bench.authorizer` writes it to
bench/results/authorizer.json.
"""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.authorizations import AuthorizationRequested
from schemas.common import Issuer
from schemas.issuer_events import AuthorizationCleared
from schemas.money import Money
from schemas.policies import CardCaps, WalletCaps
from schemas.wallet import BindTrace, CreateCard, CreateWallet
from services.authorizer.domain import Inbound, decide
from services.authorizer.state import WalletState
from tests.support.samples import MERCHANT

WALLET, CARD, TRACE = "bench_wallet", "bench_card", "PR-4823"
POSTINGS = 1_000
OPEN_HOLDS = 200
TIMED = 2_000
ROUNDS = 5
Decide = Callable[[WalletState | None, Inbound, datetime], tuple[Any, WalletState | None]]


def _usd(amount_minor: int) -> Money:
    return Money.of(amount_minor, "USD")


def _request(index: int, at: datetime, tag: str) -> AuthorizationRequested:
    return AuthorizationRequested(
        event_id=uuid.uuid4(), wallet_id=WALLET, card_id=CARD, issuer=Issuer.STRIPE,
        issuer_authorization_id=f"{tag}{index}", amount=_usd(100 + index % 7), merchant_amount=_usd(100 + index % 7),
        merchant=MERCHANT, requested_at=at, deadline_at=at + timedelta(hours=2),
    )  # fmt: skip


def busy_wallet(now: datetime, decide_: Decide = decide) -> WalletState:
    """The wallet described above, built through `decide_` as the log would have built it."""
    fields: dict[str, Any] = {"wallet_id": WALLET, "actor": "bench", "issued_at": now - timedelta(days=1)}
    big, per_call = _usd(10**10), _usd(10**6)
    created = now - timedelta(days=1)
    wallet_caps = WalletCaps(rolling_24h=big, monthly=big, per_trace=big, per_authorization=per_call)
    card_caps = CardCaps(per_authorization=per_call, rolling_24h=big, monthly=big)
    messages: list[tuple[Inbound, datetime]] = [
        (CreateWallet(command_id=uuid.uuid4(), **fields, caps=wallet_caps), created),
        (CreateCard(command_id=uuid.uuid4(), **fields, card_id=CARD, issuer=Issuer.STRIPE,
                    issuer_card_token=f"{CARD}_token", last4="4242", caps=card_caps, funded_amount=big), created),
        (BindTrace(command_id=uuid.uuid4(), **fields, card_id=CARD, trace_id=TRACE, cap=big), created),
    ]  # fmt: skip
    step = timedelta(hours=23) / (POSTINGS + OPEN_HOLDS)
    for index in range(POSTINGS + OPEN_HOLDS):
        at = now - timedelta(hours=23) + index * step
        request = _request(index, at, "setup")
        messages.append((request, at))
        if index < POSTINGS:
            cleared = AuthorizationCleared(
                event_id=uuid.uuid4(), wallet_id=WALLET, card_id=CARD, issuer=Issuer.STRIPE, occurred_at=at,
                issuer_authorization_id=request.issuer_authorization_id, issuer_transaction_id=f"itx{index}",
                amount=request.amount, final=True,
            )  # fmt: skip
            messages.append((cleared, at))
    state: WalletState | None = None
    for message, at in messages:
        _, state = decide_(state, message, at)
    if state is None:
        raise RuntimeError("the bench wallet was not created")
    return state


def decide_us(decide_: Decide = decide, rounds: int = ROUNDS) -> float:
    """The median over `rounds` of the mean µs per `decide_` call on the busy wallet (see above)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = busy_wallet(now, decide_)
    means = []
    for round_ in range(rounds):
        requests = [_request(index, now, f"r{round_}-") for index in range(TIMED)]
        state: WalletState | None = start
        gc.collect()
        began = time.process_time_ns()
        for request in requests:
            decision, state = decide_(state, request, now)
        means.append((time.process_time_ns() - began) / TIMED / 1000)
        if state is None or not decision[-1].approved:
            raise RuntimeError(f"the bench's last request was not approved: {decision[-1]!r}")
    return round(statistics.median(means), 2)


if __name__ == "__main__":
    print(f"decide_us: {decide_us()}")
