"""The oracle: after the storm, what must be true, measured from the final Kafka log and Postgres.

- decisions_lost: authorization ids on `auth.requests` with no decision on `auth.decisions`.
- answer_mismatches: decisions for one id that differ, and webhook answers that disagree with the
  recorded decision, except a decline at the deadline whose late approval was released (counted
  apart as `late_approvals_released`).
- cents_over_cap / approved_while_frozen: the authorizer's committed history (its outbox, in commit
  order) replayed per wallet with plain sums, independent of the decision module: at every approval,
  open holds + spend + the amount must fit the wallet's rolling cap (with the raises then in force)
  and the card's funded amount, and the card and wallet must not be frozen. An approved increment
  adds to the hold of the authorization it names.
- holds_leaked: holds still open after every approval was settled (cleared or reversed).
- ledger_mismatches: approvals missing from or doubled in the ledger, and `reconcile`'s mismatches.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind
from schemas.registry import parse
from schemas.topics import Topic, topic_name
from schemas.wallet import CapRaised, CapsUpdated, CardCreated, MoneyMoved, StatusChanged, WalletCreated
from services.ledger.store import reconcile
from services.platform.kafka import create_consumer, partition_count
from services.platform.settings import Settings


async def read_topic(settings: Settings, topic: Topic) -> list[Any]:
    """Every message of `topic`, from its beginning to its end now."""
    consumer = create_consumer(settings, [], group_id=None)
    name = topic_name(topic, settings.topic_prefix)
    await consumer.start()
    try:
        count = await partition_count(settings.kafka_bootstrap_servers, name)
        partitions = [TopicPartition(name, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        messages: list[Any] = []
        while any([await consumer.position(p) < ends[p] for p in partitions]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                messages += [parse(topic, record.value or b"") for record in records]
        return messages
    finally:
        await consumer.stop()


@dataclass
class _Wallet:
    base_limit: int | None = None
    raises: list[tuple[int, datetime]] = field(default_factory=list)
    holds: dict[str, tuple[str, int]] = field(default_factory=dict)  # authorization → (card, amount)
    spent: int = 0
    card_spent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    funded: dict[str, int | None] = field(default_factory=dict)
    frozen_cards: set[str] = field(default_factory=set)
    frozen: bool = False

    def limit(self, at: datetime) -> int | None:
        if self.base_limit is None:
            return None
        return self.base_limit + sum(amount for amount, until in self.raises if until > at)

    def card_exposure(self, card_id: str) -> int:
        return self.card_spent[card_id] + sum(amount for card, amount in self.holds.values() if card == card_id)


@dataclass
class Replay:
    """What the replay of the authorizer's history found."""

    cents_over_cap: int = 0
    approved_while_frozen: int = 0
    approvals: int = 0


def replay(history: list[Any]) -> Replay:
    """Plain sums over the authorizer's committed events, in commit order."""
    wallets: dict[str, _Wallet] = defaultdict(_Wallet)
    seen: set[str] = set()
    found = Replay()
    for event in history:
        wallet = wallets[event.wallet_id]
        if isinstance(event, AuthorizationDecided):
            if event.approved and event.issuer_authorization_id not in seen:
                seen.add(event.issuer_authorization_id)
                _approval(wallet, event, found)
        elif isinstance(event, MoneyMoved):
            _moved(wallet, event)
        else:
            _configure(wallet, event)
    return found


def _configure(wallet: _Wallet, event: Any) -> None:  # noqa: ANN401 - any wallet event
    """Caps, raises, cards and freezes as the authorizer applied them."""
    if isinstance(event, WalletCreated):
        wallet.base_limit = None if event.caps.rolling_24h is None else event.caps.rolling_24h.amount_minor
    elif isinstance(event, CardCreated):
        wallet.funded[event.card_id] = None if event.funded_amount is None else event.funded_amount.amount_minor
    elif isinstance(event, CapsUpdated) and event.wallet_caps is not None:
        rolling = event.wallet_caps.rolling_24h
        wallet.base_limit = None if rolling is None else rolling.amount_minor
    elif isinstance(event, CapRaised) and event.cap == CapKind.WALLET_ROLLING_24H:
        wallet.raises.append((event.amount.amount_minor, event.until))
    elif isinstance(event, StatusChanged) and event.card_id is None:
        wallet.frozen = event.status != "active"
    elif isinstance(event, StatusChanged) and event.card_id is not None:
        if event.status == "active":
            wallet.frozen_cards.discard(event.card_id)
        else:
            wallet.frozen_cards.add(event.card_id)


def _moved(wallet: _Wallet, event: MoneyMoved) -> None:
    if event.hold_placed_minor and event.issuer_authorization_id is not None:
        # A hold the issuer placed without our approval: over a cap if need be, but exposure from then on.
        _, held = wallet.holds.get(event.issuer_authorization_id, (event.card_id, 0))
        wallet.holds[event.issuer_authorization_id] = (event.card_id, held + event.hold_placed_minor)
    if event.issuer_authorization_id in wallet.holds:
        card, amount = wallet.holds[event.issuer_authorization_id]
        left = amount - event.hold_released_minor
        if left > 0:
            wallet.holds[event.issuer_authorization_id] = (card, left)
        else:
            del wallet.holds[event.issuer_authorization_id]
    wallet.spent += event.spent_minor
    wallet.card_spent[event.card_id] += event.spent_minor


