"""An at-least-once consumer-group member for services whose effects are idempotent (the ledger, the
notifier): batches handed to a handler, Kafka offsets committed after the handler's transaction,
bad records dead-lettered with the error, a batch read again when Postgres is away. No business rules.

(The authorizer needs more, offsets in Postgres fenced by epochs, and has its own loop.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from schemas.registry import InvalidMessage, Message, parse
from schemas.topics import Topic, message_key, topic_name
from services.platform.kafka import PRODUCER_BROKEN, create_consumer, create_producer, start_producer
from services.platform.logging import get_logger
from services.platform.postgres import transient
from services.platform.settings import Settings

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Handler = Callable[[Sequence[Record]], Awaitable[object]]
_RETRY_AFTER_S = 1.0


def dead_letter_payload(record: Record, error: InvalidMessage | str) -> dict[str, Any]:
    """What a dead letter says: the error, field by field, and the record as it came (where from).
    A valid message that could not be applied has only a sentence (`error` given as a string).
    """
    return {
        "error": str(error),
        "errors": [] if isinstance(error, str) else json.loads(json.dumps(error.errors, default=str)),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": (record.key or b"").decode("utf-8", errors="replace"),
        "value": (record.value or b"").decode("utf-8", errors="replace"),
    }


class IdempotentConsumer:
    """Joins `<prefix>.<name>` on `topics`; `run(handler)` until cancelled."""

    def __init__(self, settings: Settings, name: str, topics: Sequence[Topic], max_records: int) -> None:
        self.settings = settings
        self.name = name
        prefix = settings.topic_prefix
        self._group = f"{prefix}.{name}" if prefix else f"pursestrings-{name}"
        self.topics = {topic_name(topic, prefix): topic for topic in topics}
        self._max_records = max_records
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._letters: list[asyncio.Future[Any]] = []  # dead letters sent, not yet acknowledged
        self._log = get_logger(name)
        self.on_dead_letter: Callable[[Topic], None] = lambda _: None

    async def start(self) -> None:
        """Start the producer (dead letters, commands) and join the group at its committed offsets."""
        self.producer = create_producer(self.settings)
        await self.producer.start()
        self.consumer = create_consumer(
            self.settings, list(self.topics), self._group, max_poll_records=self._max_records
        )
        await self.consumer.start()

    async def stop(self) -> None:
        """Leave the group (what was handled and not committed is redelivered, harmlessly)."""
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def run(self, handle: Handler, after_batch: Callable[[], Awaitable[None]] | None = None) -> None:
        """Hand each batch to `handle`; commit its offsets once it returned and its dead letters are in."""
        consumer = self.consumer
        assert consumer is not None  # noqa: S101 - start() runs first
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
            records = [record for partition_records in batches.values() for record in partition_records]
            if records:
                try:
                    await handle(records)
                except Exception as error:
                    if not (transient(error) or isinstance(error, asyncpg.PostgresError)):
                        raise
                    # Postgres unreachable (or restarting under a query): nothing of the batch took
                    # effect; read it again shortly. (A value Postgres refuses is retried too, for
                    # now: setting such a batch aside is issue 24's.)
                    self._log.error(f"{self.name}_batch_failed", error=str(error)[:300], records=len(records))
                    for tp, partition_records in batches.items():
                        consumer.seek(tp, partition_records[0].offset)
                    await asyncio.sleep(_RETRY_AFTER_S)
                    continue
                letters, self._letters = self._letters, []
                try:
                    await asyncio.gather(*letters)  # dead letters reach Kafka before their offsets are committed
                except PRODUCER_BROKEN as error:
                    # A Kafka restart left the producer refusing every send: a new one, and the batch
                    # again (its dead letters with it; a letter sent twice carries the same offset).
                    with contextlib.suppress(KafkaError):  # Kafka still away: the next batch tries again
                        await self.renew_producer(error)
                    for tp, partition_records in batches.items():
                        consumer.seek(tp, partition_records[0].offset)
                    await asyncio.sleep(_RETRY_AFTER_S)
                    continue
                try:
                    await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items() if rs})
                except KafkaError as error:
                    # A rebalance gave the partitions to another member (CommitFailedError), or the
                    # broker is away: the batch took effect, its offsets are not recorded, and whoever
                    # reads those partitions next gets it again (handlers are idempotent). It used to
                    # end the process (a chaos run at scale, issue 22).
                    self._log.warning(f"{self.name}_commit_refused", error=f"{type(error).__name__}: {error}"[:300])
            if after_batch is not None:
                await after_batch()

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        """Send and wait for the acknowledgement; if a Kafka restart left the producer refusing every
        send, once more with a new producer.
        """
        assert self.producer is not None  # noqa: S101 - start() runs first
        try:
            await self.producer.send_and_wait(topic, value, key=key)
        except PRODUCER_BROKEN as error:
            await self.renew_producer(error)
            await self.producer.send_and_wait(topic, value, key=key)

    async def renew_producer(self, error: Exception) -> None:
        """Replace the producer (an idempotent one can be left unusable by a broker restart). If the
        new one cannot start, the error is raised and the old producer stays (`start_producer`).
        """
        self._log.warning("producer_renewed", error=f"{type(error).__name__}: {error}"[:300])
        old, self.producer = self.producer, await start_producer(self.settings)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()

    async def parse(self, record: Record) -> tuple[Topic, Message] | None:
        """The record's topic and message, or None after dead-lettering it with the error."""
        topic = self.topics[record.topic]
        try:
            message = parse(topic, record.value or b"")
            if record.key != message_key(message):
                raise InvalidMessage.because(topic, f"key {record.key!r} is not the wallet id {message.wallet_id!r}")
        except InvalidMessage as error:
            await self._dead_letter(record, topic, error)
            return None
        return topic, message

    async def _dead_letter(self, record: Record, topic: Topic, error: InvalidMessage) -> None:
        """The error and the record go to the topic's dead-letter twin; the batch goes on without it.

        If the process dies before the batch is committed, the record is consumed and dead-lettered
        again (the letter carries its offset: a duplicate is evident).
        """
        producer = self.producer
        assert producer is not None  # noqa: S101 - start() runs first
        payload = dead_letter_payload(record, error) | {"consumer": self.name}
        dead_letter = topic_name(topic, self.settings.topic_prefix, dead_letter=True)
        self._letters.append(await producer.send(dead_letter, json.dumps(payload).encode(), key=record.key))
        self.on_dead_letter(topic)
        self._log.warning("message_dead_lettered", topic=record.topic, offset=record.offset, error=str(error)[:300])

    async def lag(self) -> dict[str, int]:
        """Records behind the end, by topic (of the partitions assigned and fetched so far)."""
        consumer = self.consumer
        lag: dict[str, int] = {}
        for partition in consumer.assignment() if consumer is not None else ():
            end, topic = consumer.highwater(partition), self.topics.get(partition.topic)  # type: ignore[union-attr]
            if end is None or topic is None:
                continue
            behind = max(0, end - await consumer.position(partition))  # type: ignore[union-attr]
            lag[topic.value] = lag.get(topic.value, 0) + behind
        return lag
