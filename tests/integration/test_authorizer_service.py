"""The authorizer against the real Kafka and Postgres: exact under concurrency, in log order,
idempotent, fenced, and bad messages dead-lettered while processing goes on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import partial
from typing import Any

import asyncpg
import pytest

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import Issuer, ReasonCode
from schemas.money import Money
from schemas.policies import WalletCaps
from schemas.registry import Message, serialize
from schemas.topics import Topic, topic_name
from schemas.wallet import BindTrace, CreateCard, CreateWallet, FreezeCard, MoneyMoved
from services.authorizer import runtime
from services.authorizer.runtime import Authorizer
from services.authorizer.state import RateTable
from services.authorizer.store import BatchEffects, Fenced, Store
from services.platform.settings import Settings
from tests.support.builders import CARD, WALLET, cleared, command_fields, refund, request, reversed_, usd
from tests.support.kafka_io import Collector, apply_commands, publish, publish_raw
from tests.support.samples import samples
from tests.support.services import running_authorizer


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def authorizer(kafka_topics: Settings, pool: asyncpg.Pool) -> AsyncIterator[Authorizer]:
    """One authorizer instance running in the test's event loop."""
    async with running_authorizer(kafka_topics, pool) as running:
        yield running


async def _create_wallet(settings: Settings, caps: WalletCaps) -> None:
    now = _now()
    await apply_commands(
        settings,
        [
            CreateWallet(**command_fields(now), caps=caps),
            CreateCard(
                **command_fields(now), card_id=CARD, issuer=Issuer.STRIPE, issuer_card_token="ic_1", last4="4242"
            ),
        ],
    )


def _requests(count: int, amount_minor: int, prefix: str) -> list[AuthorizationRequested]:
    now = _now()
    return [
        request(amount_minor, auth=f"{prefix}{index}", at=now, deadline_at=now + timedelta(minutes=5))
        for index in range(count)
    ]


def _wallets_with_a_card(wallet_ids: list[str], caps: WalletCaps) -> list[Message]:
    """Commands creating each wallet with one card, `card_<wallet>` (issuer token `ic_<wallet>`)."""
    now = _now()
    return [
        command
        for wallet_id in wallet_ids
        for command in (
            CreateWallet(**command_fields(now) | {"wallet_id": wallet_id}, caps=caps),
            CreateCard(**command_fields(now) | {"wallet_id": wallet_id}, card_id=f"card_{wallet_id}",
                       issuer=Issuer.STRIPE, issuer_card_token=f"ic_{wallet_id}", last4="4242"),
        )
    ]  # fmt: skip


def _request_on(wallet_id: str, amount_minor: int, auth: str, now: datetime) -> AuthorizationRequested:
    """A request on the card `_wallets_with_a_card` gave `wallet_id`, answerable for five minutes."""
    made = request(amount_minor, auth=auth, at=now, deadline_at=now + timedelta(minutes=5))
    return made.model_copy(update={"wallet_id": wallet_id, "card_id": f"card_{wallet_id}"})


def _moved_by(event: object, source_event_id: uuid.UUID) -> bool:
    return isinstance(event, MoneyMoved) and event.source_event_id == source_event_id


def _at_least(count: int, items: list[Any]) -> bool:
    return len(items) >= count


