"""The authorizer's wait for Kafka's acknowledgements is bounded: an ack that never comes counts
as a failed publish (the rows stay in the outbox and are relayed again), not as a wait forever.
"""

from __future__ import annotations

import asyncio

import pytest

from services.authorizer.runtime import ACK_TIMEOUTS, Authorizer
from services.authorizer.store import OutboxRow
from services.platform.settings import Settings


def _authorizer(monkeypatch: pytest.MonkeyPatch) -> Authorizer:
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    settings = Settings().model_copy(update={"kafka_request_timeout_ms": 100})
    return Authorizer(settings, pool=None)  # nothing here touches Postgres


ROW = OutboxRow(7, "auth.decisions", b"wallet", b"{}")


async def test_an_ack_that_never_comes_counts_as_a_failed_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ACK_TIMEOUTS request timeouts the rows are left for the relay and recovery is due."""
    authorizer = _authorizer(monkeypatch)
    never: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    await asyncio.wait_for(authorizer._confirm([ROW], [never]), timeout=ACK_TIMEOUTS * 0.1 + 2)  # noqa: SLF001
    assert (authorizer._publish_failed, authorizer._published, never.cancelled()) == (True, [], False)  # noqa: SLF001


async def test_acknowledged_rows_are_noted_for_the_next_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks that come: the rows are marked published by the next commit."""
    authorizer = _authorizer(monkeypatch)
    ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    ack.set_result(None)
    await authorizer._confirm([ROW], [ack])  # noqa: SLF001
    assert (authorizer._publish_failed, authorizer._published) == (False, [7])  # noqa: SLF001