def _approval(wallet: _Wallet, event: AuthorizationDecided, found: Replay) -> None:
    """An approval must fit the rolling cap (with its raises) and the card's funds, on an active card."""
    found.approvals += 1
    amount = (event.cap_amount or event.amount).amount_minor
    if wallet.frozen or event.card_id in wallet.frozen_cards:
        found.approved_while_frozen += 1
    over = 0
    limit = wallet.limit(event.decided_at)
    if limit is not None:
        exposure = wallet.spent + sum(held for _, held in wallet.holds.values())
        over = max(over, min(amount, exposure + amount - limit))
    funded = wallet.funded.get(event.card_id)
    if funded is not None:
        over = max(over, min(amount, wallet.card_exposure(event.card_id) + amount - funded))
    found.cents_over_cap += max(0, over)
    if event.increment_of is None:
        wallet.holds[event.issuer_authorization_id] = (event.card_id, amount)
        return
    # An increment grows its authorization's hold (released with it, by its MoneyMoved events).
    _, held = wallet.holds.get(event.increment_of, (event.card_id, 0))
    wallet.holds[event.increment_of] = (event.card_id, held + amount)


async def committed_history(connection: asyncpg.Connection, settings: Settings) -> list[Any]:
    """The authorizer's outbox in commit order: decisions and wallet events, as published."""
    decisions = topic_name(Topic.AUTH_DECISIONS, settings.topic_prefix)
    wallet_events = topic_name(Topic.WALLET_EVENTS, settings.topic_prefix)
    rows = await connection.fetch(
        "SELECT topic, payload FROM authorizer.outbox WHERE topic = ANY($1::text[]) ORDER BY outbox_id",
        [decisions, wallet_events],
    )
    return [parse(Topic.AUTH_DECISIONS if row["topic"] == decisions else Topic.WALLET_EVENTS, row["payload"])
            for row in rows]  # fmt: skip


@dataclass
class Verdict:
    """The oracle's figures."""

    decisions_lost: int
    answer_mismatches: int
    late_approvals_released: int
    cents_over_cap: int
    approved_while_frozen: int
    holds_leaked: int
    ledger_mismatches: int
    approvals: int
    details: dict[str, Any]


_LATE = {"deadline_exceeded", "system_unavailable"}


async def judge(settings: Settings, webhook_answers: dict[str, bool], webhook_reasons: dict[str, str]) -> Verdict:
    """Measure every guarantee on the final state."""
    requests = await read_topic(settings, Topic.AUTH_REQUESTS)
    decisions = await read_topic(settings, Topic.AUTH_DECISIONS)
    requested = {r.issuer_authorization_id for r in requests if isinstance(r, AuthorizationRequested)}
    by_id: dict[str, list[AuthorizationDecided]] = defaultdict(list)
    for decision in decisions:
        by_id[decision.issuer_authorization_id].append(decision)
    lost = sorted(requested - set(by_id))
    inconsistent = [a for a, ds in by_id.items() if len({(d.event_id, d.approved, d.reason) for d in ds}) > 1]
    late, wrong = 0, []
    for authorization_id, approved in webhook_answers.items():
        recorded = by_id.get(authorization_id)
        if not recorded or recorded[0].approved == approved:
            continue
        if not approved and webhook_reasons.get(authorization_id) in _LATE:
            late += 1  # declined at the deadline, approved later: the gateway's expiry released it
        else:
            wrong.append(authorization_id)
    connection = await asyncpg.connect(dsn=settings.database_url.get_secret_value(), timeout=10)
    try:
        history = await committed_history(connection, settings)
        found = replay(history)
        open_holds = await connection.fetchval("SELECT count(*) FROM authorizer.holds")
        ledger_open = await connection.fetchval("SELECT count(*) FROM ledger.card_balances WHERE held_minor <> 0")
        approved_ids = {a for a, ds in by_id.items() if ds[0].approved}
        ledger_rows = await connection.fetch(
            """SELECT issuer_authorization_id, count(*) AS n FROM ledger.entries
               WHERE kind = 'decision' AND approved GROUP BY 1"""
        )
        in_ledger = {row["issuer_authorization_id"]: row["n"] for row in ledger_rows}
        missing = sorted(approved_ids - set(in_ledger))
        doubled = sorted(a for a, n in in_ledger.items() if n > 1)
        _, mismatches = await reconcile(connection)
    finally:
        await connection.close()
    return Verdict(
        decisions_lost=len(lost),
        answer_mismatches=len(inconsistent) + len(wrong),
        late_approvals_released=late,
        cents_over_cap=found.cents_over_cap,
        approved_while_frozen=found.approved_while_frozen,
        holds_leaked=int(open_holds) + int(ledger_open),
        ledger_mismatches=len(missing) + len(doubled) + len(mismatches),
        approvals=found.approvals,
        details={
            "requests": len(requested),
            "decisions": len(decisions),
            "lost": lost[:20],
            "inconsistent": inconsistent[:20],
            "wrong_answers": wrong[:20],
            "ledger_missing": missing[:20],
            "ledger_doubled": doubled[:20],
            "reconcile": [str(m) for m in mismatches[:20]],
            "history_events": len(history),
        },
    )
