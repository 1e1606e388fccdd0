"""`Answering` with Kafka and Postgres played by fakes: what the gateway does when publishing the
request fails (the webhook tests on the real services cover the paths that need them).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import Issuer, ReasonCode
from schemas.registry import parse
from schemas.topics import Topic, topic_name
from services.gateway.answering import Answering
from services.gateway.directory import CardRef
from services.gateway.issuers import Ask
from tests.support.builders import CARD, MERCHANT, WALLET, request, run, usd, wallet


class _Broker:
    """Refuses requests on auth.requests (the ack never came); keeps what else is published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    async def publish(self, payload: bytes, *, topic: str, key: bytes) -> None:  # noqa: ARG002
        if topic == topic_name(Topic.AUTH_REQUESTS, "t"):
            raise TimeoutError("no acknowledgement")
        self.published.append((topic, parse(Topic.ISSUER_EVENTS, payload)))


class _Pool:
    """No earlier answer; every insert succeeds (what it was asked is kept)."""

    def __init__(self) -> None:
        self.inserted: list[tuple[Any, ...]] = []
        self.executed: list[str] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:  # noqa: ARG002 - the lookups: none recorded
        assert query.lstrip().startswith("SELECT")
        return []

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:  # noqa: ARG002 - the records
        self.inserted.append(args)
        return {"approved": args[5]}

    async def execute(self, query: str, *args: Any) -> str:  # noqa: ARG002
        self.executed.append(" ".join(query.split()))
        return "UPDATE 1"


class _Directory:
    async def find(self, issuer: Issuer, token: str) -> CardRef:  # noqa: ARG002
        return CardRef(wallet_id="w1", card_id="c1")


class _Waiter:
    def expect(self, key: str) -> asyncio.Future[Any]:  # noqa: ARG002
        return asyncio.get_running_loop().create_future()


def _answering(broker: _Broker, pool: _Pool, deadline: timedelta) -> Answering:
    """The gateway's answering over these fakes: a known card, a decision that never comes."""
    return Answering(
        broker=broker,  # type: ignore[arg-type]
        pool=pool,
        directory=_Directory(),  # type: ignore[arg-type]
        waiter=_Waiter(),  # type: ignore[arg-type]
        topic_prefix="t",
        deadline=deadline,
    )


async def test_a_request_whose_publish_failed_is_declined_and_expired() -> None:
    """Declined `system_unavailable`; and since the request may have landed all the same, its
    expiry is owed with the answer's record and published, so an approval of it would have its
    hold released.
    """
    broker, pool = _Broker(), _Pool()
    answering = _answering(broker, pool, timedelta(seconds=2))
    ask = Ask(Issuer.STRIPE, "iauth_lost_ack", "tok", usd(500), usd(500), MERCHANT)
    answer = await answering.authorize(ask)
    await answering.close(timeout_s=5)
    assert (answer.approved, answer.reason) == (False, ReasonCode.SYSTEM_UNAVAILABLE)
    [(topic, expiry)] = broker.published
    assert topic == topic_name(Topic.ISSUER_EVENTS, "t")
    assert (expiry.type, expiry.issuer_authorization_id, expiry.cause) == (
        "authorization_expired",
        "iauth_lost_ack",
        "gateway_deadline",
    )
    # Recorded as owed with the decline, then paid once published.
    [inserted] = pool.inserted
    assert inserted[-1] is True
    assert [q.split(" WHERE")[0] for q in pool.executed] == ["UPDATE gateway.answers SET expiry_owed_since = NULL"]


class _ApprovedMeanwhile(_Pool):
    """Another gateway instance recorded the authorizer's approval between this attempt's lookup and
    its own record: the insert finds the key taken, and the lookup after it finds the approval.
    """

    def __init__(self) -> None:
        super().__init__()
        self.looked_up = 0

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.looked_up += 1
        if self.looked_up == 1:
            return await super().fetch(query, *args)
        return [
            {"issuer_authorization_id": args[1], "approved": True, "reason": "approved", "answered_by": "authorizer",
             "card_token": "tok", "amount_minor": 500, "currency": "USD"}
        ]  # fmt: skip

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:  # noqa: ARG002
        return None  # ON CONFLICT DO NOTHING: the key was taken


