"""`Publisher`: a broker whose idempotent producer a Kafka restart left refusing every send gets a
new producer (the broker restarted) and the send goes again; the real restart is in the chaos runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError, OutOfOrderSequenceNumber

from schemas.topics import Topic
from services.platform.consuming import IdempotentConsumer
from services.platform.kafka import Publisher
from services.platform.settings import Settings


class _Broker:
    """Refuses every send with `error` until restarted; counts restarts and what it sent."""

    def __init__(self, error: Exception | None, failed_starts: int = 0) -> None:
        self.error = error
        self.failed_starts = failed_starts
        self.restarts = 0
        self.sent: list[bytes] = []

    async def publish(self, payload: bytes, *, topic: str, key: bytes) -> None:  # noqa: ARG002
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        self.sent.append(payload)

    async def stop(self) -> None:
        await asyncio.sleep(0)

    async def start(self) -> None:
        if self.failed_starts:
            self.failed_starts -= 1
            raise KafkaConnectionError("Unable to bootstrap")
        self.restarts += 1
        self.error = None


async def test_a_producer_left_out_of_sequence_is_renewed_once_and_the_sends_go() -> None:
    """Three sends fail on the same broken producer: one renewal, and all three are sent."""
    broker = _Broker(OutOfOrderSequenceNumber())
    publisher = Publisher(broker)  # type: ignore[arg-type]
    await asyncio.gather(*(publisher.publish(p, topic="t", key=b"k") for p in (b"1", b"2", b"3")))
    assert (broker.restarts, sorted(broker.sent)) == (1, [b"1", b"2", b"3"])


async def test_a_broker_that_is_away_is_not_renewed() -> None:
    """Kafka unreachable: the error goes to the caller (who declines); no restart."""
    broker = _Broker(KafkaConnectionError("refused"))
    with pytest.raises(KafkaConnectionError):
        await Publisher(broker).publish(b"1", topic="t", key=b"k")  # type: ignore[arg-type]
    assert broker.restarts == 0


async def test_a_renewal_that_cannot_start_is_tried_again_by_the_next_send() -> None:
    """Kafka still away when the producer is renewed: that send fails (the caller declines); the
    next one starts the broker first, and goes.
    """
    broker = _Broker(OutOfOrderSequenceNumber(), failed_starts=1)
    publisher = Publisher(broker)  # type: ignore[arg-type]
    with pytest.raises(KafkaConnectionError):
        await publisher.publish(b"1", topic="t", key=b"k")
    await publisher.publish(b"2", topic="t", key=b"k")
    assert (broker.restarts, broker.sent) == (1, [b"2"])


class _Producer:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.sent: list[bytes] = []
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:  # noqa: ARG002
        if self.error is not None:
            raise self.error
        self.sent.append(value)


async def test_the_ledger_and_notifier_consumer_renews_its_producer_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """`IdempotentConsumer.send_and_wait` (the notifier's raises): a producer left refusing every send
    is stopped and replaced, and the command goes through the new one.
    """
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    fresh = _Producer(None)
    monkeypatch.setattr("services.platform.kafka.create_producer", lambda _: fresh)
    consumer = IdempotentConsumer(Settings(), "notifier", [Topic.WALLET_EVENTS], max_records=10)
    broken = consumer.producer = _Producer(OutOfOrderSequenceNumber())
    await consumer.send_and_wait("wallet.commands", b"raise", b"w1")
    assert (broken.stopped, fresh.sent, consumer.producer) == (True, [b"raise"], fresh)


class _Consumer:
    """Hands out `batches` one per poll, refusing the first commit with `refusal`, then stops the
    run (a cancellation, as at shutdown).
    """

    def __init__(self, batches: list[dict[TopicPartition, list[Any]]], refusal: Exception) -> None:
        self._batches = batches
        self._refusal: Exception | None = refusal
        self.committed: list[dict[TopicPartition, int]] = []
        self.sought: list[tuple[TopicPartition, int]] = []

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.sought.append((partition, offset))

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0)
        if not self._batches:
            raise asyncio.CancelledError
        return self._batches.pop(0)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        if self._refusal is not None:
            refusal, self._refusal = self._refusal, None
            raise refusal
        self.committed.append(offsets)


@pytest.mark.parametrize("refusal", [CommitFailedError("rebalanced"), KafkaConnectionError("broker away")])
async def test_a_commit_refused_after_a_rebalance_does_not_end_the_consumer(
    monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    """A chaos run at scale ended the notifier: its commit came after a rebalance had given its
    partitions to another member (CommitFailedError), and the error ended the process. The batch
    took effect (handlers are idempotent; whoever reads it next gets it again): the consumer goes on
    to the next batch, whose commit is recorded.
    """
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    partition = TopicPartition("wallet.events", 0)
    records = [SimpleNamespace(offset=offset) for offset in range(4)]
    consumer = IdempotentConsumer(Settings(), "notifier", [Topic.WALLET_EVENTS], max_records=10)
    kafka = _Consumer([{partition: records[:2]}, {partition: records[2:]}], refusal)
    consumer.consumer = kafka
    handled: list[int] = []

    async def handle(batch: Sequence[Any]) -> None:
        await asyncio.sleep(0)
        handled.extend(record.offset for record in batch)

    with pytest.raises(asyncio.CancelledError):
        await consumer.run(handle)
    assert (handled, kafka.committed) == ([0, 1, 2, 3], [{partition: 4}])


async def test_a_batch_failing_as_postgres_restarts_is_read_again_not_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 100,000-event chaos run ended the ledger and the notifier together: Postgres restarting under
    a query left asyncpg's protocol confused (`InternalClientError`, "cannot switch to state 15"),
    which the consumer did not take for Postgres away. Now it rewinds to the batch and reads it again.
    """
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    monkeypatch.setattr("services.platform.consuming._RETRY_AFTER_S", 0)
    partition = TopicPartition("wallet.events", 0)
    records = [SimpleNamespace(offset=offset) for offset in range(2)]
    consumer = IdempotentConsumer(Settings(), "ledger", [Topic.WALLET_EVENTS], max_records=10)
    kafka = _Consumer([{partition: records}, {partition: records}], KafkaConnectionError("unused"))
    kafka._refusal = None  # noqa: SLF001 - every commit accepted here
    consumer.consumer = kafka
    failures = [asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")]

    async def handle(_: Sequence[Any]) -> None:
        await asyncio.sleep(0)
        if failures:
            raise failures.pop()

    with pytest.raises(asyncio.CancelledError):
        await consumer.run(handle)
    assert (kafka.sought, kafka.committed) == ([(partition, 0)], [{partition: 2}])


async def test_a_bug_in_a_handler_still_ends_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only Postgres being away is retried: a bug is not hidden behind an endless retry."""
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    partition = TopicPartition("wallet.events", 0)
    consumer = IdempotentConsumer(Settings(), "ledger", [Topic.WALLET_EVENTS], max_records=10)
    consumer.consumer = _Consumer([{partition: [SimpleNamespace(offset=0)]}], KafkaConnectionError("unused"))

    async def handle(_: Sequence[Any]) -> None:
        await asyncio.sleep(0)
        raise KeyError("card")

    with pytest.raises(KeyError):
        await consumer.run(handle)
