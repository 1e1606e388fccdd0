"""The gateway end to end on the real Kafka and Postgres, over real HTTP: signed issuer webhooks →
auth.requests → the authorizer → auth.decisions → the HTTP answer, and lifecycle webhooks onto
issuer.events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from schemas.common import Issuer
from schemas.money import Money
from schemas.topics import Topic
from schemas.wallet import CreateCard, CreateWallet, SetMerchantCountries
from services.authorizer.runtime import Authorizer
from services.gateway.answer_log import LOOKUP_KEYS, AnswerLookups
from services.gateway.answering import Answering
from services.gateway.directory import CardDirectory
from services.gateway.signatures import STRIPE_HEADER, sign_stripe
from services.gateway.simulator import (
    MerchantData,
    Signed,
    generic_authorization_request,
    lithic_asa,
    sign_for_lithic,
    sign_for_stripe,
    sign_generic,
    stripe_amount_changed,
    stripe_authorization_created,
    stripe_authorization_request,
    stripe_capture,
    stripe_incremental_request,
    stripe_refund,
    stripe_reversal,
)
from services.ledger.consumer import Ledger
from services.platform.kafka import Publisher, create_broker
from services.platform.settings import Settings
from tests.support.builders import command_fields, usd
from tests.support.infra import Infrastructure
from tests.support.kafka_io import Collector, apply_commands
from tests.support.services import (
    GENERIC_SECRET,
    LITHIC_SECRET,
    STRIPE_SECRET,
    consuming,
    gateway_settings,
    running_authorizer,
    running_gateway,
)

WALLET, CARD, TOKEN = "wal_gw", "card_gw", "ic_gw"


@pytest.fixture
def settings_for_gateway(kafka_topics: Settings) -> Settings:
    """The test's settings with webhook secrets, a free port and a short deadline."""
    return gateway_settings(kafka_topics)


