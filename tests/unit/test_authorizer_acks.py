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


class _StuckProducer:
    """A producer as aiokafka leaves it when its start failed: a send waits forever (aiokafka #759)."""

    def __init__(self, *, start_fails: bool = False) -> None:
        self.start_fails = start_fails
        self.sends = 0
        self.stopped = False

    async def start(self) -> None:
        if self.start_fails:
            raise OSError("Unable to bootstrap")

    async def send(self, *_: object, **__: object) -> asyncio.Future[object]:
        self.sends += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def partitions_for(self, _: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, *_: object, **__: object) -> asyncio.Future[object]:
        return await self.send()

    async def stop(self) -> None:
        self.stopped = True


class _Batch:
    """A batch being filled, as aiokafka's `BatchBuilder`: room for anything."""

    def append(self, **_: object) -> object:
        return object()


async def test_a_failed_recovery_leaves_nothing_to_send_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kafka still away when publishing recovers: the new producer's start fails; it is stopped and
    the next batch's rows wait in the outbox instead of being sent through it (which would wait
    forever and, with it, the batch loop: every instance idle after a Kafka restart in chaos runs).
    """
    authorizer = _authorizer(monkeypatch)
    failed = _StuckProducer(start_fails=True)
    monkeypatch.setattr("services.platform.kafka.create_producer", lambda _: failed)
    monkeypatch.setattr("services.authorizer.runtime.asyncio.sleep", _no_pause)
    authorizer._producer = _StuckProducer()  # noqa: SLF001
    authorizer._publish_failed = True  # noqa: SLF001
    await asyncio.wait_for(authorizer._recover_publishing(), timeout=2)  # noqa: SLF001
    assert (authorizer._publish_failed, failed.stopped) == (True, True)  # noqa: SLF001
    await asyncio.wait_for(authorizer._publish([ROW]), timeout=2)  # noqa: SLF001
    assert (failed.sends, authorizer._published, authorizer._confirming) == (0, [], set())  # noqa: SLF001


async def test_a_send_that_never_returns_counts_as_a_failed_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queueing a send is bounded too (ACK_TIMEOUTS request timeouts): the rows stay for the relay."""
    authorizer = _authorizer(monkeypatch)
    authorizer._producer = _StuckProducer()  # noqa: SLF001
    await asyncio.wait_for(authorizer._publish([ROW]), timeout=ACK_TIMEOUTS * 0.1 + 2)  # noqa: SLF001
    assert (authorizer._publish_failed, authorizer._published) == (True, [])  # noqa: SLF001


async def _no_pause(_: float) -> None:
    return None