async def test_a_failed_publish_does_not_expire_an_approval_recorded_meanwhile() -> None:
    """The answer is the approval on record, and no expiry is published: it would release the hold
    of an authorization the issuer was told approved.
    """
    broker = _Broker()
    answering = _answering(broker, _ApprovedMeanwhile(), timedelta(seconds=2))
    ask = Ask(Issuer.STRIPE, "iauth_raced", "tok", usd(500), usd(500), MERCHANT)
    answer = await answering.authorize(ask)
    await answering.close(timeout_s=5)
    assert ((answer.approved, answer.answered_by), broker.published) == ((True, "authorizer"), [])


class _FlakyBroker(_Broker):
    """Publishes requests; refuses the first `refusals` expiries (Kafka away for a moment)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def publish(self, payload: bytes, *, topic: str, key: bytes) -> None:
        if topic == topic_name(Topic.ISSUER_EVENTS, "t") and self.refusals:
            self.refusals -= 1
            raise TimeoutError("no acknowledgement")
        if topic != topic_name(Topic.AUTH_REQUESTS, "t"):
            await super().publish(payload, topic=topic, key=key)


class _PoolAway(_Pool):
    """Postgres gone once the request is out: the lookup works, the answer's record fails."""

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:  # noqa: ARG002
        raise OSError("connection refused")


async def test_an_expiry_that_cannot_be_recorded_is_published_again_until_kafka_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline passes, Postgres is away (the decline cannot be recorded, nor the expiry owed)
    and Kafka refuses the expiry twice: it is published on the third try, from memory.
    """
    monkeypatch.setattr("services.gateway.answering.RECORD_GRACE", timedelta(milliseconds=50))
    sleeps: list[float] = []

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    broker = _FlakyBroker(refusals=2)
    answering = _answering(broker, _PoolAway(), timedelta(milliseconds=100))
    ask = Ask(Issuer.STRIPE, "iauth_pg_and_kafka_away", "tok", usd(500), usd(500), MERCHANT)
    answer = await answering.authorize(ask)
    monkeypatch.setattr("services.gateway.answering.asyncio.sleep", no_wait)
    await answering.close(timeout_s=5)
    assert (answer.approved, answer.reason) == (False, ReasonCode.DEADLINE_EXCEEDED)
    assert [(e.type, e.issuer_authorization_id) for _, e in broker.published] == [
        ("authorization_expired", "iauth_pg_and_kafka_away")
    ]
    assert sleeps == [0.5]  # refused once after the deadline, once by the first retry


class _PoolConfused(_Pool):
    """The answer's record fails as asyncpg fails when a query was cut off mid-flight (chaos, seed 301)."""

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:  # noqa: ARG002
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")