def _decision_lookups(authorizer: Authorizer, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The authorization ids each batch asks Postgres for earlier decisions of, from now on."""
    asked: list[list[str]] = []
    load_decisions = authorizer._store.load_decisions  # noqa: SLF001 - the query this is about

    async def counted(ids: list[str]) -> dict[str, AuthorizationDecided]:
        asked.append(ids)
        return await load_decisions(ids)

    monkeypatch.setattr(authorizer._store, "load_decisions", counted)  # noqa: SLF001
    return asked


@pytest.mark.slow
@pytest.mark.usefixtures("authorizer")
async def test_concurrent_authorizations_approve_exactly_up_to_the_cap(kafka_topics: Settings) -> None:
    """2,000 concurrent $1.00 requests from four producers against $500.00 → exactly 500 approved."""
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(50_000)))
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        await asyncio.gather(
            *[publish(kafka_topics, Topic.AUTH_REQUESTS, _requests(500, 100, f"p{n}-")) for n in range(4)]
        )
        items = await decisions.wait_for(lambda items: len({d.issuer_authorization_id for d in items}) >= 2_000)
    by_id = {d.issuer_authorization_id: d for d in items}
    assert Counter((d.approved, d.reason) for d in by_id.values()) == Counter(
        {(True, ReasonCode.APPROVED): 500, (False, ReasonCode.WALLET_ROLLING_24H_CAP): 1_500}
    )


@pytest.mark.usefixtures("authorizer")
async def test_freeze_then_authorize_is_declined_in_log_order(kafka_topics: Settings) -> None:
    """Once the freeze is applied, the next authorization is declined as card_frozen."""
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(10_000)))
    async with (
        Collector(kafka_topics, Topic.WALLET_EVENTS) as events,
        Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions,
    ):
        await publish(kafka_topics, Topic.AUTH_REQUESTS, _requests(1, 100, "before-"))
        await decisions.wait_for(lambda items: len(items) >= 1)
        await publish(
            kafka_topics, Topic.WALLET_COMMANDS, [FreezeCard(**command_fields(_now()), card_id=CARD, reason="loop")]
        )
        await events.wait_for(lambda items: any(e.type == "status_changed" for e in items))
        await publish(kafka_topics, Topic.AUTH_REQUESTS, _requests(1, 100, "after-"))
        items = await decisions.wait_for(lambda items: len(items) >= 2)
    assert [(d.issuer_authorization_id, d.approved, d.reason) for d in items] == [
        ("before-0", True, ReasonCode.APPROVED),
        ("after-0", False, ReasonCode.CARD_FROZEN),
    ]


@pytest.mark.usefixtures("authorizer")
async def test_a_redelivered_authorization_gets_the_first_answer(kafka_topics: Settings) -> None:
    """The same authorization id sent twice (a retried webhook) is decided once, answered twice alike."""
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(150)))
    [first] = _requests(1, 100, "dup-")
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [first, first])
        items = await decisions.wait_for(lambda items: len(items) >= 2)
    assert (items[0], items[0].approved) == (items[1], True)


@pytest.mark.usefixtures("authorizer")
async def test_a_repeated_issuer_event_moves_money_once(kafka_topics: Settings, pool: asyncpg.Pool) -> None:
    """A clearing the issuer sent twice (same event id) counts once: $6 of a $10 cap, not $12."""
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(1_000)))
    first, after = _requests(1, 600, "clear-") + _requests(1, 300, "after-clear-")
    capture = cleared("clear-0", 600, at=_now())
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [first])
        await decisions.wait_for(lambda items: len(items) >= 1)
        await publish(kafka_topics, Topic.ISSUER_EVENTS, [capture, capture])
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [after])
        items = await decisions.wait_for(lambda items: len(items) >= 2)
    postings = await pool.fetchval("SELECT count(*) FROM authorizer.postings WHERE wallet_id = $1", WALLET)
    applied = await pool.fetchval("SELECT count(*) FROM authorizer.applied_events WHERE wallet_id = $1", WALLET)
    assert ([(d.issuer_authorization_id, d.approved) for d in items], postings, applied) == (
        [("clear-0", True), ("after-clear-0", True)],
        1,
        1,
    )


@pytest.mark.usefixtures("authorizer")
async def test_bad_messages_go_to_the_dead_letter_topic_and_processing_goes_on(kafka_topics: Settings) -> None:
    """Malformed JSON, an unknown schema version and a wrong key are dead-lettered with the error."""
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(10_000)))
    good = _requests(1, 100, "good-")[0]
    newer = json.loads(good.model_dump_json())
    newer["schema_version"] = 2
    async with (
        Collector(kafka_topics, Topic.AUTH_REQUESTS, dead_letter=True) as dead,
        Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions,
    ):
        await publish_raw(
            kafka_topics,
            Topic.AUTH_REQUESTS,
            [
                (WALLET.encode(), b"{not json"),
                (WALLET.encode(), json.dumps(newer).encode()),
                (b"wal_other", good.model_dump_json().encode()),
            ],
        )
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [good])
        letters = await dead.wait_for(lambda items: len(items) >= 3)
        items = await decisions.wait_for(lambda items: len(items) >= 1)
    # The wrong-key letter is on another partition: the three arrive in no fixed order.
    by_key = {json.loads(letter)["key"] + ("/bad-json" if b"{not json" in letter else ""): letter for letter in letters}
    errors = {key: json.loads(letter)["error"] for key, letter in by_key.items()}
    assert ([e.split(":")[0] for e in errors.values()], [d.issuer_authorization_id for d in items]) == (
        ["invalid auth.requests message"] * 3,
        ["good-0"],
    )
    assert [
        "Invalid JSON" in errors[f"{WALLET}/bad-json"],
        "schema_version" in json.loads(by_key[WALLET])["value"],
        "is not the wallet id" in errors["wal_other"],
    ] == [True, True, True]


async def test_a_fenced_zombie_cannot_commit(kafka_topics: Settings, pool: asyncpg.Pool) -> None:
    """After another instance claims the partition, the old epoch's commit is refused."""
    store = Store(pool, "group-z")
    partition = (topic_name(Topic.AUTH_REQUESTS, kafka_topics.topic_prefix), 0)
    [(_, old_epoch)] = (await store.claim([partition])).values()
    [(_, new_epoch)] = (await Store(pool, "group-z").claim([partition])).values()
    with pytest.raises(Fenced, match=f"at epoch {new_epoch}, we hold {old_epoch}"):
        await store.commit(BatchEffects(offsets={partition: 10}), {partition: old_epoch})
    assert (await store.claim([partition]))[partition][0] == 0


@pytest.mark.slow
async def test_two_instances_and_a_rebalance_mid_stream_stay_exact(kafka_topics: Settings, pool: asyncpg.Pool) -> None:
    """A second instance joins while requests flow: partitions move, the cap is still exact."""
    wallets = [f"wal_r{index}" for index in range(6)]
    async with running_authorizer(kafka_topics, pool):
        await apply_commands(kafka_topics, _wallets_with_a_card(wallets, WalletCaps(rolling_24h=usd(70_000))))
        now = _now()
        flood = [
            _request_on(wallet_id, 100, f"{wallet_id}-{index}", now) for index in range(1_000) for wallet_id in wallets
        ]
        async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
            await publish(kafka_topics, Topic.AUTH_REQUESTS, flood[:2_000])
            async with running_authorizer(kafka_topics, pool):
                await publish(kafka_topics, Topic.AUTH_REQUESTS, flood[2_000:])
                items = await decisions.wait_for(
                    lambda items: len({d.issuer_authorization_id for d in items}) >= len(flood), timeout_s=120
                )
    first = {d.issuer_authorization_id: d for d in items}
    approved = Counter(d.wallet_id for d in first.values() if d.approved)
    assert approved == dict.fromkeys(wallets, 700)


async def test_holds_of_an_idle_wallet_expire_without_any_new_message(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """Seven days after an approval nobody cleared, the sweep releases the hold and says so."""
    clock = {"now": _now()}
    authorizer = Authorizer(kafka_topics, pool, clock=lambda: clock["now"])
    await authorizer.start()
    task = asyncio.create_task(authorizer.run())
    try:
        await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(10_000)))
        async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
            await publish(kafka_topics, Topic.AUTH_REQUESTS, _requests(1, 100, "idle-"))
            await decisions.wait_for(lambda items: len(items) >= 1)
        async with Collector(kafka_topics, Topic.ISSUER_EVENTS) as lifecycle:
            clock["now"] += timedelta(days=7, minutes=1)
            expired = await lifecycle.wait_for(lambda items: len(items) >= 1)
    finally:
        task.cancel()
        await authorizer.stop()
    due = await pool.fetchval("SELECT earliest_hold_expiry FROM authorizer.wallet_state WHERE wallet_id = $1", WALLET)
    rows = await pool.fetchval("SELECT count(*) FROM authorizer.holds WHERE wallet_id = $1", WALLET)
    assert ([(e.type, e.issuer_authorization_id, e.cause) for e in expired], due, rows) == (
        [("authorization_expired", "idle-0", "hold_timeout")],
        None,
        0,
    )


