"""The ledger on the real Kafka and Postgres with the authorizer running: a scripted scenario gives
the exact numbers in every view, postings balance, duplicates change nothing, reconcile agrees (and
notices tampering), the reader role reads views only, and a kill -9 loses and doubles nothing.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from prometheus_client import REGISTRY, generate_latest

from schemas.authorizations import AuthorizationDecided
from schemas.common import Issuer, ReasonCode
from schemas.policies import WalletCaps
from schemas.registry import Message
from schemas.topics import Topic
from schemas.wallet import BindTrace, CapBreachedByIssuer, CreateCard, CreateWallet, MoneyMoved
from services.cli import main as cli_main
from services.ledger.consumer import Ledger
from services.ledger.store import export_csv, reconcile
from services.platform.settings import Settings
from tests.support.builders import (
    approved_by_issuer,
    cleared,
    command_fields,
    force_post,
    refund,
    request,
    reversed_,
    usd,
)
from tests.support.kafka_io import Collector, apply_commands, publish
from tests.support.processes import service_env, start
from tests.support.samples import MERCHANT
from tests.support.services import consuming, running_authorizer

W1, W2 = "wal_ledger_1", "wal_ledger_2"


@pytest.fixture
async def ledger(kafka_topics: Settings, pool: asyncpg.Pool) -> AsyncIterator[Ledger]:
    """One ledger instance consuming in the test's event loop."""
    running = Ledger(kafka_topics, pool)
    async with consuming(running):
        yield running


def _in(wallet_id: str, message: Any, **changes: Any) -> Any:
    return message.model_copy(update={"wallet_id": wallet_id, **changes})


def _commands(now: datetime) -> list[Message]:
    def fields(wallet_id: str) -> dict[str, Any]:
        return command_fields(now) | {"wallet_id": wallet_id}

    caps = WalletCaps(rolling_24h=usd(10_000), per_authorization=usd(3_000), per_trace=usd(2_500))
    return [
        CreateWallet(**fields(W1), caps=caps, label="research agent"),
        CreateCard(**fields(W1), card_id="lc_1", issuer=Issuer.STRIPE, issuer_card_token="ic_l1", last4="0001",
                   funded_amount=usd(5_000)),
        CreateCard(**fields(W1), card_id="lc_2", issuer=Issuer.STRIPE, issuer_card_token="ic_l2", last4="0002"),
        BindTrace(**fields(W1), trace_id="PR-1", card_id="lc_1"),
        BindTrace(**fields(W1), trace_id="PR-2", card_id="lc_2"),
        CreateWallet(**fields(W2), caps=WalletCaps(rolling_24h=usd(5_000)), time_zone="America/New_York"),
        CreateCard(**fields(W2), card_id="lc_3", issuer=Issuer.STRIPE, issuer_card_token="ic_l3", last4="0003"),
        BindTrace(**fields(W2), trace_id="PR-3", card_id=None),
    ]  # fmt: skip


def _requests(now: datetime) -> list[Message]:
    later = {"at": now, "deadline_at": now + timedelta(minutes=5)}
    return [
        _in(W1, request(1_000, auth="la1", card="lc_1", **later)),
        _in(W1, request(500, auth="la2", card="lc_1", **later)),
        _in(W1, request(4_000, auth="la3", card="lc_1", **later)),  # over the $30.00 per-authorization cap
        _in(W1, request(2_000, auth="la4", card="lc_2", **later)),
        _in(W1, request(400, auth="la5", card="lc_2", **later)),
        _in(W2, request(300, auth="la6", card="lc_3", **later)),
    ]


def _lifecycle(now: datetime) -> list[Message]:
    return [
        _in(W1, cleared("la1", 900, now), card_id="lc_1"),  # cleared below the hold
        _in(W1, reversed_("la2", 500, now, full=True), card_id="lc_1"),
        _in(W1, cleared("la4", 2_000, now), card_id="lc_2"),
        _in(W1, refund(500, now, auth="la4"), card_id="lc_2"),
        _in(W1, reversed_("la5", 100, now), card_id="lc_2"),  # partial: $3.00 stays held
        _in(W2, cleared("la6", 100, now, final=False), card_id="lc_3"),  # one of several partial captures
        _in(W2, force_post(200, now), card_id="lc_3"),  # no authorization at all
    ]


async def _until(pool: asyncpg.Pool, query: str, expected: object, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while (value := await pool.fetchval(query)) != expected:  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.1)
    assert value == expected


