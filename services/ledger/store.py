"""The ledger's Postgres: one transaction per consumed batch, reconciliation, and CSV export.

Idempotent by construction: an entry's id is its source event's id, inserted with ON CONFLICT DO
NOTHING, and its postings are written only when the entry itself was new. A redelivered batch (a
crash between this commit and Kafka's) changes nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from services.ledger.journal import Card, Entry, Wallet


@dataclass
class Batch:
    """Everything one consumed batch adds to the ledger."""

    wallets: list[Wallet] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Written:
    """What a batch changed: entries recorded by kind, and how many were already there."""

    recorded: dict[str, int]
    duplicates: int


_INSERT_ENTRIES = """
INSERT INTO ledger.entries (
    entry_id, kind, source_type, wallet_id, card_id, trace_id, issuer, issuer_authorization_id,
    issuer_transaction_id, merchant_name, merchant_mcc, merchant_network_id, merchant_country,
    amount_minor, amount_currency, merchant_amount_minor, merchant_currency, currency, cap_amount_minor,
    held_minor, hold_released_minor, spent_minor, approved, reason, failed_cap, occurred_at, counted_at,
    increment_of)
SELECT * FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::int8[], $15::text[], $16::int8[], $17::text[], $18::text[], $19::int8[],
    $20::int8[], $21::int8[], $22::int8[], $23::bool[], $24::text[], $25::text[], $26::timestamptz[],
    $27::timestamptz[], $28::text[])
ON CONFLICT DO NOTHING
RETURNING entry_id
"""

_INSERT_POSTINGS = """
INSERT INTO ledger.postings (entry_id, account, wallet_id, card_id, issuer, trace_id, amount_minor, currency,
                             occurred_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[],
                     $8::text[], $9::timestamptz[])
"""


async def write_batch(pool: asyncpg.Pool, batch: Batch) -> Written:
    """Record the batch in ONE transaction; entries already recorded are skipped with their postings."""
    unique = list({entry.entry_id: entry for entry in batch.entries}.values())
    async with pool.acquire() as connection, connection.transaction():
        if batch.wallets:
            await connection.executemany(
                "INSERT INTO ledger.wallets VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [(w.wallet_id, w.label, w.currency, w.time_zone, w.created_at) for w in batch.wallets],
            )
        if batch.cards:
            await connection.executemany(
                "INSERT INTO ledger.cards VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                [
                    (c.card_id, c.wallet_id, c.label, c.issuer, c.issuer_card_token, c.last4, c.funded_minor,
                     c.currency, c.created_at)
                    for c in batch.cards
                ],
            )  # fmt: skip
        if batch.reports:
            await connection.executemany(
                """INSERT INTO ledger.issuer_reports (event_id, type, wallet_id, card_id, issuer,
                       issuer_authorization_id, issuer_transaction_id, amount_minor, currency, occurred_at, payload)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING""",
                [
                    (r["event_id"], r["type"], r["wallet_id"], r["card_id"], r["issuer"],
                     r["issuer_authorization_id"], r["issuer_transaction_id"], r["amount_minor"], r["currency"],
                     r["occurred_at"], r["payload"])
                    for r in batch.reports
                ],
            )  # fmt: skip
        new: set[UUID] = set()
        if unique:
            rows = await connection.fetch(_INSERT_ENTRIES, *_entry_columns(unique))
            new = {row["entry_id"] for row in rows}
            legs = [(entry, leg) for entry in unique if entry.entry_id in new for leg in entry.legs]
            if legs:
                await connection.execute(_INSERT_POSTINGS, *_posting_columns(legs))
    recorded: dict[str, int] = {}
    for entry in unique:
        if entry.entry_id in new:
            recorded[entry.source_type] = recorded.get(entry.source_type, 0) + 1
    return Written(recorded, len(batch.entries) - len(new))


def _entry_columns(entries: Sequence[Entry]) -> list[list[Any]]:
    rows = [
        (
            e.entry_id, e.kind, e.source_type, e.wallet_id, e.card_id, e.trace_id, e.issuer,
            e.issuer_authorization_id, e.issuer_transaction_id,
            None if e.merchant is None else e.merchant.name,
            None if e.merchant is None else e.merchant.mcc,
            None if e.merchant is None else e.merchant.network_id,
            None if e.merchant is None else e.merchant.country,
            None if e.amount is None else e.amount.amount_minor,
            None if e.amount is None else e.amount.currency,
            None if e.merchant_amount is None else e.merchant_amount.amount_minor,
            None if e.merchant_amount is None else e.merchant_amount.currency,
            e.currency, e.cap_amount_minor, e.held_minor, e.hold_released_minor, e.spent_minor, e.approved,
            e.reason, e.failed_cap, e.occurred_at, e.counted_at, e.increment_of,
        )
        for e in entries
    ]  # fmt: skip
    return [list(column) for column in zip(*rows, strict=True)]


def _posting_columns(legs: Sequence[tuple[Entry, Any]]) -> list[list[Any]]:
    rows = [
        (e.entry_id, leg.account, e.wallet_id, leg.card_id, e.issuer, e.trace_id, leg.amount_minor, e.currency,
         e.occurred_at)
        for e, leg in legs
    ]  # fmt: skip
    return [list(column) for column in zip(*rows, strict=True)]


# ───────────────────────────── reconciliation ─────────────────────────────


@dataclass(frozen=True)
class Mismatch:
    """One balance on which the ledger and the authorizer disagree."""

    scope: Literal["wallet", "card"]
    scope_id: str
    balance: Literal["held", "spent"]
    ledger_minor: int
    authorizer_minor: int

    def __str__(self) -> str:
        return (
            f"{self.scope} {self.scope_id}: {self.balance} ledger={self.ledger_minor} "
            f"authorizer={self.authorizer_minor} (difference {self.ledger_minor - self.authorizer_minor})"
        )


_RECONCILE = """
WITH authorizer_cards AS (
    SELECT s.wallet_id, c.key AS card_id,
           coalesce((s.state -> 'lifetime' ->> ('card:' || c.key))::bigint, 0) AS spent_minor,
           coalesce((SELECT sum(h.amount_minor) FROM authorizer.holds h
                     WHERE h.wallet_id = s.wallet_id AND h.card_id = c.key), 0)::bigint AS held_minor
    FROM authorizer.wallet_state s, jsonb_each(s.state -> 'cards') c
), ledger_cards AS (
    SELECT wallet_id, card_id,
           coalesce(sum(amount_minor) FILTER (WHERE account = 'spent'), 0)::bigint AS spent_minor,
           coalesce(sum(amount_minor) FILTER (WHERE account = 'held'), 0)::bigint AS held_minor
    FROM ledger.postings WHERE card_id IS NOT NULL
    GROUP BY wallet_id, card_id
)
SELECT coalesce(a.wallet_id, l.wallet_id) AS wallet_id, coalesce(a.card_id, l.card_id) AS card_id,
       coalesce(l.spent_minor, 0) AS ledger_spent, coalesce(a.spent_minor, 0) AS authorizer_spent,
       coalesce(l.held_minor, 0) AS ledger_held, coalesce(a.held_minor, 0) AS authorizer_held