@pytest.mark.usefixtures("authorizer")
async def test_a_commit_that_fails_midstream_throws_away_what_was_decided_on_it(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """The next batch is decided while a batch commits, on its states. Postgres refuses three commits
    in the middle of a flood (a trigger raising serialization_failure, which is retried): each failed
    batch and whatever was decided on it are read again, and the cap still holds exactly.
    """
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(30_000)))
    await pool.execute(
        """CREATE SEQUENCE refusals;  -- a sequence: its count survives the refused transactions
           CREATE FUNCTION refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$
           DECLARE
             done bigint := (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refusals);
           BEGIN
             IF done < 3 AND (SELECT count(*) FROM authorizer.decisions) >= 200 + 150 * done THEN
               PERFORM nextval('refusals');
               RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'serialization_failure';
             END IF;
             RETURN NULL;
           END $$;
           CREATE TRIGGER refuse AFTER INSERT ON authorizer.decisions
             FOR EACH STATEMENT EXECUTE FUNCTION refuse_some();"""
    )
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        await asyncio.gather(
            *[publish(kafka_topics, Topic.AUTH_REQUESTS, _requests(250, 100, f"q{n}-")) for n in range(4)]
        )
        items = await decisions.wait_for(lambda items: len({d.issuer_authorization_id for d in items}) >= 1_000)
    first: dict[str, AuthorizationDecided] = {}
    for decision in items:
        first.setdefault(decision.issuer_authorization_id, decision)
    assert Counter((d.approved, d.reason) for d in first.values()) == Counter(
        {(True, ReasonCode.APPROVED): 300, (False, ReasonCode.WALLET_ROLLING_24H_CAP): 700}
    )
    # Each id was published with one answer only, and the refusals happened.
    assert {
        d.issuer_authorization_id for d in items if d.approved != first[d.issuer_authorization_id].approved
    } == set()
    assert await pool.fetchval("SELECT last_value FROM refusals") == 3
    assert await pool.fetchval("SELECT count(*) FROM authorizer.decisions") == 1_000


