"""The authorizer's Postgres adapter on the real Postgres: a wallet written batch by batch (only
what changed) reads back as the state that was in memory.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from schemas.policies import CardCaps, WalletCaps
from services.authorizer.domain import Inbound
from services.authorizer.state import WalletState
from services.authorizer.store import _STATE, BatchEffects, Store, _argument, _packed
from services.platform.migrations import apply_migrations, discover
from tests.support.builders import CARD, cleared, refund, request, reversed_, run_on, usd, wallet
from tests.support.samples import NOW


def _after(state: WalletState, *messages: Inbound) -> WalletState:
    return run_on(state, *messages)[1]


def _batch(before: WalletState | None, after: WalletState, *named: str) -> BatchEffects:
    """One wallet's batch, naming the authorizations its messages named (as the runtime does)."""
    return BatchEffects(
        wallets={after.wallet_id: after}, previous={after.wallet_id: before}, named={after.wallet_id: set(named)}
    )


def _without_memory_only(state: WalletState) -> WalletState:
    """What Postgres keeps: everything but the decisions (Postgres has them in their own table)."""
    return replace(state, decisions={})


async def test_a_wallet_reads_back_as_it_was_written(pool: asyncpg.Pool) -> None:
    """Holds placed, resized and ended, postings and a refund, across two commits → the same state."""
    store = Store(pool, "group-store")
    empty = wallet(WalletCaps(rolling_24h=usd(10_000), monthly=usd(50_000)), card_caps=CardCaps(rolling_24h=usd(8_000)))
    first = _after(
        empty,
        request(1_000, auth="a1", deadline_at=NOW + timedelta(hours=1)),
        request(2_000, auth="a2", deadline_at=NOW + timedelta(hours=1)),
        request(3_000, auth="a3", deadline_at=NOW + timedelta(hours=1)),
        cleared("a1", 900),
    )
    await store.commit(_batch(None, first, "a1", "a2", "a3"), {})
    second = _after(first, reversed_("a2", 500), cleared("a3", 3_000), refund(200, auth="a1"))
    await store.commit(_batch(first, second, "a1", "a2", "a3"), {})
    loaded = (await store.load_wallets([first.wallet_id], NOW))[first.wallet_id]
    holds = await pool.fetch("SELECT authorization_id, amount_minor FROM authorizer.holds ORDER BY 1")
    assert ([tuple(row) for row in holds], _without_memory_only(loaded)) == (
        [("a2", 1_500)],
        _without_memory_only(second),
    )


async def test_a_batch_that_only_places_holds_leaves_the_snapshot_and_still_reads_back(pool: asyncpg.Pool) -> None:
    """Holds and their totals are rows and sums of rows: a batch of approvals rewrites no snapshot
    (the row's version is the same), and the wallet reads back with the new holds counted.
    """
    store = Store(pool, "group-store-holds")
    empty = wallet(WalletCaps(rolling_24h=usd(10_000)))
    first = _after(empty, request(1_000, auth="h1", deadline_at=NOW + timedelta(hours=1)))
    await store.commit(_batch(None, first, "h1"), {})
    version = "SELECT xmin::text FROM authorizer.wallet_state WHERE wallet_id = $1"
    before = await pool.fetchval(version, first.wallet_id)
    second = _after(first, request(2_000, auth="h2", deadline_at=NOW + timedelta(hours=1)))
    await store.commit(_batch(first, second, "h2"), {})
    loaded = (await store.load_wallets([first.wallet_id], NOW))[first.wallet_id]
    assert (await pool.fetchval(version, first.wallet_id), loaded.held, _without_memory_only(loaded)) == (
        before,
        {"wallet": 3_000, f"card:{CARD}": 3_000},
        _without_memory_only(second),
    )