async def _scenario(settings: Settings, pool: asyncpg.Pool) -> tuple[list[Any], list[Any]]:
    """Drive the scenario through the authorizer; return its decisions and movements."""
    now = datetime.now(UTC)
    await apply_commands(settings, _commands(now))
    async with Collector(settings, Topic.AUTH_DECISIONS) as decisions:
        await publish(settings, Topic.AUTH_REQUESTS, _requests(now))
        decided = await decisions.wait_for(lambda items: len(items) >= 6)
    async with Collector(settings, Topic.WALLET_EVENTS) as events:
        await publish(settings, Topic.ISSUER_EVENTS, _lifecycle(now))
        moved = await events.wait_for(lambda items: sum(isinstance(e, MoneyMoved) for e in items) >= 7)
    # 6 decisions, 7 movements, 1 card funding.
    await _until(pool, "SELECT count(*) FROM ledger.entries", 14)
    await _until(pool, "SELECT count(*) FROM ledger.issuer_reports", 7)
    return decided, [e for e in moved if isinstance(e, MoneyMoved)]


async def _rows(pool: asyncpg.Pool, query: str) -> list[dict[str, Any]]:
    return [dict(row) for row in await pool.fetch(query)]


@pytest.mark.slow
@pytest.mark.usefixtures("ledger")
async def test_a_scripted_scenario_gives_the_exact_numbers_in_every_view(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """Approvals, a decline, clearing below the hold, reversals, a refund and a force-post, by view."""
    async with running_authorizer(kafka_topics, pool):
        decided, _ = await _scenario(kafka_topics, pool)
        assert {d.issuer_authorization_id: d.reason for d in decided}["la3"] == ReasonCode.PER_AUTHORIZATION_CAP

        assert await _rows(
            pool, "SELECT card_id, funded_minor, available_minor, held_minor, spent_minor FROM ledger.card_balances "
            "ORDER BY card_id"
        ) == [
            {"card_id": "lc_1", "funded_minor": 5_000, "available_minor": 4_100, "held_minor": 0, "spent_minor": 900},
            {"card_id": "lc_2", "funded_minor": None, "available_minor": -1_800, "held_minor": 300,
             "spent_minor": 1_500},
            {"card_id": "lc_3", "funded_minor": None, "available_minor": -500, "held_minor": 200, "spent_minor": 300},
        ]  # fmt: skip
        assert await _rows(
            pool, "SELECT coalesce(authorization_id, 'force') AS id, status, held_minor, captured_minor, "
            "reversed_minor, refunded_minor, open_hold_minor, final_minor, trace_id FROM ledger.transactions ORDER BY 1"
        ) == [
            {"id": "force", "status": "force_posted", "held_minor": 0, "captured_minor": 200, "reversed_minor": 0,
             "refunded_minor": 0, "open_hold_minor": 0, "final_minor": 200, "trace_id": "PR-3"},
            {"id": "la1", "status": "captured", "held_minor": 1_000, "captured_minor": 900, "reversed_minor": 0,
             "refunded_minor": 0, "open_hold_minor": 0, "final_minor": 900, "trace_id": "PR-1"},
            {"id": "la2", "status": "reversed", "held_minor": 500, "captured_minor": 0, "reversed_minor": 500,
             "refunded_minor": 0, "open_hold_minor": 0, "final_minor": 0, "trace_id": "PR-1"},
            {"id": "la3", "status": "declined", "held_minor": 0, "captured_minor": 0, "reversed_minor": 0,
             "refunded_minor": 0, "open_hold_minor": 0, "final_minor": 0, "trace_id": "PR-1"},
            {"id": "la4", "status": "partially_refunded", "held_minor": 2_000, "captured_minor": 2_000,
             "reversed_minor": 0, "refunded_minor": 500, "open_hold_minor": 0, "final_minor": 1_500,
             "trace_id": "PR-2"},
            {"id": "la5", "status": "held", "held_minor": 400, "captured_minor": 0, "reversed_minor": 100,
             "refunded_minor": 0, "open_hold_minor": 300, "final_minor": 0, "trace_id": "PR-2"},
            {"id": "la6", "status": "partially_captured", "held_minor": 300, "captured_minor": 100,
             "reversed_minor": 0, "refunded_minor": 0, "open_hold_minor": 200, "final_minor": 100,
             "trace_id": "PR-3"},
        ]  # fmt: skip
        assert await _rows(
            pool, "SELECT trace_id, spent_minor, held_minor, authorizations, approvals, declines "
            "FROM ledger.spend_by_trace ORDER BY trace_id"
        ) == [
            {"trace_id": "PR-1", "spent_minor": 900, "held_minor": 0, "authorizations": 3, "approvals": 2,
             "declines": 1},
            {"trace_id": "PR-2", "spent_minor": 1_500, "held_minor": 300, "authorizations": 2, "approvals": 2,
             "declines": 0},
            {"trace_id": "PR-3", "spent_minor": 300, "held_minor": 200, "authorizations": 1, "approvals": 1,
             "declines": 0},
        ]  # fmt: skip
        assert await _rows(
            pool, "SELECT wallet_id, spent_minor, refunded_minor, net_minor, movements FROM ledger.spend_by_wallet_day "
            "ORDER BY wallet_id"
        ) == [
            {"wallet_id": W1, "spent_minor": 2_900, "refunded_minor": 500, "net_minor": 2_400, "movements": 3},
            {"wallet_id": W2, "spent_minor": 300, "refunded_minor": 0, "net_minor": 300, "movements": 2},
        ]  # fmt: skip
        assert await _rows(
            pool, "SELECT wallet_id, merchant_name, spent_minor, purchases FROM ledger.spend_by_merchant "
            "ORDER BY wallet_id"
        ) == [
            {"wallet_id": W1, "merchant_name": MERCHANT.name, "spent_minor": 2_400, "purchases": 2},
            {"wallet_id": W2, "merchant_name": MERCHANT.name, "spent_minor": 300, "purchases": 2},
        ]  # fmt: skip
        assert await _rows(
            pool, "SELECT wallet_id, reason, failed_cap, declines, declined_minor FROM ledger.declines_by_reason"
        ) == [
            {"wallet_id": W1, "reason": "per_authorization_cap", "failed_cap": "per_authorization",
             "declines": 1, "declined_minor": 4_000},
        ]  # fmt: skip
        assert await _rows(
            pool, "SELECT trace_id, spent_minor, traces_in_wallet, wallet_mean_spent_minor, "
            "wallet_variance_spent_minor FROM ledger.cost_per_task ORDER BY trace_id"
        ) == [
            {"trace_id": "PR-1", "spent_minor": 900, "traces_in_wallet": 2, "wallet_mean_spent_minor": Decimal(1200),
             "wallet_variance_spent_minor": Decimal(180_000)},
            {"trace_id": "PR-2", "spent_minor": 1_500, "traces_in_wallet": 2, "wallet_mean_spent_minor": Decimal(1200),
             "wallet_variance_spent_minor": Decimal(180_000)},
            {"trace_id": "PR-3", "spent_minor": 300, "traces_in_wallet": 1, "wallet_mean_spent_minor": Decimal(300),
             "wallet_variance_spent_minor": Decimal(0)},
        ]  # fmt: skip
        assert (
            await pool.fetchval(
                "SELECT merchant_amount_minor::text || merchant_currency FROM ledger.transactions "
                "WHERE authorization_id = 'la1'"
            )
            == "1000USD"
        )
        unbalanced = await pool.fetch(
            "SELECT entry_id FROM ledger.postings GROUP BY entry_id, currency HAVING sum(amount_minor) <> 0"
        )
        assert unbalanced == []
        async with pool.acquire() as connection:
            assert await reconcile(connection) == (3, [])


@pytest.mark.usefixtures("ledger")
async def test_holds_the_issuer_placed_without_us_are_in_every_balance_and_reconcile(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A $10 wallet: $12 declined by us but approved by the issuer, and $3 the issuer approved without
    asking (a stand-in), then captured. Both are held (the first over the cap, reported), the ledger
    journals the holds from MoneyMoved version 2, every balance says so, and reconcile agrees.
    """
    now = datetime.now(UTC)
    wallet = "wal_ledger_3"
    async with running_authorizer(kafka_topics, pool):
        fields = command_fields(now) | {"wallet_id": wallet}
        await apply_commands(kafka_topics, [
            CreateWallet(**fields, caps=WalletCaps(rolling_24h=usd(1_000))),
            CreateCard(**command_fields(now) | {"wallet_id": wallet}, card_id="lc_4", issuer=Issuer.STRIPE,
                       issuer_card_token="ic_l4", last4="0004"),
        ])  # fmt: skip
        async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
            later = {"at": now, "deadline_at": now + timedelta(minutes=5)}
            await publish(kafka_topics, Topic.AUTH_REQUESTS, [_in(wallet, request(1_200, auth="li1", card="lc_4",
                                                                                  **later))])  # fmt: skip
            (decided,) = await decisions.wait_for(lambda items: len(items) >= 1)
        assert (decided.approved, decided.reason) == (False, ReasonCode.WALLET_ROLLING_24H_CAP)
        async with Collector(kafka_topics, Topic.WALLET_EVENTS) as events:
            await publish(kafka_topics, Topic.ISSUER_EVENTS, [
                _in(wallet, approved_by_issuer("li1", 1_200, now), card_id="lc_4"),
                _in(wallet, approved_by_issuer("ls1", 300, now), card_id="lc_4"),
                _in(wallet, cleared("ls1", 300, now), card_id="lc_4"),
            ])  # fmt: skip
            said = await events.wait_for(lambda items: sum(isinstance(e, MoneyMoved) for e in items) >= 3)
        moved = [(e.schema_version, e.source_type, e.hold_placed_minor, e.hold_released_minor, e.spent_minor)
                 for e in said if isinstance(e, MoneyMoved)]  # fmt: skip
        assert moved == [
            (2, "authorization_approved_by_issuer", 1_200, 0, 0),
            (2, "authorization_approved_by_issuer", 300, 0, 0),
            (1, "authorization_cleared", 0, 300, 300),
        ]
        breaches = [
            (e.issuer_transaction_id, e.over_by.amount_minor) for e in said if isinstance(e, CapBreachedByIssuer)
        ]
        assert breaches == [("li1", 200), ("ls1", 500)]
        await _until(pool, f"SELECT count(*) FROM ledger.entries WHERE wallet_id = '{wallet}'", 4)  # noqa: S608
        assert await _rows(
            pool, f"SELECT authorization_id, status, approved, requested_minor, merchant_name, held_minor, "  # noqa: S608
            f"held_by_issuer_minor, captured_minor, open_hold_minor FROM ledger.transactions "
            f"WHERE wallet_id = '{wallet}' ORDER BY 1"
        ) == [
            {"authorization_id": "li1", "status": "held", "approved": False, "requested_minor": 1_200,
             "merchant_name": MERCHANT.name, "held_minor": 1_200, "held_by_issuer_minor": 1_200, "captured_minor": 0,
             "open_hold_minor": 1_200},
            {"authorization_id": "ls1", "status": "captured", "approved": None, "requested_minor": 300,
             "merchant_name": MERCHANT.name, "held_minor": 300, "held_by_issuer_minor": 300, "captured_minor": 300,
             "open_hold_minor": 0},
        ]  # fmt: skip
        assert await _rows(
            pool, "SELECT held_minor, spent_minor, available_minor FROM ledger.card_balances WHERE card_id = 'lc_4'"
        ) == [{"held_minor": 1_200, "spent_minor": 300, "available_minor": -1_500}]
        async with pool.acquire() as connection:
            assert await reconcile(connection) == (1, [])


@pytest.mark.slow
@pytest.mark.usefixtures("ledger")
async def test_duplicates_change_nothing_and_reconcile_notices_tampering(
    kafka_topics: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every decision and movement again: no new entry; then a tampered hold is reported."""
    async with running_authorizer(kafka_topics, pool):
        decided, moved = await _scenario(kafka_topics, pool)
    before = REGISTRY.get_sample_value("pursestrings_ledger_duplicates_ignored_total") or 0
    await publish(kafka_topics, Topic.AUTH_DECISIONS, decided)
    await publish(kafka_topics, Topic.WALLET_EVENTS, moved)
    async with asyncio.timeout(60):
        while (REGISTRY.get_sample_value("pursestrings_ledger_duplicates_ignored_total") or 0) - before < 13:  # noqa: ASYNC110 - a metric, not an event
            await asyncio.sleep(0.1)
    assert await pool.fetchval("SELECT count(*) FROM ledger.entries") == 14
    metrics = generate_latest().decode()
    for series in (
        'pursestrings_ledger_entries_recorded_total{type="authorization_decided"}',
        'pursestrings_ledger_entries_recorded_total{type="authorization_cleared"}',
        "pursestrings_ledger_duplicates_ignored_total",
        'pursestrings_ledger_lag_records{topic="auth.decisions"}',
        "pursestrings_ledger_batch_seconds_bucket",
    ):
        assert series in metrics

    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", kafka_topics.database_url.get_secret_value())
    assert await asyncio.to_thread(cli_main, ["ledger", "reconcile"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "3 cards compared, 0 mismatches"

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("UPDATE ledger.postings SET amount_minor = amount_minor + 1")
    await pool.execute("UPDATE authorizer.holds SET amount_minor = amount_minor + 7 WHERE authorization_id = 'la5'")
    assert await asyncio.to_thread(cli_main, ["ledger", "reconcile"]) == 1
    assert capsys.readouterr().out.strip().splitlines() == [
        "MISMATCH card lc_2: held ledger=300 authorizer=307 (difference -7)",
        f"MISMATCH wallet {W1}: held ledger=300 authorizer=307 (difference -7)",
        "3 cards compared, 2 mismatches",
    ]

    async with pool.acquire() as connection:
        since = datetime.now(UTC) - timedelta(hours=1)
        exported = await export_csv(connection, "trace", since, since + timedelta(hours=2))
    assert exported.splitlines() == [
        "wallet_id,trace_id,currency,spent_minor,authorizations,approvals,declines",
        f"{W1},PR-1,USD,900,3,2,1",
        f"{W1},PR-2,USD,1500,2,2,0",
        f"{W2},PR-3,USD,300,1,1,0",
    ]
    assert await asyncio.to_thread(cli_main, ["ledger", "export", "--by", "wallet", "--since", since.isoformat()]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [f"{W1},USD,2400,5,4,1", f"{W2},USD,300,1,1,0"]


async def test_the_reader_role_reads_the_views_and_nothing_else(settings: Settings, pool: asyncpg.Pool) -> None:
    """A login granted `pursestrings_reader` may SELECT the views; no table, no other schema, no write."""
    login, password = f"reader_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await pool.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE pursestrings_reader")
    url = urlsplit(settings.database_url.get_secret_value())
    dsn = urlunsplit(url._replace(netloc=f"{login}:{password}@{url.hostname}:{url.port}"))
    connection = await asyncpg.connect(dsn=dsn)
    try:
        for view in ("transactions", "spend_by_trace", "spend_by_wallet_day", "spend_by_merchant",
                     "declines_by_reason", "card_balances", "cost_per_task", "movements"):  # fmt: skip
            assert await connection.fetch(f"SELECT * FROM ledger.{view}") == []  # noqa: S608 - fixed names
        for forbidden in (
            "SELECT * FROM ledger.postings",
            "SELECT * FROM ledger.entries",
            "SELECT * FROM authorizer.holds",
            "SELECT * FROM gateway.api_keys",
            "INSERT INTO ledger.wallets VALUES ('w', 'l', 'USD', 'UTC', now())",
            "DELETE FROM ledger.entries",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(forbidden)
    finally:
        await connection.close()
        await pool.execute(f"DROP ROLE {login}")


def _decision(index: int, now: datetime) -> AuthorizationDecided:
    return AuthorizationDecided(
        event_id=uuid.uuid4(),
        request_event_id=uuid.uuid4(),
        wallet_id=f"wal_k{index % 7}",
        card_id=f"card_k{index % 7}",
        issuer=Issuer.STRIPE,
        issuer_authorization_id=f"k{index}",
        approved=index % 3 != 0,
        reason=ReasonCode.APPROVED if index % 3 else ReasonCode.WALLET_ROLLING_24H_CAP,
        amount=usd(100),
        cap_amount=usd(100),
        merchant=MERCHANT,
        trace_id=f"T-{index % 11}",
        decided_at=now,
        hold_expires_at=now + timedelta(days=7) if index % 3 else None,
    )


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return start("services.ledger", service_env(settings, PURSESTRINGS_LEDGER_HEALTH_PORT="0"), log)


@pytest.mark.slow
async def test_kill_9_of_the_ledger_mid_stream_records_every_decision_once(
    kafka_topics: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """SIGKILL while recording 6,000 decisions (each sent twice), restart: 6,000 entries, all balanced."""
    count, now, log = 6_000, datetime.now(UTC), tmp_path / "ledger.log"
    decisions = [_decision(index, now) for index in range(count)]
    await publish(kafka_topics, Topic.AUTH_DECISIONS, decisions + decisions[: count // 2])
    process = _start(kafka_topics, log)
    try:
        async with asyncio.timeout(90):
            while (await pool.fetchval("SELECT count(*) FROM ledger.entries")) < count // 6:  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        killed_at = await pool.fetchval("SELECT count(*) FROM ledger.entries")
        process = _start(kafka_topics, log)
        await publish(kafka_topics, Topic.AUTH_DECISIONS, decisions[count // 2 :])
        await _until(pool, "SELECT count(*) FROM ledger.entries", count, timeout_s=120)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert killed_at < count, "the kill came after everything was recorded: it proved nothing"
    assert await _rows(
        pool, "SELECT count(*) AS postings, count(DISTINCT entry_id) AS entries, sum(amount_minor) AS total, "
        "sum(amount_minor) FILTER (WHERE account = 'held') AS held FROM ledger.postings"
    ) == [{"postings": 2 * count, "entries": count, "total": 0, "held": 100 * (count - count // 3)}]  # fmt: skip


async def test_the_transactions_view_gives_the_rows_it_gave_before_it_was_made_filterable(
    pool: asyncpg.Pool,
) -> None:
    """Migration 0012 rewrote ledger.transactions so that a filter on a wallet reaches the tables. On
    entries of every kind of lifecycle (held, captured in part, reversed, expired, refunded, declined,
    captured without a decision, force-posted, across two wallets), it gives exactly the rows of
    migration 0007's definition, as a whole and for one wallet; migration 0014 (holds the issuer
    placed) only adds a column, `held_by_issuer_minor`, and 0020 (increments) two more, `increments`
    and `incremented_minor`: 0 on all of them.
    """
    now = datetime.now(UTC)
    entries = [
        # kind, source_type, wallet, auth, transaction, held, released, spent, approved
        ("decision", "authorization_decided", W1, "t1", None, 1_000, 0, 0, True),
        ("money_moved", "authorization_cleared", W1, "t1", "x1", 0, 1_000, 900, None),
        ("money_moved", "refund_posted", W1, "t1", "x2", 0, 0, -300, None),
        ("decision", "authorization_decided", W1, "t2", None, 500, 0, 0, True),
        ("money_moved", "authorization_reversed", W1, "t2", None, 0, 200, 0, None),
        ("decision", "authorization_decided", W2, "t3", None, 700, 0, 0, True),
        ("money_moved", "authorization_expired", W2, "t3", None, 0, 700, 0, None),
        ("decision", "authorization_decided", W2, "t4", None, 0, 0, 0, False),
        ("money_moved", "authorization_cleared", W2, "t5", "x3", 0, 0, 400, None),
        ("money_moved", "force_posted", W1, None, "x4", 0, 0, 250, None),
    ]
    await pool.executemany(
        """INSERT INTO ledger.entries (entry_id, kind, source_type, wallet_id, card_id, trace_id, issuer,
                                       issuer_authorization_id, issuer_transaction_id, merchant_name, currency,
                                       cap_amount_minor, held_minor, hold_released_minor, spent_minor, approved,
                                       reason, occurred_at, counted_at)
           VALUES ($1, $2, $3, $4, 'card_' || $4, 'PR-' || $4, 'stripe', $5, $6,
                   CASE WHEN $2 = 'decision' OR $3 = 'force_posted' THEN 'Shop' END, 'USD',
                   CASE WHEN $2 = 'decision' THEN 1000 END, $7, $8, $9, $10,
                   CASE WHEN $2 = 'decision' THEN CASE WHEN $10 THEN 'approved' ELSE 'trace_cap' END END, $11, $11)""",
        [(uuid.uuid4(), kind, source, wallet, auth, tx, held, released, spent, approved, now + timedelta(seconds=n))
         for n, (kind, source, wallet, auth, tx, held, released, spent, approved) in enumerate(entries)],
    )  # fmt: skip
    migration = (Path(__file__).parents[2] / "schemas/sql/0007_ledger.sql").read_text()
    before = migration.split("CREATE VIEW ledger.transactions AS", 1)[1].split("CREATE VIEW", 1)[0]
    async with pool.acquire() as connection:
        await connection.execute(f"CREATE TEMPORARY VIEW transactions_0007 AS {before.strip().rstrip(';')}")
        for where in ("", f" WHERE wallet_id = '{W2}'"):
            rows = {}
            for view in ("ledger.transactions", "transactions_0007"):
                query = f"SELECT * FROM {view}{where} ORDER BY 1, 2, 3"  # noqa: S608 - our own names
                rows[view] = [tuple(row) for row in await connection.fetch(query)]
            now_rows, then_rows = rows["ledger.transactions"], rows["transactions_0007"]
            assert {row[-3:] for row in now_rows} == {(0, 0, 0)}  # held by the issuer; increments
            now_rows = [row[:-3] for row in now_rows]
            assert now_rows == then_rows
            assert len(now_rows) == (6 if not where else 3)
