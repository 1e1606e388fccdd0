"""`Answering` with Kafka and Postgres played by fakes: what the gateway does when publishing the
request fails (the webhook tests on the real services cover the paths that need them).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from schemas.common import Issuer, ReasonCode
from schemas.registry import parse
from schemas.topics import Topic, topic_name
from services.gateway.answering import Answering
from services.gateway.directory import CardRef
from services.gateway.issuers import Ask
from tests.support.builders import MERCHANT, usd


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

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:
        if query.lstrip().startswith("SELECT"):
            return None
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


async def test_a_request_whose_publish_failed_is_declined_and_expired() -> None:
    """Declined `system_unavailable`; and since the request may have landed all the same, its
    expiry is owed with the answer's record and published, so an approval of it would have its
    hold released.
    """
    broker, pool = _Broker(), _Pool()
    answering = Answering(
        broker=broker,  # type: ignore[arg-type]
        pool=pool,
        directory=_Directory(),  # type: ignore[arg-type]
        waiter=_Waiter(),  # type: ignore[arg-type]
        topic_prefix="t",
        deadline=timedelta(seconds=2),
    )
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