async def test_a_hold_no_message_named_is_still_written(pool: asyncpg.Pool) -> None:
    """Only the named authorizations are compared; if the counts disagree (a hold changed that no
    message named), every hold is compared instead and nothing is lost.
    """
    store = Store(pool, "group-store-unnamed")
    first = _after(wallet(WalletCaps(rolling_24h=usd(10_000))), request(1_000, auth="u1"), request(500, auth="u2"))
    await store.commit(_batch(None, first, "u1"), {})
    second = _after(first, reversed_("u1", 1_000), request(700, auth="u3"))
    await store.commit(_batch(first, second, "u3"), {})
    loaded = (await store.load_wallets([first.wallet_id], NOW))[first.wallet_id]
    holds = await pool.fetch("SELECT authorization_id, amount_minor FROM authorizer.holds ORDER BY 1")
    assert ([tuple(row) for row in holds], _without_memory_only(loaded)) == (
        [("u2", 500), ("u3", 700)],
        _without_memory_only(second),
    )


async def _plan(pool: asyncpg.Pool, query: str) -> str:
    """The plan of a chunk of `query` (its `$1` at NOW), with sequential scans ruled out as a last
    resort: on a table this small an index the planner can use shows up only then.
    """
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        rows = await connection.fetch(f"EXPLAIN {query} LIMIT 5000", NOW)
    return "\n".join(row[0] for row in rows)


async def test_published_outbox_rows_are_forgotten_after_the_retention(pool: asyncpg.Pool) -> None:
    """Published rows older than the retention go; recent and unpublished rows stay (for the relay)."""
    store = Store(pool, "group-outbox")
    await pool.execute(
        """INSERT INTO authorizer.outbox (topic, message_key, payload, published_at) VALUES
           ('t', 'w', 'old', $1), ('t', 'w', 'recent', $2), ('t', 'w', 'unsent', NULL)""",
        NOW - timedelta(days=3), NOW - timedelta(hours=1),
    )  # fmt: skip
    assert await store.forget_published(NOW) == 1
    rows = await pool.fetch("SELECT payload FROM authorizer.outbox ORDER BY outbox_id")
    assert [row["payload"] for row in rows] == ["recent", "unsent"]


async def test_old_rows_are_forgotten_in_chunks_by_an_index(pool: asyncpg.Pool) -> None:
    """Seven old outbox rows and seven old postings go three per statement; the recent ones stay.
    The outbox's chunks are found through `outbox_published_at` (migration 0011), not by reading the
    whole outbox, which holds two days of decisions.
    """
    store = Store(pool, "group-chunks")
    old, recent = NOW - timedelta(days=3), NOW - timedelta(hours=1)
    await pool.executemany(
        "INSERT INTO authorizer.outbox (topic, message_key, payload, published_at) VALUES ('t', 'w', $1, $2)",
        [(f"old{n}", old + timedelta(seconds=n)) for n in range(7)] + [("recent", recent)],
    )
    await pool.executemany(
        "INSERT INTO authorizer.postings (wallet_id, posting_id, at, card_id, trace_id, amount_minor)"
        " VALUES ('w', $1, $2, 'c', NULL, 100)",
        [(f"p{n}", old + timedelta(seconds=n)) for n in range(7)] + [("kept", recent)],
    )
    assert (await store.forget_published(NOW, chunk=3), await store.forget_old_postings(NOW, chunk=3)) == (7, 7)
    outbox = await pool.fetch("SELECT payload FROM authorizer.outbox ORDER BY outbox_id")
    postings = await pool.fetch("SELECT posting_id FROM authorizer.postings")
    assert ([row[0] for row in outbox], [row[0] for row in postings]) == (["recent"], ["kept"])
    plan = await _plan(pool, "SELECT outbox_id FROM authorizer.outbox WHERE published_at < $1 ORDER BY published_at")
    assert "outbox_published_at" in plan


async def test_applied_issuer_events_are_forgotten_after_the_retention_by_an_index(pool: asyncpg.Pool) -> None:
    """The ids of issuer events applied more than 14 days ago go (no retry or replay can bring them
    again), three per statement; the recent ones stay, so a redelivery is still applied once. Found
    through `applied_events_applied_at` (migration 0015), not by reading every id ever applied.
    """
    store = Store(pool, "group-applied")
    old, recent = NOW - timedelta(days=15), NOW - timedelta(days=13)
    ids = [uuid.uuid4() for _ in range(8)]
    await pool.executemany(
        "INSERT INTO authorizer.applied_events (event_id, wallet_id, applied_at) VALUES ($1, 'w', $2)",
        [(event_id, old + timedelta(seconds=n)) for n, event_id in enumerate(ids[:7])] + [(ids[7], recent)],
    )
    assert await store.forget_applied_events(NOW, chunk=3) == 7
    assert await store.applied_events(ids) == {ids[7]}
    plan = await _plan(pool, "SELECT event_id FROM authorizer.applied_events WHERE applied_at < $1 ORDER BY applied_at")
    assert "applied_events_applied_at" in plan


