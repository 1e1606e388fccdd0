"""The ledger's consumer loop: `auth.decisions`, `wallet.events` and `issuer.events` in batches, each
batch recorded in ONE Postgres transaction, then its offsets committed to Kafka.

At-least-once delivery plus idempotent writes (entry id = source event id) is exactly-once in
effect: a kill -9 between the Postgres commit and Kafka's redelivers the batch and changes nothing.
Bad messages go to their topic's dead-letter twin with the error; the loop goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from schemas.authorizations import AuthorizationDecided
from schemas.registry import InvalidMessage, parse
from schemas.topics import Topic, message_key, topic_name
from schemas.wallet import CardCreated, MoneyMoved, WalletCreated
from services.ledger.journal import Card, Entry, Wallet, issuer_report, journal
from services.ledger.store import Batch, Written, report_payload, write_batch
from services.platform.kafka import create_consumer, create_producer
from services.platform.logging import get_logger
from services.platform.settings import Settings

Record: TypeAlias = ConsumerRecord[bytes, bytes]
INPUT_TOPICS = (Topic.AUTH_DECISIONS, Topic.WALLET_EVENTS, Topic.ISSUER_EVENTS)
BATCH_MAX_RECORDS = 2_000
_log = get_logger("ledger")

RECORDED = Counter("pursestrings_ledger_entries_recorded", "Journal entries recorded, by source event type", ["type"])
DUPLICATES = Counter("pursestrings_ledger_duplicates_ignored", "Entries already recorded (redelivered or repeated)")
DEAD_LETTERS = Counter("pursestrings_ledger_dead_letters", "Messages sent to a dead-letter topic", ["topic"])
LAG = Gauge("pursestrings_ledger_lag_records", "Records behind the end of each input topic", ["topic"])
BATCH_SECONDS = Histogram(
    "pursestrings_ledger_batch_seconds",
    "Time to record one consumed batch in Postgres",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class Ledger:
    """One ledger instance: a member of the `ledger` consumer group and a Postgres pool."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._pool = pool
        prefix = settings.topic_prefix
        self._group = f"{prefix}.ledger" if prefix else "pursestrings-ledger"
        self._topics = {topic_name(topic, prefix): topic for topic in INPUT_TOPICS}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._letters: list[asyncio.Future[Any]] = []  # dead letters sent, not yet acknowledged

    async def start(self) -> None:
        """Join the group; the committed offsets say where to go on."""
        self._producer = create_producer(self._settings)
        await self._producer.start()
        self._consumer = create_consumer(
            self._settings, list(self._topics), self._group, max_poll_records=BATCH_MAX_RECORDS
        )
        await self._consumer.start()

    async def stop(self) -> None:
        """Leave the group (what was recorded and not yet committed is redelivered, harmlessly)."""
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def run(self) -> None:
        """Consume until cancelled."""
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - start() runs first
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH_MAX_RECORDS)
            records = [record for partition_records in batches.values() for record in partition_records]
            if records:
                try:
                    await self.record(records)
                except (OSError, asyncpg.PostgresError) as error:
                    # Postgres unreachable: nothing of the batch was recorded; read it again shortly.
                    _log.error("ledger_batch_failed", error=str(error)[:300], records=len(records))
                    for tp, partition_records in batches.items():
                        consumer.seek(tp, partition_records[0].offset)
                    await asyncio.sleep(1)
                    continue
                await self._letters_acknowledged()
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items() if rs})
            await self._measure_lag(consumer)

    async def _letters_acknowledged(self) -> None:
        """Dead letters reach Kafka before the offsets of their records are committed: none is lost."""
        letters, self._letters = self._letters, []
        await asyncio.gather(*letters)

    async def record(self, records: Sequence[Record]) -> Written:
        """Journal one batch of records in one transaction."""
        started = time.perf_counter()
        batch = Batch()
        for record in records:
            await self._add(batch, record)
        written = await write_batch(self._pool, batch)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        for source_type, count in written.recorded.items():
            RECORDED.labels(source_type).inc(count)
        if written.duplicates:
            DUPLICATES.inc(written.duplicates)
            _log.info("ledger_duplicates_ignored", count=written.duplicates)
        return written

    async def _add(self, batch: Batch, record: Record) -> None:
        topic = self._topics[record.topic]
        raw = record.value or b""
        try:
            message = parse(topic, raw)
            if record.key != message_key(message):
                raise InvalidMessage.because(topic, f"key {record.key!r} is not the wallet id {message.wallet_id!r}")
        except InvalidMessage as error:
            await self._dead_letter(record, topic, error)
            return
        if topic is Topic.ISSUER_EVENTS:
            batch.reports.append(issuer_report(message) | {"payload": report_payload(raw)})  # type: ignore[arg-type]
            return
        if not isinstance(message, AuthorizationDecided | MoneyMoved | WalletCreated | CardCreated):
            return  # a wallet event that moves no money (a freeze, a bound trace...)
        for item in journal(message):
            if isinstance(item, Entry):
                batch.entries.append(item)
            elif isinstance(item, Wallet):
                batch.wallets.append(item)
            elif isinstance(item, Card):
                batch.cards.append(item)

    async def _dead_letter(self, record: Record, topic: Topic, error: InvalidMessage) -> None:
        """The error and the record go to the topic's dead-letter twin; the batch goes on without it.

        Sent before the batch's offsets are committed; if the process dies first, the record is
        consumed again and dead-lettered again (the letter carries its offset: duplicates are evident).
        """
        producer = self._producer
        assert producer is not None  # noqa: S101 - start() runs first
        payload = {
            "error": str(error),
            "errors": json.loads(json.dumps(error.errors, default=str)),
            "consumer": "ledger",
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": (record.key or b"").decode("utf-8", errors="replace"),
            "value": (record.value or b"").decode("utf-8", errors="replace"),
        }
        dead_letter = topic_name(topic, self._settings.topic_prefix, dead_letter=True)
        # Queued here, acknowledged before the batch's offsets are committed (see `run`).
        self._letters.append(await producer.send(dead_letter, json.dumps(payload).encode(), key=record.key))
        DEAD_LETTERS.labels(topic.value).inc()
        _log.warning("message_dead_lettered", topic=record.topic, offset=record.offset, error=str(error)[:300])

    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag: dict[str, int] = {}
        for partition in consumer.assignment():
            end, topic = consumer.highwater(partition), self._topics.get(partition.topic)
            if end is None or topic is None:
                continue  # no fetch has answered for it yet
            behind = max(0, end - await consumer.position(partition))
            lag[topic.value] = lag.get(topic.value, 0) + behind
        for topic_value, behind in lag.items():
            LAG.labels(topic_value).set(behind)