async def test_a_wallet_created_here_answers_repeats_from_memory(
    authorizer: Authorizer, kafka_topics: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wallet this instance created (it never existed, nothing was decided for it) has every
    decision in memory: a repeat, in a later batch, gets the first answer without asking Postgres.
    """
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(150)))
    [first] = _requests(1, 100, "mem-")
    asked = _decision_lookups(authorizer, monkeypatch)
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [first])
        await decisions.wait_for(lambda items: len(items) >= 1)
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [first])
        items = await decisions.wait_for(lambda items: len(items) >= 2)
    assert (items[0], items[0].approved, [ids for ids in asked if ids]) == (items[1], True, [])


async def test_a_request_decided_before_its_wallet_existed_keeps_its_answer(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A request for a wallet, then the wallet's creation, read by one instance (in one batch or
    two, whichever the consumer makes of them): the request's repeat gets its first answer.
    """
    [early] = _requests(1, 100, "early-")
    now = _now()
    creation: list[Message] = [
        CreateWallet(**command_fields(now), caps=WalletCaps(rolling_24h=usd(150))),
        CreateCard(**command_fields(now), card_id=CARD, issuer=Issuer.STRIPE, issuer_card_token="ic_1", last4="4242"),
    ]
    await publish(kafka_topics, Topic.AUTH_REQUESTS, [early])
    await publish(kafka_topics, Topic.WALLET_COMMANDS, creation)
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions, running_authorizer(kafka_topics, pool):
        await decisions.wait_for(lambda items: len(items) >= 1)
        await asyncio.sleep(0.5)  # an idle poll (200 ms) ends the first batch's commit: not consulted
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [early])
        items = await decisions.wait_for(lambda items: len(items) >= 2)
    assert (items[0].reason, items[1].reason) == (items[0].reason, items[0].reason)