async def test_a_decision_is_sent_once_and_its_outbox_row_carries_it(pool: asyncpg.Pool) -> None:
    """Decisions' outbox rows name their decision instead of repeating its JSON (migration 0017):
    the outbox keeps every row's payload in the order given, decisions among other rows, and what
    is left unpublished reads back as it was committed.
    """
    store = Store(pool, "group-outbox-once")
    events, _ = run_on(wallet(), request(100, auth="o1"), request(10**9, auth="o2"))
    first, second = events[-2:]  # an approval and a decline, as the authorizer made them
    effects = BatchEffects()
    effects.outbox.append(("wallet.events", "wal_1", str(uuid.uuid4()), b'{"n": 1}'))
    effects.add_decision(first, first.model_dump_json().encode(), "auth.decisions", str(first.event_id))
    effects.outbox.append(("auth.requests.dead-letter", "wal_1", str(uuid.uuid4()), b'{"n": 2}'))
    effects.add_decision(second, second.model_dump_json().encode(), "auth.decisions", str(second.event_id))
    rows = await store.commit(effects, {})
    written = [(row.topic, row.key, row.payload) for row in await store.unpublished()]
    expected = [(topic, key.encode(), payload) for topic, key, _, payload in effects.outbox]
    assert ([(row.topic, row.key, row.payload) for row in rows], written) == (expected, expected)
    assert [row.outbox_id for row in rows] == sorted(row.outbox_id for row in rows)


async def test_decision_payloads_are_compressed_with_lz4_and_read_back_as_written(pool: asyncpg.Pool) -> None:
    """Decisions' JSON, over the 2 KB at which Postgres compresses a value, is stored with lz4 in the
    decisions table and the outbox (migration 0018: half pglz's CPU), and reads back byte for byte.
    """
    store = Store(pool, "group-lz4")
    events, _ = run_on(wallet(), request(100, auth="lz1"))
    decision = events[-1]
    payload = decision.model_dump_json().encode()
    padded = payload[:-1] + b',"padding":"' + b"x" * 4096 + b'"}'  # well over the threshold, compressible
    effects = BatchEffects()
    effects.add_decision(decision, padded, "auth.decisions", str(decision.event_id))
    await store.commit(effects, {})
    stored = await pool.fetchrow(
        """SELECT d.decision, pg_column_compression(d.decision) AS d_method, o.payload,
                  pg_column_compression(o.payload) AS o_method
             FROM authorizer.decisions d JOIN authorizer.outbox o ON o.event_id = $1::uuid
            WHERE d.issuer_authorization_id = 'lz1'""",
        str(decision.event_id),
    )  # fmt: skip
    assert (stored["decision"].encode(), stored["payload"].encode()) == (padded, padded)
    assert (stored["d_method"], stored["o_method"]) == ("lz4", "lz4")


@pytest.mark.parametrize(
    "column",
    [
        [],
        ["a"],
        ["a", "b"],
        [None],
        [None, None],
        ["a", None, "b"],
        ["", "x"],
        ['{"json": "with \\u001f escaped"}', None],
    ],
)
async def test_a_packed_text_column_unpacks_to_the_same_elements(pool: asyncpg.Pool, column: list[str | None]) -> None:
    """The text columns commit_batch_packed takes (migration 0019) read back element for element,
    NULLs included, in Postgres's own unpacking.
    """
    assert await pool.fetchval("SELECT authorizer.unpack_text($1)", _packed(column)) == column


