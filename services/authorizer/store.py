"""Postgres adapter of the authorizer: wallet snapshots, holds and postings, decisions, outbox and
fenced offsets.

One batch's effects and its consumed offsets are written in ONE transaction, and only when every
partition's epoch is still ours: a zombie instance whose partitions moved cannot commit. A wallet
is a small JSON snapshot (cards, caps, running totals) plus rows for its open holds and its last
24 h of postings, so a batch writes what changed rather than everything the wallet holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from immutables import Map
from pydantic import TypeAdapter

from schemas.authorizations import AuthorizationDecided
from schemas.wallet import CardCreated, StatusChanged, WalletCreated
from services.authorizer.decide import Decided
from services.authorizer.state import ROLLING_WINDOW, Hold, HoldRow, Posting, WalletState, held_sums, rolling_sums
from services.platform.logging import get_logger

TopicPartition = tuple[str, int]
_log = get_logger("authorizer.store")
_STATE = TypeAdapter(WalletState)
# What a wallet's snapshot leaves out: rows of their own (holds, postings, decisions), or sums of
# those rows rebuilt on load (`held`, `rolling`). A batch that changed none of the other fields
# (most batches of authorizations: they only place holds) writes no snapshot for the wallet.
_OUTSIDE_SNAPSHOT: dict[str, Any] = {"holds": {}, "held": {}, "recent": (), "rolling": {}, "decisions": {}}
_SNAPSHOT_FIELDS = tuple(name for name in WalletState.__dataclass_fields__ if name not in _OUTSIDE_SNAPSHOT)
# Postings are loaded this far past the rolling window, so a clock a little behind the loading
# instance's still sees every posting it needs; the first decision prunes the rest.
_POSTINGS_MARGIN = timedelta(hours=1)
# Published outbox rows are kept this long (for replays and investigations), then deleted.
OUTBOX_RETENTION = timedelta(days=2)
# Issuer events applied are remembered this long, so one is applied once: longer than Kafka keeps a
# topic (7 days: a consumer rewound reads it again) plus an issuer's retries of a webhook (Stripe: up
# to 3 days), with room to spare.
APPLIED_EVENTS_RETENTION = timedelta(days=14)
# Rows past their retention are deleted this many per statement.
FORGET_CHUNK = 5_000


# The whole batch in one call (schemas/sql/0017_commit_batch_payload_once.sql, after 0009 and 0013),
# every column but the payloads and snapshots packed (0019, 0022); PSF01: a partition's epoch moved on.
_COMMIT_BATCH = "SELECT authorizer.commit_batch_all_packed(" + ", ".join(f"${n}" for n in range(1, 40)) + ")"
# Which of commit_batch's 39 arguments are text columns, passed packed (see `_packed`), and which are
# numbers, flags, times or ids, passed packed as text (see `_texts`, `_times`).
_PACKED_ARGUMENTS = frozenset({1, 5, 8, 9, 10, 11, 12, 13, 17, 18, 20, 21, 23, 24, 26, 29, 30, 31, 32, 33, 37})
_NUMBER_ARGUMENTS = frozenset({2, 3, 4, 14, 22, 35, 36, 38})  # integers and ids (36: event UUIDs)
_FLAG_ARGUMENTS = frozenset({25})
_TIME_ARGUMENTS = frozenset({7, 15, 16, 19, 28})
# A packed column's separator, and its stand-in for NULL (migration 0019's `unpack_text`).
_UNIT, _NULL = "\x1f", "\x1e"
_FENCED_SQLSTATE = "PSF01"


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
class CardDirectory:
    """Card ids and issuer card tokens already taken, across wallets: one wallet's state cannot see
    another's cards, and the cards table (the gateway's token lookup) keeps each unique.
    """

    wallet_of_card: dict[str, str] = field(default_factory=dict)
    card_of_token: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, card_id: str, wallet_id: str, issuer: str, token: str) -> None:
        """Record a card as taken (read from the table, or created earlier in the batch)."""
        self.wallet_of_card[card_id] = wallet_id
        self.card_of_token[(issuer, token)] = card_id

    def add_created(self, event: CardCreated) -> None:
        """Record the card an event created (in this batch, or in the batch being committed)."""
        self.add(event.card_id, event.wallet_id, event.issuer.value, event.issuer_card_token)

    def conflict(self, wallet_id: str, card_id: str, issuer: str, token: str) -> str | None:
        """Why a card `card_id` with this token cannot be created in `wallet_id` (None: it can)."""
        owner = self.wallet_of_card.get(card_id)
        if owner is not None and owner != wallet_id:
            return f"card id {card_id} is already used by another wallet"
        holder = self.card_of_token.get((issuer, token))
        if holder is not None and holder != card_id:
            return f"{issuer} card token {token} is already another card's"
        return None


@dataclass
class BatchEffects:
    """Everything one consumed batch changes, written together."""

    wallets: dict[str, WalletState] = field(default_factory=dict)
    previous: dict[str, WalletState | None] = field(default_factory=dict)  # as the batch found them
    # Each with its JSON as text (what Postgres is sent; the outbox keeps the bytes).
    decisions: list[tuple[Decided | AuthorizationDecided, str]] = field(default_factory=list)
    outbox: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # topic, key, event id, payload
    directory: list[CardCreated | WalletCreated | StatusChanged] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read
    published: list[int] = field(default_factory=list)  # outbox rows sent since the last commit
    applied_events: list[tuple[UUID, str]] = field(default_factory=list)  # issuer events, by id and wallet
    # Which outbox rows are decisions' (their position → the decision's in `decisions`): commit_batch
    # takes their payload from the decision rather than a second copy (migration 0017).
    decision_rows: dict[int, int] = field(default_factory=dict)
    # The issuer authorization ids each wallet's messages and events of the batch named: a hold
    # changes only through one of them (a request, a lifecycle event, an expiry), so only these are
    # compared with the state before, not every open hold of the wallet (see `_hold_changes`).
    named: dict[str, set[str]] = field(default_factory=dict)

    def add_decision(
        self,
        decision: Decided | AuthorizationDecided,
        payload: bytes,
        topic: str,
        event_id: str,
        text: str | None = None,
    ) -> None:
        """A decision to record and publish: its row, and its outbox row (the same payload; `text`
        is the payload decoded, when the caller has it already).
        """
        self.decision_rows[len(self.outbox)] = len(self.decisions)
        self.decisions.append((decision, payload.decode() if text is None else text))
        self.outbox.append((topic, decision.wallet_id, event_id, payload))

    def name(self, wallet_id: str, authorization_id: str | None) -> None:
        """Note that the batch's messages or events named `authorization_id` in `wallet_id`."""
        if authorization_id is not None:
            self.named.setdefault(wallet_id, set()).add(authorization_id)


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

    async def load_wallets(self, wallet_ids: list[str], now: datetime) -> dict[str, WalletState]:
        """The persisted state of each wallet that exists: snapshot, open holds, recent postings."""
        async with self._pool.acquire() as connection:
            snapshots = await connection.fetch(
                "SELECT wallet_id, state FROM authorizer.wallet_state WHERE wallet_id = ANY($1::text[])", wallet_ids
            )
            hold_rows = await connection.fetch(
                """SELECT wallet_id, authorization_id, card_id, trace_id, amount_minor, placed_at, expires_at
                   FROM authorizer.holds WHERE wallet_id = ANY($1::text[])""",
                wallet_ids,
            )
            posting_rows = await connection.fetch(
                """SELECT wallet_id, posting_id, at, card_id, trace_id, amount_minor FROM authorizer.postings
                   WHERE wallet_id = ANY($1::text[]) AND at > $2 ORDER BY at, posting_id""",
                wallet_ids, now - ROLLING_WINDOW - _POSTINGS_MARGIN,
            )  # fmt: skip
        holds: dict[str, dict[str, HoldRow]] = {}
        for row in hold_rows:
            holds.setdefault(row["wallet_id"], {})[row["authorization_id"]] = (
                row["authorization_id"], row["card_id"], row["trace_id"], row["amount_minor"], row["placed_at"],
                row["expires_at"],
            )  # fmt: skip
        recent: dict[str, list[Posting]] = {}
        for row in posting_rows:
            recent.setdefault(row["wallet_id"], []).append(
                Posting(row["posting_id"], row["at"], row["card_id"], row["trace_id"], row["amount_minor"])
            )
        states = {}
        for row in snapshots:
            wallet_id = row["wallet_id"]
            postings, open_holds = tuple(recent.get(wallet_id, ())), holds.get(wallet_id, {})
            states[wallet_id] = replace(
                _STATE.validate_json(row["state"]),
                holds=Map(open_holds),
                held=held_sums(open_holds),
                recent=postings,
                rolling=rolling_sums(postings),
            )
        return states

    async def load_decisions(self, authorization_ids: list[str]) -> dict[str, AuthorizationDecided]:
        """Decisions already taken for any of these ids (a duplicate request gets the first answer)."""
        if not authorization_ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT issuer_authorization_id, decision FROM authorizer.decisions"
            " WHERE issuer_authorization_id = ANY($1::text[])",
            authorization_ids,
        )
        return {
            row["issuer_authorization_id"]: AuthorizationDecided.model_validate_json(row["decision"]) for row in rows
        }

    async def never_decided(self, wallet_ids: list[str]) -> set[str]:
        """Which of these wallet ids no decision was ever recorded for."""
        rows = await self._pool.fetch(
            """SELECT w FROM unnest($1::text[]) AS w
               WHERE NOT EXISTS (SELECT 1 FROM authorizer.decisions d WHERE d.wallet_id = w)""",
            wallet_ids,
        )
        return {row["w"] for row in rows}

    async def card_directory(self, card_ids: list[str], tokens: list[tuple[str, str]]) -> CardDirectory:
        """The cards (of any wallet) that already use one of these card ids or issuer card tokens."""
        rows = await self._pool.fetch(
            """SELECT card_id, wallet_id, issuer, issuer_card_token FROM authorizer.cards
               WHERE card_id = ANY($1::text[])
                  OR (issuer, issuer_card_token) IN (SELECT * FROM unnest($2::text[], $3::text[]))""",
            card_ids, [issuer for issuer, _ in tokens], [token for _, token in tokens],
        )  # fmt: skip
        directory = CardDirectory()
        for row in rows:
            directory.add(row["card_id"], row["wallet_id"], row["issuer"], row["issuer_card_token"])
        return directory

    async def applied_events(self, event_ids: list[UUID]) -> set[UUID]:
        """Which of these issuer events were applied already."""
        if not event_ids:
            return set()
        rows = await self._pool.fetch(
            "SELECT event_id FROM authorizer.applied_events WHERE event_id = ANY($1::uuid[])", event_ids
        )
        return {row["event_id"] for row in rows}

    async def commit(self, effects: BatchEffects, epochs: dict[TopicPartition, int]) -> list[OutboxRow]:
        """Write the batch if every partition is still ours; return the outbox rows to publish.

        One call of `authorizer.commit_batch` (migration 0009): a single round trip, its own
        transaction. Directory rows (wallets and cards created, statuses changed: rare) join it in an
        explicit transaction.
        """
        partitions = sorted(effects.offsets)
        columns = (
            self._group,
            [topic for topic, _ in partitions],
            [partition for _, partition in partitions],
            [epochs.get(tp) for tp in partitions],
            [effects.offsets[tp] for tp in partitions],
            *_wallet_rows(effects),
            *_transpose(
                [
                    (d.issuer_authorization_id, d.wallet_id, d.approved, d.reason.value, text, d.decided_at,
                     d.card_id, d.trace_id)
                    for d, text in effects.decisions
                ],
                8,
            ),
            *_outbox_rows(effects),
            *_transpose(effects.applied_events, 2),
            effects.published,
        )  # fmt: skip
        arguments = [_argument(index, column) for index, column in enumerate(columns)]
        async with self._pool.acquire() as connection:
            try:
                if effects.directory:
                    async with connection.transaction():
                        ids = await connection.fetchval(_COMMIT_BATCH, *arguments)
                        for event in effects.directory:
                            await _write_directory(connection, event)
                else:
                    ids = await connection.fetchval(_COMMIT_BATCH, *arguments)
            except asyncpg.PostgresError as error:
                if getattr(error, "sqlstate", None) == _FENCED_SQLSTATE:
                    raise Fenced(str(error)) from None
                raise
        return [
            OutboxRow(outbox_id, topic, key.encode(), payload)
            for outbox_id, (topic, key, _, payload) in zip(ids, effects.outbox, strict=True)
        ]

    async def wallets_with_expired_holds(self, now: datetime, limit: int = 1_000) -> list[str]:
        """Wallets holding money past its expiry (whatever partition they are on)."""
        rows = await self._pool.fetch(
            """SELECT wallet_id FROM authorizer.wallet_state WHERE earliest_hold_expiry <= $1
               ORDER BY earliest_hold_expiry LIMIT $2""",
            now, limit,
        )  # fmt: skip
        return [row["wallet_id"] for row in rows]

    async def forget_old_postings(self, now: datetime, chunk: int = FORGET_CHUNK) -> int:
        """Delete postings no rolling window can need any more, oldest first, `chunk` rows per
        statement; return how many.
        """
        return await self._delete_in_chunks(
            """DELETE FROM authorizer.postings WHERE (wallet_id, posting_id) IN (
                   SELECT wallet_id, posting_id FROM authorizer.postings WHERE at <= $1 ORDER BY at LIMIT $2)""",
            now - ROLLING_WINDOW - 2 * _POSTINGS_MARGIN,
            chunk,
        )

    async def forget_published(
        self, now: datetime, keep: timedelta = OUTBOX_RETENTION, chunk: int = FORGET_CHUNK
    ) -> int:
        """Delete outbox rows published more than `keep` ago (decisions stay in authorizer.decisions),
        oldest first, `chunk` rows per statement (by `outbox_published_at`, migration 0011); return how many.
        """
        return await self._delete_in_chunks(
            """DELETE FROM authorizer.outbox WHERE outbox_id IN (
                   SELECT outbox_id FROM authorizer.outbox WHERE published_at < $1 ORDER BY published_at LIMIT $2)""",
            now - keep,
            chunk,
        )

    async def forget_applied_events(
        self, now: datetime, keep: timedelta = APPLIED_EVENTS_RETENTION, chunk: int = FORGET_CHUNK
    ) -> int:
        """Delete the ids of issuer events applied more than `keep` ago, oldest first, `chunk` rows
        per statement (by `applied_events_applied_at`, migration 0015); return how many.
        """
        return await self._delete_in_chunks(
            """DELETE FROM authorizer.applied_events WHERE event_id IN (
                   SELECT event_id FROM authorizer.applied_events WHERE applied_at < $1
                   ORDER BY applied_at LIMIT $2)""",
            now - keep,
            chunk,
        )

    async def _delete_in_chunks(self, statement: str, before: datetime, chunk: int) -> int:
        """Run a chunked DELETE until a chunk comes back short: each statement is short, so it holds
        few locks and little WAL at a time.
        """
        deleted = 0
        while True:
            result = await self._pool.execute(statement, before, chunk)
            count = int(result.split()[-1])
            deleted += count
            if count < chunk:
                return deleted

    async def unpublished(self, limit: int = 1_000, older_than: timedelta = timedelta(0)) -> list[OutboxRow]:
        """Rows committed but not yet published (after a crash between commit and publish), committed
        at least `older_than` ago by Postgres's clock.
        """
        rows = await self._pool.fetch(
            """SELECT outbox_id, topic, message_key, payload FROM authorizer.outbox
               WHERE published_at IS NULL AND created_at <= now() - $2::interval ORDER BY outbox_id LIMIT $1""",
            limit, older_than,
        )  # fmt: skip
        return [OutboxRow(r["outbox_id"], r["topic"], r["message_key"].encode(), r["payload"].encode()) for r in rows]

    async def mark_published(self, outbox_ids: list[int]) -> None:
        """Record that these rows reached Kafka."""
        await self._pool.execute(
            "UPDATE authorizer.outbox SET published_at = now() WHERE outbox_id = ANY($1::bigint[])", outbox_ids
        )


