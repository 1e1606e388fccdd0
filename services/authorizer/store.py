"""Postgres adapter of the authorizer: wallet snapshots, decisions, outbox and fenced offsets.

One batch's effects and its consumed offsets are written in ONE transaction, and only when every
partition's epoch is still ours: a zombie instance whose partitions moved cannot commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import TypeAdapter

from schemas.authorizations import AuthorizationDecided
from schemas.wallet import CardCreated, StatusChanged, WalletCreated
from services.authorizer.state import WalletState

TopicPartition = tuple[str, int]
_STATE = TypeAdapter(WalletState)


class Fenced(RuntimeError):
    """Another instance took one of our partitions; this batch must be thrown away."""


@dataclass(frozen=True)
class OutboxRow:
    """A message waiting to be published, in commit order."""

    outbox_id: int
    topic: str
    key: bytes
    payload: bytes


@dataclass
class BatchEffects:
    """Everything one consumed batch changes, written together."""

    wallets: dict[str, WalletState] = field(default_factory=dict)
    decisions: list[AuthorizationDecided] = field(default_factory=list)
    outbox: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # topic, key, event id, payload
    directory: list[CardCreated | WalletCreated | StatusChanged] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read


class Store:
    """The authorizer's tables, for one consumer group."""

    def __init__(self, pool: asyncpg.Pool, group: str) -> None:
        self._pool = pool
        self._group = group

    async def claim(self, partitions: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """Take a new epoch for each partition; return (next offset, epoch) to seek to and fence with."""
        claimed = {}
        async with self._pool.acquire() as connection, connection.transaction():
            for topic, partition in sorted(partitions):
                row = await connection.fetchrow(
                    """INSERT INTO authorizer.partition_offsets (consumer_group, topic, partition, next_offset, epoch)
                       VALUES ($1, $2, $3, 0, 1)
                       ON CONFLICT (consumer_group, topic, partition)
                       DO UPDATE SET epoch = partition_offsets.epoch + 1, updated_at = now()
                       RETURNING next_offset, epoch""",
                    self._group, topic, partition,
                )  # fmt: skip
                claimed[(topic, partition)] = (row["next_offset"], row["epoch"])
        return claimed

    async def load_wallets(self, wallet_ids: list[str]) -> dict[str, WalletState]:
        """The persisted state of each wallet that exists, in one query."""
        rows = await self._pool.fetch(
            "SELECT wallet_id, state FROM authorizer.wallet_state WHERE wallet_id = ANY($1::text[])", wallet_ids
        )
        return {row["wallet_id"]: _STATE.validate_json(row["state"]) for row in rows}

    async def load_decisions(self, authorization_ids: list[str]) -> dict[str, AuthorizationDecided]:
        """Decisions already taken for any of these ids (a duplicate request gets the first answer)."""
        rows = await self._pool.fetch(
            "SELECT issuer_authorization_id, decision FROM authorizer.decisions"
            " WHERE issuer_authorization_id = ANY($1::text[])",
            authorization_ids,
        )
        return {
            row["issuer_authorization_id"]: AuthorizationDecided.model_validate_json(row["decision"]) for row in rows
        }

    async def commit(self, effects: BatchEffects, epochs: dict[TopicPartition, int]) -> list[OutboxRow]:
        """Write the batch if every partition is still ours; return the outbox rows to publish."""
        async with self._pool.acquire() as connection, connection.transaction():
            await self._check_epochs(connection, effects, epochs)
            await self._write_wallets(connection, effects)
            await connection.executemany(
                """INSERT INTO authorizer.decisions
                   (issuer_authorization_id, wallet_id, approved, reason, decision, decided_at)
                   VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT (issuer_authorization_id) DO NOTHING""",
                [
                    (
                        d.issuer_authorization_id,
                        d.wallet_id,
                        d.approved,
                        d.reason.value,
                        d.model_dump_json(),
                        d.decided_at,
                    )
                    for d in effects.decisions
                ],
            )
            rows = await connection.fetch(
                """INSERT INTO authorizer.outbox (topic, message_key, event_id, payload)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::jsonb[])
                   RETURNING outbox_id, topic, message_key, payload::text""",
                *_columns(effects.outbox),
            )
            await connection.executemany(
                """UPDATE authorizer.partition_offsets SET next_offset = $4, updated_at = now()
                   WHERE consumer_group = $1 AND topic = $2 AND partition = $3""",
                [(self._group, topic, partition, offset) for (topic, partition), offset in effects.offsets.items()],
            )
        return sorted(
            (OutboxRow(r["outbox_id"], r["topic"], r["message_key"].encode(), r["payload"].encode()) for r in rows),
            key=lambda row: row.outbox_id,
        )

    async def _check_epochs(
        self, connection: asyncpg.Connection, effects: BatchEffects, epochs: dict[TopicPartition, int]
    ) -> None:
        for topic, partition in sorted(effects.offsets):
            current = await connection.fetchval(
                """SELECT epoch FROM authorizer.partition_offsets
                   WHERE consumer_group = $1 AND topic = $2 AND partition = $3 FOR UPDATE""",
                self._group, topic, partition,
            )  # fmt: skip
            if current != epochs.get((topic, partition)):
                raise Fenced(f"{topic}[{partition}] is at epoch {current}, we hold {epochs.get((topic, partition))}")

    async def _write_wallets(self, connection: asyncpg.Connection, effects: BatchEffects) -> None:
        # Decisions live in their own table; the snapshot keeps the wallet's bounded state only.
        await connection.executemany(
            """INSERT INTO authorizer.wallet_state (wallet_id, state, earliest_hold_expiry) VALUES ($1, $2::jsonb, $3)
               ON CONFLICT (wallet_id) DO UPDATE
               SET state = EXCLUDED.state, earliest_hold_expiry = EXCLUDED.earliest_hold_expiry, updated_at = now()""",
            [
                (wallet_id, _STATE.dump_json(replace(s, decisions={})).decode(), s.earliest_hold_expiry)
                for wallet_id, s in effects.wallets.items()
            ],
        )
        for event in effects.directory:
            await _write_directory(connection, event)

    async def wallets_with_expired_holds(self, now: datetime, limit: int = 1_000) -> list[str]:
        """Wallets holding money past its expiry (whatever partition they are on)."""
        rows = await self._pool.fetch(
            """SELECT wallet_id FROM authorizer.wallet_state WHERE earliest_hold_expiry <= $1
               ORDER BY earliest_hold_expiry LIMIT $2""",
            now, limit,
        )  # fmt: skip
        return [row["wallet_id"] for row in rows]

    async def unpublished(self, limit: int = 1_000) -> list[OutboxRow]:
        """Rows committed but not yet published (after a crash between commit and publish)."""
        rows = await self._pool.fetch(
            """SELECT outbox_id, topic, message_key, payload::text FROM authorizer.outbox
               WHERE published_at IS NULL ORDER BY outbox_id LIMIT $1""",
            limit,
        )
        return [OutboxRow(r["outbox_id"], r["topic"], r["message_key"].encode(), r["payload"].encode()) for r in rows]

    async def mark_published(self, outbox_ids: list[int]) -> None:
        """Record that these rows reached Kafka."""
        await self._pool.execute(
            "UPDATE authorizer.outbox SET published_at = now() WHERE outbox_id = ANY($1::bigint[])", outbox_ids
        )


def _columns(outbox: list[tuple[str, str, str, bytes]]) -> tuple[list[Any], ...]:
    return (
        [row[0] for row in outbox],
        [row[1] for row in outbox],
        [row[2] for row in outbox],
        [row[3].decode() for row in outbox],
    )


async def _write_directory(connection: asyncpg.Connection, event: CardCreated | WalletCreated | StatusChanged) -> None:
    """Keep the wallets and cards tables (the gateway's card-token lookup) in step with the state."""
    if isinstance(event, WalletCreated):
        await connection.execute(
            """INSERT INTO authorizer.wallets (wallet_id, currency, time_zone, template, status, policy, created_at,
                                              updated_at)
               VALUES ($1, $2, $3, $4, 'active', $5::jsonb, $6, $6) ON CONFLICT (wallet_id) DO NOTHING""",
            event.wallet_id, event.currency, event.time_zone, event.template.value,
            json.dumps({"caps": event.caps.model_dump(mode="json"), "slack_channel": event.slack_channel,
                        "approvers": list(event.approvers)}),
            event.occurred_at,
        )  # fmt: skip
    elif isinstance(event, CardCreated):
        await connection.execute(
            """INSERT INTO authorizer.cards (card_id, wallet_id, issuer, issuer_card_token, last4, status, policy,
                                            expires_at, created_at)
               VALUES ($1, $2, $3, $4, $5, 'active', $6::jsonb, $7, $8) ON CONFLICT (card_id) DO NOTHING""",
            event.card_id, event.wallet_id, event.issuer.value, event.issuer_card_token, event.last4,
            event.model_dump_json(include={"caps", "funded_amount", "mcc_allow", "mcc_block", "merchant_lock"}),
            event.expires_at, event.occurred_at,
        )  # fmt: skip
    elif event.card_id is None:
        await connection.execute(
            "UPDATE authorizer.wallets SET status = $2, updated_at = $3 WHERE wallet_id = $1",
            event.wallet_id, event.status, event.occurred_at,
        )  # fmt: skip
    else:
        await connection.execute(
            "UPDATE authorizer.cards SET status = $2 WHERE card_id = $1", event.card_id, event.status
        )