@pytest.mark.parametrize(
    ("cast", "index", "column"),
    [
        ("bigint[]", 14, [0, 1, -5, 10**11, None]),
        ("integer[]", 35, [1, None, 2]),
        ("boolean[]", 25, [True, False, None]),
        ("uuid[]", 36, [uuid.UUID(int=7), uuid.uuid4()]),
        ("timestamptz[]", 28, [NOW, NOW, NOW + timedelta(days=7), None]),
        ("timestamptz[]", 7, [datetime(2026, 3, 8, 12, 30, tzinfo=ZoneInfo("America/New_York")), NOW]),
        ("bigint[]", 38, []),
    ],
)
async def test_number_flag_id_and_time_columns_pack_and_read_back_equal(
    pool: asyncpg.Pool, cast: str, index: int, column: list[Any]
) -> None:
    """The columns commit_batch_all_packed takes as text (migration 0022) read back as the values
    packed, whatever the session's time zone: times carry their offset.
    """
    async with pool.acquire() as connection:
        await connection.execute("SET TIME ZONE 'Asia/Kolkata'")
        unpacked = await connection.fetchval(f"SELECT authorizer.unpack_text($1)::{cast}", _argument(index, column))
        await connection.execute("RESET TIME ZONE")
    assert unpacked == column


def test_a_naive_time_is_refused_not_stored_at_the_sessions_offset() -> None:
    """A datetime without a zone would be read in the session's time zone: an error instead."""
    with pytest.raises(ValueError, match="naive"):
        _argument(28, [datetime(2026, 12, 5, 12, 0)])  # noqa: DTZ001 - the mistake under test


@pytest.mark.parametrize("column", [["a\x1fb"], ["a\x1eb"], ["ok", "\x1e"], [""]])
def test_a_column_that_could_not_be_told_apart_is_refused_not_packed(column: list[str | None]) -> None:
    """An element holding the separator or the NULL stand-in, or a lone empty string (it would
    read back as no element at all), is an error, never a different batch written.
    """
    with pytest.raises(ValueError, match=r"packed|packing"):
        _packed(column)


async def test_migration_0021_moves_monthly_spend_into_periods_with_years_and_the_wallets_lifetime(
    empty_database_url: str,
) -> None:
    """A snapshot written before weekly, yearly and all-time caps ("monthly": {"<scope>@YYYY-MM": n})
    reads back after migration 0021 with its months, each year summed from them, no weeks, and the
    wallet's lifetime the sum of its cards'.
    """
    state = wallet(WalletCaps(monthly=usd(50_000)))
    old = json.loads(_STATE.dump_json(state))
    old.pop("periods")
    old["monthly"] = {"wallet@2026-11": 700, "card:card_1@2026-11": 500, "card:card_2@2026-11": 200,
                      "wallet@2026-12": 300, "card:card_1@2026-12": 300}  # fmt: skip
    old["lifetime"] = {"card:card_1": 4_000, "card:card_2": 250, "trace:PR-1": 90}
    connection = await asyncpg.connect(empty_database_url)
    try:
        await apply_migrations(connection, [m for m in discover() if m.version < 21])
        await connection.execute(
            "INSERT INTO authorizer.wallet_state (wallet_id, state) VALUES ($1, $2::jsonb)",
            state.wallet_id,
            json.dumps(old),
        )
        await apply_migrations(connection)
        pool = await asyncpg.create_pool(empty_database_url, min_size=1, max_size=1)
        try:
            loaded = (await Store(pool, "group-0021").load_wallets([state.wallet_id], NOW))[state.wallet_id]
        finally:
            await pool.close()
    finally:
        await connection.close()
    assert loaded.periods == {
        "2026-11": {"wallet": 700, "card:card_1": 500, "card:card_2": 200},
        "2026-12": {"wallet": 300, "card:card_1": 300},
        "2026": {"wallet": 1_000, "card:card_1": 800, "card:card_2": 200},
    }
    assert loaded.lifetime == {"card:card_1": 4_000, "card:card_2": 250, "trace:PR-1": 90, "wallet": 4_250}
    assert replace(loaded, periods={}, lifetime={}, holds={}) == replace(
        _without_memory_only(state), periods={}, lifetime={}, holds={}
    )