@pytest.mark.usefixtures("authorizer")
async def test_past_the_decisions_budget_wallets_are_evicted_and_repeats_answered_from_postgres(
    authorizer: Authorizer, kafka_topics: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More decisions remembered than the budget allows: before the next batch the wallet is evicted
    (read again when next needed), and a repeat of an authorization it decided gets its first
    answer, asked of Postgres.
    """
    monkeypatch.setattr(runtime, "MAX_REMEMBERED_DECISIONS", 2)
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(1_000)))
    first, *rest = _requests(4, 100, "budget-")
    asked = _decision_lookups(authorizer, monkeypatch)
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [first, *rest])
        await decisions.wait_for(lambda items: len(items) >= 4)
        await asyncio.sleep(0.5)  # an idle poll (200 ms): the budget is checked before the next batch
        await publish(kafka_topics, Topic.AUTH_REQUESTS, [first])
        items = await decisions.wait_for(lambda items: len(items) >= 5)
    by_id = {d.issuer_authorization_id: d for d in items[:4]}
    assert (items[4], items[4].approved) == (by_id[first.issuer_authorization_id], True)
    assert [first.issuer_authorization_id] in asked
    assert authorizer._remembered == 0  # noqa: SLF001 - reloaded; the repeat decided nothing new


async def test_old_rows_are_forgotten_beside_the_batches_not_between_them(
    authorizer: Authorizer, kafka_topics: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting rows past their retention can take long (the outbox keeps two days of decisions):
    batches go on being decided meanwhile. Here the deletion never ends, and requests are decided
    all the same; it is started once, not again at every sweep while it runs.
    """
    started = asyncio.Event()
    starts = 0

    async def never_ends(now: datetime, chunk: int = 0) -> int:  # noqa: ARG001
        nonlocal starts
        starts += 1
        started.set()
        await asyncio.Event().wait()
        return 0

    monkeypatch.setattr(authorizer._store, "forget_old_postings", never_ends)  # noqa: SLF001
    monkeypatch.setattr(runtime, "SWEEP_INTERVAL", timedelta(0))  # a sweep after every batch
    await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(1_000)))
    await asyncio.wait_for(started.wait(), timeout=30)
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        await publish(kafka_topics, Topic.AUTH_REQUESTS, _requests(3, 100, "beside-"))
        items = await decisions.wait_for(lambda items: len(items) >= 3)
    assert ([d.approved for d in items], starts) == ([True, True, True], 1)