async def test_a_deadline_whose_record_meets_a_confused_connection_is_still_a_decline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline passes and recording its decline meets asyncpg's protocol confused: the issuer
    gets the decline (it got a 500 before), and the expiry is published from memory.
    """
    monkeypatch.setattr("services.gateway.answering.RECORD_GRACE", timedelta(milliseconds=50))
    broker = _FlakyBroker(refusals=0)
    answering = _answering(broker, _PoolConfused(), timedelta(milliseconds=100))
    ask = Ask(Issuer.STRIPE, "iauth_pg_confused", "tok", usd(500), usd(500), MERCHANT)
    answer = await answering.authorize(ask)
    await answering.close(timeout_s=5)
    assert (answer.approved, answer.reason) == (False, ReasonCode.DEADLINE_EXCEEDED)
    assert [e.type for _, e in broker.published] == ["authorization_expired"]


# ───────────────────────── increments and reused ids (decision 0006) ─────────────────────────


class _Accepting(_Broker):
    """Takes every message, requests included; keeps the topics it was given."""

    async def publish(self, payload: bytes, *, topic: str, key: bytes) -> None:  # noqa: ARG002
        self.published.append((topic, payload))


class _Recorded(_Pool):
    """An answer on record for `recorded` (approved, 600 USD on card token "tok"); keeps every query."""

    def __init__(self, recorded: str | None = None) -> None:
        super().__init__()
        self.recorded = recorded
        self.queries: list[str] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.queries.append(query)
        if not query.lstrip().startswith("SELECT") or self.recorded not in args:
            return []
        answer = {"approved": True, "reason": "approved", "answered_by": "authorizer"}
        return [{"issuer_authorization_id": self.recorded, **answer, "card_token": "tok", "amount_minor": 600,
                 "currency": "USD"}]  # fmt: skip


class _Decided:
    """The authorizer's answer to any id: `decision` (it repeats its first decision for an id)."""

    def __init__(self, decision: AuthorizationDecided) -> None:
        self.decision = decision

    def expect(self, key: str) -> asyncio.Future[Any]:  # noqa: ARG002
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(self.decision)
        return future


class _TheCard:
    async def find(self, issuer: Issuer, token: str) -> CardRef:  # noqa: ARG002
        return CardRef(wallet_id=WALLET, card_id=CARD)


def _asking(
    broker: _Broker,
    pool: _Pool,
    decision: AuthorizationDecided | None = None,
    deadline: timedelta = timedelta(seconds=2),
) -> Answering:
    """Answering over fakes: card token "tok" is CARD; the authorizer answers `decision`, or never."""
    return Answering(
        broker=broker,  # type: ignore[arg-type]
        pool=pool,
        directory=_TheCard(),  # type: ignore[arg-type]
        waiter=_Waiter() if decision is None else _Decided(decision),  # type: ignore[arg-type]
        topic_prefix="t",
        deadline=deadline,
    )


def _approval_of_six_dollars(auth: str) -> AuthorizationDecided:
    """The authorizer's approval of `auth` for $6.00 on CARD."""
    events, _ = run(wallet(), request(600, auth=auth))
    [decision] = [event for event in events if isinstance(event, AuthorizationDecided)]
    return decision


async def test_an_increment_is_asked_of_the_authorizer_as_version_2() -> None:
    """Stripe's increment of an authorization is not a retry of it: it is asked of the authorizer
    under an id of its own, as a version 2 request naming the authorization it adds to, and gets the
    authorizer's answer (which grows that authorization's hold when approved).
    """
    events, _ = run(
        wallet(),
        request(600, auth="iauth_h"),
        request(500, auth="iauth_h:evt_2", schema_version=2, increment_of="iauth_h"),
    )
    decision = [event for event in events if isinstance(event, AuthorizationDecided)][-1]
    broker, pool = _Accepting(), _Recorded(recorded="iauth_h")
    answering = _asking(broker, pool, decision)
    ask = Ask(Issuer.STRIPE, "iauth_h:evt_2", "tok", usd(500), usd(500), MERCHANT, increment_of="iauth_h")
    answer = await answering.authorize(ask)
    await answering.close(timeout_s=5)
    [(topic, payload)] = broker.published
    asked = parse(Topic.AUTH_REQUESTS, payload)
    assert isinstance(asked, AuthorizationRequested)
    assert (answer.approved, answer.reason, answer.answered_by) == (True, ReasonCode.APPROVED, "authorizer")
    assert (topic, asked.schema_version, asked.increment_of, asked.issuer_authorization_id) == (
        "t.auth.requests",
        2,
        "iauth_h",
        "iauth_h:evt_2",
    )
    assert (asked.amount, decision.increment_of, decision.schema_version) == (usd(500), "iauth_h", 2)