@pytest.fixture
async def gateway(settings_for_gateway: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway app served by uvicorn in this process; a client for it."""
    async with running_gateway(settings_for_gateway) as client:
        yield client


@pytest.fixture
async def authorizer(kafka_topics: Settings, pool: asyncpg.Pool) -> AsyncIterator[Authorizer]:
    """The authorizer running in this process."""
    async with running_authorizer(kafka_topics, pool) as running:
        yield running


async def _ten_dollar_card(settings: Settings, issuer: Issuer = Issuer.STRIPE, token: str = TOKEN) -> None:
    now = datetime.now(UTC)
    fields = command_fields(now) | {"wallet_id": WALLET}
    await apply_commands(
        settings,
        [
            CreateWallet(**fields),
            CreateCard(
                **(command_fields(now) | {"wallet_id": WALLET}),
                card_id=CARD,
                issuer=issuer,
                issuer_card_token=token,
                last4="4242",
                funded_amount=usd(1_000),
            ),
        ],
    )


async def _post(client: httpx.AsyncClient, signed: Signed) -> httpx.Response:
    return await client.post(signed.path, content=signed.body, headers=signed.headers)


def _outcomes(answers: list[Any]) -> list[tuple[bool, str]]:
    """(approved, our reason code) of each Stripe answer."""
    return [(answer["approved"], answer["metadata"]["pursestrings_reason"]) for answer in answers]


async def _until_recorded(pool: asyncpg.Pool, authorization_id: str) -> None:
    """Wait until the authorizer's approval of `authorization_id` is on record (it is recorded just
    after it is sent).
    """
    query = "SELECT approved FROM gateway.answers WHERE issuer_authorization_id = $1"
    async with asyncio.timeout(10):
        while not await pool.fetchval(query, authorization_id):  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.05)


async def _stripe_ask(client: httpx.AsyncClient, auth: str, amount_minor: int, token: str = TOKEN) -> dict[str, object]:
    response = await _post(
        client, sign_for_stripe(stripe_authorization_request(auth, token, amount_minor), STRIPE_SECRET)
    )
    assert response.status_code == 200, response.text
    assert response.headers["Stripe-Version"]
    answer: dict[str, object] = response.json()
    return answer


@pytest.mark.usefixtures("authorizer")
async def test_a_scripted_day_on_a_ten_dollar_card_gets_exactly_the_expected_answers(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings
) -> None:
    """$3, $4, $2.50 approved; $1 declined; a $4 reversal frees room for $3.50; a $3 capture at $2.80
    and a $0.40 force capture leave $0.30: $0.31 declined, $0.30 approved.
    """
    await _ten_dollar_card(settings_for_gateway)
    answers = [
        await _stripe_ask(gateway, "iauth_1", 300),
        await _stripe_ask(gateway, "iauth_2", 400),
        await _stripe_ask(gateway, "iauth_3", 250),
        await _stripe_ask(gateway, "iauth_4", 100),
    ]
    async with Collector(settings_for_gateway, Topic.ISSUER_EVENTS) as lifecycle:
        for event in (
            stripe_reversal("iauth_2", TOKEN, 400),
            stripe_capture("ipi_1", TOKEN, 280, "iauth_1"),
            stripe_capture("ipi_2", TOKEN, 40, None),
        ):
            response = await _post(gateway, sign_for_stripe(event, STRIPE_SECRET))
            assert response.status_code == 200, response.text
        await lifecycle.wait_for(lambda items: len(items) >= 3)
    answers += [
        await _stripe_ask(gateway, "iauth_5", 350),
        await _stripe_ask(gateway, "iauth_6", 81),
        await _stripe_ask(gateway, "iauth_7", 80),
    ]
    assert _outcomes(answers) == [
        (True, "approved"),
        (True, "approved"),
        (True, "approved"),
        (False, "card_funds_insufficient"),
        (True, "approved"),
        (False, "card_funds_insufficient"),
        (True, "approved"),
    ]


@pytest.mark.usefixtures("authorizer")
async def test_a_retried_webhook_gets_the_same_answer(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, pool: asyncpg.Pool
) -> None:
    """The same event sent twice (Stripe retries) is decided once and answered twice alike. The
    authorizer's answer is recorded after it is sent (the retry may come before the row: the
    authorizer repeats its first decision), and the row lands.
    """
    await _ten_dollar_card(settings_for_gateway)
    signed = sign_for_stripe(stripe_authorization_request("iauth_r", TOKEN, 600), STRIPE_SECRET)
    first, second = (await _post(gateway, signed)).json(), (await _post(gateway, signed)).json()
    decisions = await pool.fetchval("SELECT count(*) FROM authorizer.decisions WHERE wallet_id = $1", WALLET)
    assert (first, second["approved"], decisions) == (second, True, 1)
    query = "SELECT approved, reason, answered_by FROM gateway.answers WHERE issuer_authorization_id = 'iauth_r'"
    for _ in range(100):
        if (row := await pool.fetchrow(query)) is not None:
            break
        await asyncio.sleep(0.05)
    assert row is not None
    assert tuple(row) == (True, "approved", "authorizer")


@pytest.mark.usefixtures("authorizer")
async def test_increments_are_decided_against_the_caps_and_a_reused_id_gets_no_earlier_approval(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, pool: asyncpg.Pool
) -> None:
    """$6 approved on the $10 card. Stripe then asks to increment that authorization by $3 (a hotel's
    extra night): decided by the authorizer against every cap, approved, the hold grows to $9. A
    second increment of $2 is declined by the funded balance. The issuer reusing the $6's id for $9:
    declined `invalid_request`; the $6's own retry is still approved. $1 more is approved, then
    nothing: the card holds $9. The ledger shows one authorization with its two increments.
    """
    await _ten_dollar_card(settings_for_gateway)
    first = sign_for_stripe(stripe_authorization_request("iauth_h", TOKEN, 600), STRIPE_SECRET)
    increments = [
        stripe_incremental_request("iauth_h", TOKEN, 300, approved_minor=600),
        stripe_incremental_request("iauth_h", TOKEN, 200, approved_minor=900),
    ]
    answers = [
        (await _post(gateway, first)).json(),
        *[(await _post(gateway, sign_for_stripe(event, STRIPE_SECRET))).json() for event in increments],
        await _stripe_ask(gateway, "iauth_h", 900),
        (await _post(gateway, first)).json(),
        await _stripe_ask(gateway, "iauth_n", 100),
        await _stripe_ask(gateway, "iauth_o", 1),
    ]
    assert _outcomes(answers) == [
        (True, "approved"),
        (True, "approved"),
        (False, "card_funds_insufficient"),
        (False, "invalid_request"),
        (True, "approved"),
        (True, "approved"),
        (False, "card_funds_insufficient"),
    ]
    decided = await pool.fetch(
        "SELECT issuer_authorization_id, approved FROM authorizer.decisions WHERE wallet_id = $1 ORDER BY 1", WALLET
    )
    increment_ids = [f"iauth_h:{event['id']}" for event in increments]
    assert sorted((row[0], row[1]) for row in decided) == sorted(
        [("iauth_h", True), (increment_ids[0], True), (increment_ids[1], False), ("iauth_n", True), ("iauth_o", False)]
    )
    held = await pool.fetchval("SELECT amount_minor FROM authorizer.holds WHERE authorization_id = 'iauth_h'")
    assert held == 900
    journaled = """SELECT held_minor, open_hold_minor, increments, incremented_minor, status
                     FROM ledger.transactions WHERE authorization_id = $1"""
    row = None
    async with consuming(Ledger(settings_for_gateway, pool)):
        for _ in range(200):  # the ledger journals the decisions as it consumes them
            row = await pool.fetchrow(journaled, "iauth_h")
            if row is not None and row["increments"] == 2:
                break
            await asyncio.sleep(0.05)
    rows = await pool.fetchval("SELECT count(*) FROM ledger.transactions WHERE authorization_id LIKE 'iauth_h%'")
    assert (row and tuple(row), rows) == ((900, 900, 2, 300, "held"), 1)


async def test_an_increment_our_deadline_answered_holds_nothing_more(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """$6 approved; the authorizer then stops, and Stripe asks to increment by $3: our deadline
    passes, the increment is declined `deadline_exceeded` and its expiry published. The authorizer,
    back, declines the late increment too: the hold stays $6, so $4 more is approved and no more.
    """
    async with running_authorizer(kafka_topics, pool):
        await _ten_dollar_card(settings_for_gateway)
        assert (await _stripe_ask(gateway, "iauth_d", 600))["approved"] is True
    increment = stripe_incremental_request("iauth_d", TOKEN, 300, approved_minor=600)
    async with Collector(settings_for_gateway, Topic.ISSUER_EVENTS) as lifecycle:
        answer = (await _post(gateway, sign_for_stripe(increment, STRIPE_SECRET))).json()
        expired = await lifecycle.wait_for(lambda items: len(items) >= 1)
    async with running_authorizer(kafka_topics, pool):
        after = [await _stripe_ask(gateway, "iauth_d2", 400), await _stripe_ask(gateway, "iauth_d3", 1)]
        late = await pool.fetchrow(
            "SELECT approved, reason FROM authorizer.decisions WHERE issuer_authorization_id = $1",
            f"iauth_d:{increment['id']}",
        )
    held = await pool.fetchval("SELECT amount_minor FROM authorizer.holds WHERE authorization_id = 'iauth_d'")
    assert (_outcomes([answer]), [(e.cause, e.issuer_authorization_id) for e in expired]) == (
        [(False, "deadline_exceeded")],
        [("gateway_deadline", f"iauth_d:{increment['id']}")],
    )
    assert (late and tuple(late), held, _outcomes(after)) == (
        (False, "deadline_exceeded"),
        600,
        [(True, "approved"), (False, "card_funds_insufficient")],
    )


@pytest.mark.usefixtures("authorizer")
async def test_a_refund_reversed_is_spent_again(gateway: httpx.AsyncClient, settings_for_gateway: Settings) -> None:
    """$6 approved and captured on the $10 card, refunded, then the refund reversed (Stripe: a refund
    with a negative amount): the $6 is spent again, so $4 more is approved and $0.01 after it is not.
    """
    await _ten_dollar_card(settings_for_gateway)
    assert (await _stripe_ask(gateway, "iauth_f", 600))["approved"] is True
    async with Collector(settings_for_gateway, Topic.ISSUER_EVENTS) as lifecycle:
        for event in (
            stripe_capture("ipi_f1", TOKEN, 600, "iauth_f"),
            stripe_refund("ipi_f2", TOKEN, 600, "iauth_f"),
            stripe_refund("ipi_f3", TOKEN, 600, "iauth_f", reversed_=True),
        ):
            response = await _post(gateway, sign_for_stripe(event, STRIPE_SECRET))
            assert response.status_code == 200, response.text
        await lifecycle.wait_for(lambda items: len(items) >= 3)
    answers = [await _stripe_ask(gateway, "iauth_g", 400), await _stripe_ask(gateway, "iauth_h", 1)]
    assert _outcomes(answers) == [
        (True, "approved"),
        (False, "card_funds_insufficient"),
    ]


@pytest.mark.usefixtures("authorizer")
async def test_what_stripe_approved_without_us_is_held_and_our_own_approval_once(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, pool: asyncpg.Pool
) -> None:
    """issuing_authorization.created on the $10 card: $6 we approved, said again by Stripe, is held
    once (not published: the hold is ours); $3 Stripe approved without asking us (a stand-in) is held
    too; a declined one moves nothing. So $1 more is approved and $0.01 after it is not. On the
    previous code the stand-in's $3 was not counted until its capture, and $4 would have been approved.
    """
    await _ten_dollar_card(settings_for_gateway)
    assert (await _stripe_ask(gateway, "iauth_c1", 600))["approved"] is True
    await _until_recorded(pool, "iauth_c1")
    async with Collector(settings_for_gateway, Topic.ISSUER_EVENTS) as lifecycle:
        replies = [
            (await _post(gateway, sign_for_stripe(event, STRIPE_SECRET))).json()
            for event in (
                stripe_authorization_created("iauth_c1", TOKEN, 600, reason="webhook_approved"),
                stripe_authorization_created("iauth_c2", TOKEN, 300, reason="network_fallback"),
                stripe_authorization_created("iauth_c3", TOKEN, 900, approved=False, reason="webhook_declined"),
            )
        ]
        published = await lifecycle.wait_for(lambda items: len(items) >= 1)
    assert replies == [
        {"received": "authorization_approved_by_issuer", "published": False, "detail": "approved by us: held already"},
        {"received": "authorization_approved_by_issuer"},
        {"ignored": "issuing_authorization.created (declined)"},
    ]
    assert [(e.type, e.issuer_authorization_id, e.amount.amount_minor) for e in published] == [
        ("authorization_approved_by_issuer", "iauth_c2", 300)
    ]
    answers = [await _stripe_ask(gateway, "iauth_c4", 200), await _stripe_ask(gateway, "iauth_c5", 100),
               await _stripe_ask(gateway, "iauth_c6", 1)]  # fmt: skip
    assert _outcomes(answers) == [
        (False, "card_funds_insufficient"),
        (True, "approved"),
        (False, "card_funds_insufficient"),
    ]


@pytest.mark.usefixtures("authorizer")
async def test_an_increment_stripe_approved_without_us_grows_the_hold(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, pool: asyncpg.Pool
) -> None:
    """$6 approved on the $10 card; Stripe then holds $9 for it (issuing_authorization.updated: an
    increment approved without us, our answer to it too late, say). The hold grows to $9, so $1 more
    is approved and $0.01 after it is not. On the previous code the $3 was not counted until capture.
    """
    await _ten_dollar_card(settings_for_gateway)
    assert (await _stripe_ask(gateway, "iauth_i1", 600))["approved"] is True
    await _until_recorded(pool, "iauth_i1")
    async with Collector(settings_for_gateway, Topic.ISSUER_EVENTS) as lifecycle:
        response = await _post(gateway, sign_for_stripe(stripe_amount_changed("iauth_i1", TOKEN, 900, 600),
                                                        STRIPE_SECRET))  # fmt: skip
        assert response.json() == {"received": "authorization_approved_by_issuer"}
        await lifecycle.wait_for(lambda items: len(items) >= 1)
    answers = [await _stripe_ask(gateway, "iauth_i2", 100), await _stripe_ask(gateway, "iauth_i3", 1)]
    assert _outcomes(answers) == [
        (True, "approved"),
        (False, "card_funds_insufficient"),
    ]


@pytest.mark.usefixtures("authorizer")
async def test_an_unknown_card_is_declined_at_once_and_recorded(gateway: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """No such card token: card_not_found, without asking the authorizer, and kept in gateway.answers."""
    answer = await _stripe_ask(gateway, "iauth_u", 100, token="ic_nobody")
    recorded = await pool.fetchrow(
        "SELECT approved, reason, answered_by FROM gateway.answers WHERE issuer_authorization_id = 'iauth_u'"
    )
    assert (answer["approved"], answer["metadata"], tuple(recorded or ())) == (
        False,
        {"pursestrings_reason": "card_not_found"},
        (False, "card_not_found", "gateway"),
    )


@pytest.mark.usefixtures("authorizer")
async def test_bad_signatures_are_refused_and_nothing_is_published(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings
) -> None:
    """Wrong secret, stale timestamp, tampered body, no header → 400; only the good request reaches Kafka."""
    await _ten_dollar_card(settings_for_gateway)
    event = stripe_authorization_request("iauth_bad", TOKEN, 100)
    good = sign_for_stripe(event, STRIPE_SECRET)
    bad = [
        sign_for_stripe(event, "whsec_wrong"),
        sign_for_stripe(event, STRIPE_SECRET, timestamp=int(time.time()) - 600),
        Signed(good.path, good.body.replace(b"100", b"900"), good.headers),
        Signed(good.path, good.body, {"Content-Type": "application/json"}),
    ]
    async with Collector(settings_for_gateway, Topic.AUTH_REQUESTS) as requests:
        statuses = [(await _post(gateway, signed)).status_code for signed in bad]
        errors = [(await _post(gateway, signed)).json()["error"] for signed in bad]
        ok = await _post(gateway, sign_for_stripe(stripe_authorization_request("iauth_ok", TOKEN, 100), STRIPE_SECRET))
        published = await requests.wait_for(lambda items: len(items) >= 1)
    assert (statuses, errors, ok.status_code, [r.issuer_authorization_id for r in published]) == (
        [400] * 4,
        ["signature_mismatch", "signature_stale_timestamp", "signature_mismatch", "signature_missing_header"],
        200,
        ["iauth_ok"],
    )


async def test_with_the_authorizer_down_the_answer_is_a_decline_within_the_deadline(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """No decision in time → decline (fail closed) before Stripe's 2 s, and authorization_expired published;
    the authorizer, started later, then declines the stale request too: no hold is left.
    """
    async with running_authorizer(kafka_topics, pool):  # an authorizer for the set-up only
        await _ten_dollar_card(settings_for_gateway)
    async with Collector(settings_for_gateway, Topic.ISSUER_EVENTS) as lifecycle:
        started = time.perf_counter()
        answer = await _stripe_ask(gateway, "iauth_late", 100)
        elapsed = time.perf_counter() - started
        expired = await lifecycle.wait_for(lambda items: len(items) >= 1)
    async with (
        running_authorizer(kafka_topics, pool),
        Collector(settings_for_gateway, Topic.AUTH_DECISIONS) as decisions,
    ):
        decided = await decisions.wait_for(lambda items: any(d.issuer_authorization_id == "iauth_late" for d in items))
    holds = await pool.fetchval("SELECT count(*) FROM authorizer.holds WHERE wallet_id = $1", WALLET)
    assert (answer["approved"], answer["metadata"], elapsed < 2.0) == (
        False,
        {"pursestrings_reason": "deadline_exceeded"},
        True,
    )
    assert ([(e.type, e.cause, e.schema_version, e.amount) for e in expired], [d.approved for d in decided], holds) == (
        [("authorization_expired", "gateway_deadline", 2, Money.of(100, "USD"))],
        [False],
        0,
    )
    owed = "SELECT expiry_owed_since FROM gateway.answers WHERE issuer_authorization_id = 'iauth_late'"
    for _ in range(100):  # the expiry is published, then marked paid, after the answer
        if await pool.fetchval(owed) is None:
            break
        await asyncio.sleep(0.05)
    assert await pool.fetchval(owed) is None


async def test_an_expiry_still_owed_is_published_by_the_relay(
    settings_for_gateway: Settings, pool: asyncpg.Pool
) -> None:
    """A deadline decline whose expiry could not be published then (Kafka away) stays owed on its
    row; the relay publishes it once the row is older than the answering attempt's own chance, and
    marks it paid. A row not yet that old is left to its attempt.
    """
    await pool.execute(
        """INSERT INTO gateway.answers (issuer, issuer_authorization_id, card_token, wallet_id, card_id, approved,
                                        reason, answered_by, amount_minor, currency, expiry_owed_since)
           VALUES ('stripe', 'iauth_owed', 'tok', 'w-owed', 'c-owed', false, 'deadline_exceeded', 'gateway', 100,
                   'USD', now() - interval '1 minute'),
                  ('stripe', 'iauth_fresh', 'tok', 'w-owed', 'c-owed', false, 'deadline_exceeded', 'gateway', 100,
                   'USD', now())"""
    )
    broker = create_broker(settings_for_gateway)
    await broker.start()
    try:
        answering = Answering(
            broker=Publisher(broker), pool=pool, directory=CardDirectory(pool), waiter=None,  # type: ignore[arg-type]
            topic_prefix=settings_for_gateway.topic_prefix, deadline=timedelta(seconds=1),
        )  # fmt: skip
        async with Collector(settings_for_gateway, Topic.ISSUER_EVENTS) as lifecycle:
            relayed = await answering.relay_owed_expiries(older_than=timedelta(seconds=10))
            expired = await lifecycle.wait_for(lambda items: len(items) >= 1)
        again = await answering.relay_owed_expiries(older_than=timedelta(seconds=10))
    finally:
        await broker.stop()
    still_owed = await pool.fetch(
        "SELECT issuer_authorization_id FROM gateway.answers WHERE expiry_owed_since IS NOT NULL"
    )
    assert (relayed, again, [r["issuer_authorization_id"] for r in still_owed]) == (1, 0, ["iauth_fresh"])
    assert [(e.type, e.issuer_authorization_id, e.wallet_id, e.card_id, e.cause, e.amount) for e in expired] == [
        ("authorization_expired", "iauth_owed", "w-owed", "c-owed", "gateway_deadline", Money.of(100, "USD"))
    ]


async def test_a_deadline_decline_is_on_record_before_it_is_answered(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """The moment the issuer has the deadline's decline, it is in gateway.answers; a retry then,
    with the authorizer back, gets the same decline rather than a decision made afresh.
    """
    async with running_authorizer(kafka_topics, pool):  # an authorizer for the set-up only
        await _ten_dollar_card(settings_for_gateway)
    first = await _stripe_ask(gateway, "iauth_gap", 100)
    on_record = await pool.fetchrow(
        "SELECT approved, reason, answered_by FROM gateway.answers WHERE issuer_authorization_id = 'iauth_gap'"
    )
    async with running_authorizer(kafka_topics, pool):
        retry = await _stripe_ask(gateway, "iauth_gap", 100)
    declined = {"approved": False, "metadata": {"pursestrings_reason": "deadline_exceeded"}}
    assert (first, on_record and tuple(on_record), retry) == (
        declined,
        (False, "deadline_exceeded", "gateway"),
        declined,
    )


@pytest.mark.usefixtures("authorizer")
async def test_lithic_and_generic_issuers_are_answered_in_their_shapes(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings
) -> None:
    """Lithic: {"token", "result"}; generic: {"issuer_authorization_id", "approved", "reason"}."""
    await _ten_dollar_card(settings_for_gateway, Issuer.LITHIC, "lithic_card")
    token = str(uuid.uuid4())
    lithic = await _post(gateway, sign_for_lithic(lithic_asa(token, "lithic_card", 1_500), LITHIC_SECRET))
    generic = await _post(gateway, sign_generic(generic_authorization_request("g_1", "nobody", 100), GENERIC_SECRET))
    assert (lithic.json(), generic.json()) == (
        {"token": token, "result": "INSUFFICIENT_FUNDS"},
        {"issuer_authorization_id": "g_1", "approved": False, "reason": "card_not_found"},
    )


@pytest.mark.usefixtures("authorizer")
async def test_merchant_country_rules_hold_on_the_stripe_and_lithic_paths(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings
) -> None:
    """A wallet whose cards may buy only in the US, and never in Canada on its Stripe card: Stripe's
    alpha-2 "US" and Lithic's alpha-3 "USA" are approved, a French merchant is declined
    `merchant_country_not_allowed` on both paths (Lithic's word: UNAUTHORIZED_MERCHANT).
    """
    await _ten_dollar_card(settings_for_gateway)
    fields = command_fields(datetime.now(UTC)) | {"wallet_id": WALLET}
    await apply_commands(
        settings_for_gateway,
        [
            CreateCard(
                **fields, card_id="card_gw_lithic", issuer=Issuer.LITHIC, issuer_card_token="lithic_country",
                last4="4343", funded_amount=usd(1_000),
            ),
            SetMerchantCountries(**fields | {"command_id": uuid.uuid4()}, allow=frozenset({"US"})),
            SetMerchantCountries(**fields | {"command_id": uuid.uuid4()}, card_id=CARD, block=frozenset({"CA"})),
        ],
    )  # fmt: skip
    answers = []
    for auth, country in (("iauth_us", "US"), ("iauth_ca", "CA"), ("iauth_fr", "FR")):
        merchant = MerchantData(country=country)
        signed = sign_for_stripe(stripe_authorization_request(auth, TOKEN, 100, merchant=merchant), STRIPE_SECRET)
        answers.append((await _post(gateway, signed)).json())
    lithic = []
    for country in ("US", "FR"):
        asa = lithic_asa(str(uuid.uuid4()), "lithic_country", 100, merchant=MerchantData(country=country))
        lithic.append((await _post(gateway, sign_for_lithic(asa, LITHIC_SECRET))).json()["result"])
    assert _outcomes(answers) == [
        (True, "approved"),
        (False, "merchant_country_blocked"),
        (False, "merchant_country_not_allowed"),
    ]
    assert lithic == ["APPROVED", "UNAUTHORIZED_MERCHANT"]


@pytest.mark.usefixtures("authorizer")
async def test_metrics_name_the_expected_series(gateway: httpx.AsyncClient, settings_for_gateway: Settings) -> None:
    """/metrics answers in Prometheus text with answer latency, answers by outcome, deadline misses,
    signature failures and lifecycle events.
    """
    await _ten_dollar_card(settings_for_gateway)
    await _stripe_ask(gateway, "iauth_m", 100)
    await _post(gateway, sign_for_stripe(stripe_authorization_request("iauth_m2", TOKEN, 100), "whsec_wrong"))
    body = (await gateway.get("/metrics")).text
    assert [
        series in body
        for series in (
            'pursestrings_gateway_answer_seconds_bucket{issuer="stripe",le="1.5"}',
            'pursestrings_gateway_answers_total{issuer="stripe",outcome="approved",reason="approved"}',
            "pursestrings_gateway_deadline_misses_total",
            'pursestrings_gateway_signature_failures_total{issuer="stripe",reason="mismatch"}',
            "pursestrings_gateway_lifecycle_events_total",
        )
    ] == [True] * 5


async def test_with_postgres_gone_the_answer_is_a_decline_not_an_error(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, infrastructure: Infrastructure
) -> None:
    """The card cannot be looked up (the database is gone): 200 with a decline, system_unavailable."""
    name = urlsplit(settings_for_gateway.database_url.get_secret_value()).path.lstrip("/")
    admin = await asyncpg.connect(dsn=infrastructure.database_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    answer = await _stripe_ask(gateway, "iauth_pg_gone", 100)
    assert (answer["approved"], answer["metadata"]) == (False, {"pursestrings_reason": "system_unavailable"})


async def test_a_retry_waiting_on_the_first_attempt_gets_its_deadline_decline_too(
    gateway: httpx.AsyncClient, settings_for_gateway: Settings, kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """An issuer retry that arrives while the first attempt still waits shares its wait; when the
    deadline passes with no decision, both get the same decline (not an error for the retry).
    """
    async with running_authorizer(kafka_topics, pool):  # an authorizer for the set-up only
        await _ten_dollar_card(settings_for_gateway)
    signed = sign_for_stripe(stripe_authorization_request("iauth_twice", TOKEN, 100), STRIPE_SECRET)
    first = asyncio.create_task(_post(gateway, signed))
    await asyncio.sleep(settings_for_gateway.auth_deadline_ms / 2000)
    retry = await _post(gateway, signed)
    answers = [(response.status_code, response.json()) for response in (await first, retry)]
    declined = {"approved": False, "metadata": {"pursestrings_reason": "deadline_exceeded"}}
    assert answers == [(200, declined), (200, declined)]


async def test_recorded_answers_are_found_in_groups_on_postgres(pool: asyncpg.Pool) -> None:
    """Lookups asked together (more than one query's worth, two issuers) each find their own row
    on the real table, as the point SELECT did, and nothing for an authorization never answered.
    """
    answered = [(Issuer.STRIPE.value, f"iauth_g{n}") for n in range(0, LOOKUP_KEYS + 4, 2)]
    answered.append((Issuer.LITHIC.value, "iauth_g1"))
    await pool.executemany(
        """INSERT INTO gateway.answers (issuer, issuer_authorization_id, card_token, approved, reason, answered_by,
                                        amount_minor, currency)
           VALUES ($1, $2, 'tok', false, 'deadline_exceeded', 'gateway', 100, 'USD')""",
        answered,
    )  # fmt: skip
    lookups = AnswerLookups(pool)
    asked = [(issuer.value, f"iauth_g{n}") for issuer in (Issuer.STRIPE, Issuer.LITHIC) for n in range(LOOKUP_KEYS + 4)]
    found = await asyncio.gather(*(lookups.find(*key) for key in asked), lookups.find(*asked[0]))
    expected = [("deadline_exceeded" if key in answered else None) for key in [*asked, asked[0]]]
    assert [None if row is None else row[1] for row in found] == expected
    assert await lookups.find(Issuer.STRIPE.value, "iauth_g2") == (False, "deadline_exceeded", "gateway", "tok", 100,
                                                                    "USD")  # fmt: skip


async def test_an_oversized_or_deeply_nested_body_is_refused_and_nothing_breaks(gateway: httpx.AsyncClient) -> None:
    """A signed 1 MiB body is refused 413 unread (no signature checked, nothing parsed); a signed
    body nested 100,000 levels deep is refused 400; the gateway goes on answering.
    """
    padding = {"type": "issuing_authorization.request", "pad": "x" * (1024 * 1024)}
    nested = b"[" * 100_000 + b"]" * 100_000
    stamp = int(time.time())
    deep = Signed("/webhooks/stripe", nested, {STRIPE_HEADER: sign_stripe(nested, STRIPE_SECRET, stamp)})
    big = await _post(gateway, sign_for_stripe(padding, STRIPE_SECRET))
    deeply = await _post(gateway, deep)
    health = await gateway.get("/healthz")
    assert (big.status_code, big.json()["error"]) == (413, "payload_too_large")
    assert (deeply.status_code, deeply.json()["error"]) == (400, "invalid_request")
    assert health.status_code == 200