@pytest.mark.usefixtures("authorizer")
async def test_evicted_wallets_are_read_again_with_their_holds(
    authorizer: Authorizer, kafka_topics: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache of two wallets and batches of one record, three wallets in turn: in the second round
    each is read again from Postgres (evicted meanwhile), and its second $1.00 against a $1.50 cap
    is declined (the first one's hold came back with it).
    """
    monkeypatch.setattr(runtime, "MAX_CACHED_WALLETS", 2)
    monkeypatch.setattr(runtime, "BATCH_MAX_RECORDS", 1)
    wallets = [f"evict-{index}" for index in range(3)]
    await apply_commands(kafka_topics, _wallets_with_a_card(wallets, WalletCaps(rolling_24h=usd(150))))
    loaded: Counter[str] = Counter()
    load_wallets = authorizer._store.load_wallets  # noqa: SLF001 - the reads this is about

    async def counted(wallet_ids: list[str], now: datetime) -> dict[str, Any]:
        loaded.update(wallet_ids)
        return await load_wallets(wallet_ids, now)

    monkeypatch.setattr(authorizer._store, "load_wallets", counted)  # noqa: SLF001
    now = _now()
    requests = [_request_on(wallet_id, 100, f"{wallet_id}-{turn}", now) for turn in range(2) for wallet_id in wallets]
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
        for count, item in enumerate(requests, start=1):  # one at a time: each wallet's turn follows the others'
            if count == len(wallets) + 1:
                loaded.clear()  # the second round: the cache holds the last two wallets of the first
            await publish(kafka_topics, Topic.AUTH_REQUESTS, [item])
            items = await decisions.wait_for(partial(_at_least, count))
    outcomes = {d.issuer_authorization_id: d.reason for d in items}
    assert outcomes == {
        **{f"{wallet_id}-0": ReasonCode.APPROVED for wallet_id in wallets},
        **{f"{wallet_id}-1": ReasonCode.WALLET_ROLLING_24H_CAP for wallet_id in wallets},
    }
    assert set(loaded) == set(wallets)  # each read again between its two requests


async def test_a_partial_reversal_after_a_restart_releases_at_the_authorizations_exchange(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """EUR 10.00 approved at 1.08 (a USD 10.80 hold); the rate leaves the table and a new instance
    (nothing in memory) applies a partial reversal of EUR 5.00: USD 5.40 is released, the
    authorization's own exchange read back from its decision in Postgres (5.00 without it).
    """
    now = _now()
    eur = RateTable({("EUR", "USD"): Fraction(108, 100)})
    bought = request(0, auth="eur-0", at=now, deadline_at=now + timedelta(minutes=5), amount=Money.of(1_000, "EUR"))
    async with running_authorizer(kafka_topics, pool, rates=eur):
        await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(10_000)))
        async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
            await publish(kafka_topics, Topic.AUTH_REQUESTS, [bought])
            [decided] = await decisions.wait_for(lambda items: len(items) >= 1)
    half_back = reversed_("eur-0", 0, now).model_copy(update={"amount": Money.of(500, "EUR")})
    async with running_authorizer(kafka_topics, pool), Collector(kafka_topics, Topic.WALLET_EVENTS) as events:
        await publish(kafka_topics, Topic.ISSUER_EVENTS, [half_back])
        items = await events.wait_for(lambda items: any(_moved_by(e, half_back.event_id) for e in items))
    [moved] = [e for e in items if _moved_by(e, half_back.event_id)]
    assert (decided.approved, decided.cap_amount, moved.hold_released_minor) == (True, usd(1_080), 540)


async def test_a_refund_after_a_restart_lands_on_the_trace_of_its_purchase(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A purchase approved on trace PR-1 and captured; the card moves on to trace PR-2; a new
    instance (nothing in memory) applies the refund: it is counted against PR-1, the purchase's
    trace, read back from the decision in Postgres, not the card's trace of the moment.
    """
    now = _now()
    bind = partial(BindTrace, card_id=CARD)
    async with running_authorizer(kafka_topics, pool):
        await _create_wallet(kafka_topics, WalletCaps(rolling_24h=usd(10_000)))
        await apply_commands(kafka_topics, [bind(**command_fields(now), trace_id="PR-1")])
        async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions:
            await publish(kafka_topics, Topic.AUTH_REQUESTS, _requests(1, 500, "bought-"))
            [decided] = await decisions.wait_for(lambda items: len(items) >= 1)
        async with Collector(kafka_topics, Topic.WALLET_EVENTS) as events:
            await publish(kafka_topics, Topic.ISSUER_EVENTS, [cleared("bought-0", 500, now)])
            await events.wait_for(lambda items: any(isinstance(e, MoneyMoved) for e in items))
        await apply_commands(kafka_topics, [bind(**command_fields(now), trace_id="PR-2")])
    money_back = refund(200, now, auth="bought-0")
    async with running_authorizer(kafka_topics, pool), Collector(kafka_topics, Topic.WALLET_EVENTS) as events:
        await publish(kafka_topics, Topic.ISSUER_EVENTS, [money_back])
        items = await events.wait_for(lambda items: any(_moved_by(e, money_back.event_id) for e in items))
    [moved] = [e for e in items if _moved_by(e, money_back.event_id)]
    assert (decided.trace_id, moved.trace_id, moved.spent_minor) == ("PR-1", "PR-1", -200)


async def test_outbox_rows_nobody_sends_are_relayed_without_a_restart(
    kafka_topics: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that went through while its client saw an error (a paused instance resuming into a
    timeout) leaves its outbox rows for nobody: the batch, read again, is found applied. Found by a
    chaos run at scale (issue 22). A running authorizer publishes rows unpublished past
    `STRANDED_AFTER` and marks them, once: nothing waits for a restart.
    """
    monkeypatch.setattr(runtime, "STRANDED_AFTER", timedelta(milliseconds=300))
    stranded = next(m for m in samples()[Topic.AUTH_DECISIONS] if isinstance(m, AuthorizationDecided))
    topic = topic_name(Topic.AUTH_DECISIONS, kafka_topics.topic_prefix)
    unpublished = "SELECT count(*) FROM authorizer.outbox WHERE published_at IS NULL"
    async with Collector(kafka_topics, Topic.AUTH_DECISIONS) as decisions, running_authorizer(kafka_topics, pool):
        await pool.execute(
            """INSERT INTO authorizer.outbox (topic, message_key, payload, created_at)
               VALUES ($1, $2, $3::jsonb, now() - interval '1 minute')""",
            topic, stranded.wallet_id, serialize(stranded).decode(),
        )  # fmt: skip
        await decisions.wait_for(lambda items: any(d.event_id == stranded.event_id for d in items), timeout_s=20)
        async with asyncio.timeout(10):
            while await pool.fetchval(unpublished):  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # several more looks: it is not sent again
    assert [d.event_id for d in decisions.items].count(stranded.event_id) == 1