async def test_a_reused_id_does_not_get_the_answer_on_record() -> None:
    """An id answered for $6.00, asked again for $9.00: not a retry. Declined `invalid_request`, not
    recorded (the $6.00 keeps its answer), nothing published; the same $6.00 again gets its approval.
    """
    broker, pool = _Accepting(), _Recorded(recorded="iauth_r")
    answering = _asking(broker, pool)
    reused = await answering.authorize(Ask(Issuer.STRIPE, "iauth_r", "tok", usd(900), usd(900), MERCHANT))
    retried = await answering.authorize(Ask(Issuer.STRIPE, "iauth_r", "tok", usd(600), usd(600), MERCHANT))
    await answering.close(timeout_s=5)
    assert [(a.approved, a.reason) for a in (reused, retried)] == [
        (False, ReasonCode.INVALID_REQUEST),
        (True, ReasonCode.APPROVED),
    ]
    assert (broker.published, pool.inserted) == ([], [])


async def test_a_reused_id_does_not_get_the_authorizers_first_decision() -> None:
    """No answer on record yet, and the authorizer repeats its first decision for the id, which was
    for $6.00: the $9.00 request is declined `invalid_request` and that decline is not kept; the
    $6.00 request gets the approval, which is kept.
    """
    decision = _approval_of_six_dollars("iauth_d")
    broker, pool = _Accepting(), _Recorded()
    answering = _asking(broker, pool, decision)
    reused = await answering.authorize(Ask(Issuer.STRIPE, "iauth_d", "tok", usd(900), usd(900), MERCHANT))
    await answering.close(timeout_s=5)
    kept_before = [query for query in pool.queries if "INSERT" in query]
    answering = _asking(broker, pool, decision)
    genuine = await answering.authorize(Ask(Issuer.STRIPE, "iauth_d", "tok", usd(600), usd(600), MERCHANT))
    await answering.close(timeout_s=5)
    assert [(a.approved, a.reason) for a in (reused, genuine)] == [
        (False, ReasonCode.INVALID_REQUEST),
        (True, ReasonCode.APPROVED),
    ]
    assert kept_before == []
    assert len([query for query in pool.queries if "INSERT" in query]) == 1


async def test_a_reused_id_is_refused_while_its_first_request_is_being_asked() -> None:
    """$6.00 asked and still waiting (the authorizer is slow); the same id for $9.00 meanwhile is
    declined `invalid_request` at once and publishes nothing (not even an expiry: its deadline would
    otherwise release the id's hold); a retry of the $6.00 waits with the first and shares its fate.
    """
    broker, pool = _Accepting(), _Recorded()
    answering = _asking(broker, pool, deadline=timedelta(seconds=0.5))
    first = asyncio.create_task(answering.authorize(Ask(Issuer.STRIPE, "iauth_w", "tok", usd(600), usd(600), MERCHANT)))
    await asyncio.sleep(0.05)
    retry = asyncio.create_task(answering.authorize(Ask(Issuer.STRIPE, "iauth_w", "tok", usd(600), usd(600), MERCHANT)))
    reused = await answering.authorize(Ask(Issuer.STRIPE, "iauth_w", "tok", usd(900), usd(900), MERCHANT))
    answers = [reused, await first, await retry]
    await answering.close(timeout_s=5)
    assert [(a.approved, a.reason) for a in answers] == [
        (False, ReasonCode.INVALID_REQUEST),
        (False, ReasonCode.DEADLINE_EXCEEDED),
        (False, ReasonCode.DEADLINE_EXCEEDED),
    ]
    requests = [parse(Topic.AUTH_REQUESTS, payload) for topic, payload in broker.published if "requests" in topic]
    asked = [request.amount for request in requests if isinstance(request, AuthorizationRequested)]
    assert asked == [usd(600), usd(600)]  # the first and its retry; nothing for $9.00