def _argument(index: int, column: Any) -> Any:  # noqa: ANN401 - a column of any type, or the group
    """`commit_batch_all_packed`'s argument `index` (0-based) made of `column`."""
    if index in _PACKED_ARGUMENTS:
        return _packed(column)
    if index in _NUMBER_ARGUMENTS:
        return _packed(_texts(column))
    if index in _TIME_ARGUMENTS:
        return _packed(_times(column))
    if index in _FLAG_ARGUMENTS:
        return _packed([None if flag is None else "t" if flag else "f" for flag in column])
    return column


def _texts(column: list[Any]) -> list[str | None]:
    """Integers or UUIDs as their text (None stays None)."""
    return [None if value is None else str(value) for value in column]


def _times(column: list[datetime | None]) -> list[str | None]:
    """Aware datetimes as ISO 8601 with their offset, each distinct instant written once (a batch's
    times are mostly its `now` and its holds' expiry).
    """
    written: dict[datetime, str] = {}
    texts: list[str | None] = []
    add = texts.append
    for moment in column:
        if moment is None:
            add(None)
            continue
        text = written.get(moment)
        if text is None:
            if moment.tzinfo is None:
                raise ValueError(f"a naive datetime cannot be stored as a timestamptz: {moment!r}")
            text = written[moment] = moment.isoformat()
        add(text)
    return texts