FROM authorizer_cards a
FULL JOIN ledger_cards l ON l.wallet_id = a.wallet_id AND l.card_id = a.card_id
ORDER BY 1, 2
"""


async def reconcile(connection: asyncpg.Connection) -> tuple[int, list[Mismatch]]:
    """Compare held and spent per card and per wallet; returns (cards compared, mismatches)."""
    rows = await connection.fetch(_RECONCILE)
    mismatches: list[Mismatch] = []
    wallets: dict[str, dict[str, int]] = {}
    for row in rows:
        totals = wallets.setdefault(row["wallet_id"], dict.fromkeys(("ls", "as", "lh", "ah"), 0))
        for balance, ledger_key, authorizer_key in (("spent", "ls", "as"), ("held", "lh", "ah")):
            ledger, authorizer = row[f"ledger_{balance}"], row[f"authorizer_{balance}"]
            totals[ledger_key] += ledger
            totals[authorizer_key] += authorizer
            if ledger != authorizer:
                mismatches.append(Mismatch("card", row["card_id"], balance, ledger, authorizer))  # type: ignore[arg-type]
    for wallet_id, totals in wallets.items():
        for balance, ledger_key, authorizer_key in (("spent", "ls", "as"), ("held", "lh", "ah")):
            if totals[ledger_key] != totals[authorizer_key]:
                mismatches.append(
                    Mismatch("wallet", wallet_id, balance, totals[ledger_key], totals[authorizer_key])  # type: ignore[arg-type]
                )
    return len(rows), mismatches


# ───────────────────────────── export ─────────────────────────────

_EXPORTS: dict[str, str] = {
    "trace": """
        SELECT wallet_id, trace_id, currency, sum(spent_minor) AS spent_minor,
               count(*) FILTER (WHERE kind = 'decision') AS authorizations,
               count(*) FILTER (WHERE kind = 'decision' AND approved) AS approvals,
               count(*) FILTER (WHERE kind = 'decision' AND NOT approved) AS declines
        FROM ledger.entries
        WHERE trace_id IS NOT NULL AND kind <> 'card_funded' AND occurred_at >= $1 AND occurred_at < $2
        GROUP BY wallet_id, trace_id, currency ORDER BY wallet_id, trace_id""",
    "wallet": """
        SELECT wallet_id, currency, sum(spent_minor) AS spent_minor,
               count(*) FILTER (WHERE kind = 'decision') AS authorizations,
               count(*) FILTER (WHERE kind = 'decision' AND approved) AS approvals,
               count(*) FILTER (WHERE kind = 'decision' AND NOT approved) AS declines
        FROM ledger.entries
        WHERE kind <> 'card_funded' AND occurred_at >= $1 AND occurred_at < $2
        GROUP BY wallet_id, currency ORDER BY wallet_id""",
    "day": """
        SELECT wallet_id, day, currency, spent_minor, refunded_minor, net_minor, movements
        FROM ledger.spend_by_wallet_day
        WHERE day >= ($1 AT TIME ZONE 'UTC')::date AND day < ($2 AT TIME ZONE 'UTC')::date
        ORDER BY wallet_id, day""",
}
ExportBy = Literal["trace", "wallet", "day"]


async def export_csv(connection: asyncpg.Connection, by: ExportBy, since: datetime, until: datetime) -> str:
    """Spend grouped `by` trace, wallet or day, between `since` (inclusive) and `until`, as CSV."""
    statement = await connection.prepare(_EXPORTS[by])
    rows = await statement.fetch(since, until)
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow([attribute.name for attribute in statement.get_attributes()])
    writer.writerows([list(row.values()) for row in rows])
    return output.getvalue()