def _packed(column: list[str | None]) -> str:
    """A text column as `commit_batch_packed` takes it: one string, elements separated by U+001F,
    None as U+001E (migration 0019). Raises if an element could not be told apart when unpacked.
    """
    nulls = column.count(None)
    packed = _UNIT.join([_NULL if text is None else text for text in column] if nulls else column)  # type: ignore[arg-type]
    if packed.count(_UNIT) != max(0, len(column) - 1) or packed.count(_NULL) != nulls:
        raise ValueError("a text column holds U+001F or U+001E, which its packing reserves")
    if column == [""]:
        raise ValueError("a text column of one empty string cannot be packed (it reads back empty)")
    return packed


def _transpose(rows: list[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    """Rows as columns, for `unnest($1::type[], $2::type[], ...)`."""
    return tuple([row[index] for row in rows] for index in range(width))


def _outbox_rows(effects: BatchEffects) -> tuple[list[Any], ...]:
    """The outbox rows as the columns `commit_batch` takes (topic, key, event id, payload, decision):
    a decision's row has no payload of its own but the 1-based position of its decision.
    """
    decision_rows = effects.decision_rows
    rows = [
        (topic, key, event_id, None, decision_rows[position] + 1)
        if position in decision_rows
        else (topic, key, event_id, payload.decode(), None)
        for position, (topic, key, event_id, payload) in enumerate(effects.outbox)
    ]
    return _transpose(rows, 5)


def _wallet_rows(effects: BatchEffects) -> tuple[list[Any], ...]:
    """The touched wallets' snapshots, and the holds and postings that changed in the batch, as the
    columns `commit_batch` takes: snapshots (3), holds released (2), holds placed (7), postings (6).
    """
    snapshots, upserts, deletes, postings = [], [], [], []
    for wallet_id, state in effects.wallets.items():
        before = effects.previous.get(wallet_id)
        if not _snapshot_unchanged(before, state):
            core = state.evolve(**_OUTSIDE_SNAPSHOT)
            snapshots.append((wallet_id, _STATE.dump_json(core).decode(), state.earliest_hold_expiry))
        placed, ended = _hold_changes(before, state, effects.named.get(wallet_id, set()))
        upserts += [(wallet_id, hold) for hold in placed]
        deletes += [(wallet_id, key) for key in ended]
        old_recent = () if before is None else before.recent
        if state.recent is not old_recent:
            known = {posting.posting_id for posting in old_recent}
            postings += [(wallet_id, p) for p in state.recent if p.posting_id not in known]
    return (
        *_transpose(snapshots, 3),
        *_transpose(deletes, 2),
        *_transpose(
            [(w, h.authorization_id, h.card_id, h.trace_id, h.amount_minor, h.placed_at, h.expires_at)
             for w, h in upserts],
            7,
        ),
        *_transpose([(w, p.posting_id, p.at, p.card_id, p.trace_id, p.amount_minor) for w, p in postings], 6),
    )  # fmt: skip


def _hold_changes(before: WalletState | None, state: WalletState, named: set[str]) -> tuple[list[Hold], list[str]]:
    """The holds placed or resized, and the ids of holds ended, between `before` and `state`.

    Only the `named` authorizations are compared: a wallet may hold thousands of open holds, and a
    batch changes a few. The count and the wallet's held total are checked against what the named
    changes add up to; if they disagree (a hold changed that no message named: a bug), every hold
    is compared instead, and the miss is logged.
    """
    old_holds: Mapping[str, HoldRow] = {} if before is None else before.holds
    if state.holds is old_holds:
        return [], []
    placed, ended, count, total = [], [], len(old_holds), 0 if before is None else before.held.get("wallet", 0)
    for key in named:
        old, new = old_holds.get(key), state.holds.get(key)
        if new is old:
            continue
        count += (new is not None) - (old is not None)
        total -= 0 if old is None else Hold._make(old).amount_minor
        if new is None:
            ended.append(key)
        else:
            placed.append(Hold._make(new))
            total += placed[-1].amount_minor
    if count == len(state.holds) and total == state.held.get("wallet", 0):
        return placed, ended
    _log.error("hold_changes_unnamed", wallet_id=state.wallet_id, named=len(named))
    return (
        [Hold._make(row) for key, row in state.holds.items() if old_holds.get(key) is not row],
        [key for key in old_holds if key not in state.holds],
    )


def _snapshot_unchanged(before: WalletState | None, state: WalletState) -> bool:
    """True when every snapshot field of `state` is the very value `before` had (states are frozen:
    a change is always a new value, so identity is enough and costs nothing to check).
    """
    return before is not None and all(getattr(state, name) is getattr(before, name) for name in _SNAPSHOT_FIELDS)


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
