"""The ledger's consumer: `auth.decisions`, `wallet.events` and `issuer.events` in batches, each
batch recorded in ONE Postgres transaction, then its offsets committed to Kafka
(`services.platform.consuming`).

At-least-once delivery plus idempotent writes (entry id = source event id) is exactly-once in
effect: a kill -9 between the Postgres commit and Kafka's redelivers the batch and changes nothing.
Bad messages go to their topic's dead-letter twin with the error; the loop goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from schemas.authorizations import AuthorizationDecided
from schemas.topics import Topic
from schemas.wallet import CardCreated, MoneyMoved, WalletCreated
from services.ledger.journal import Card, Entry, Wallet, issuer_report, journal
from services.ledger.store import Batch, Written, write_batch
from services.platform.consuming import IdempotentConsumer, Record
from services.platform.logging import get_logger
from services.platform.settings import Settings

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
        self._pool = pool
        self._kafka = IdempotentConsumer(settings, "ledger", INPUT_TOPICS, BATCH_MAX_RECORDS)
        self._kafka.on_dead_letter = lambda topic: DEAD_LETTERS.labels(topic.value).inc()

    async def start(self) -> None:
        """Join the group; the committed offsets say where to go on."""
        await self._kafka.start()

    async def stop(self) -> None:
        """Leave the group (what was recorded and not yet committed is redelivered, harmlessly)."""
        await self._kafka.stop()

    async def run(self) -> None:
        """Consume until cancelled."""
        await self._kafka.run(self.record, self._measure_lag)

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
        parsed = await self._kafka.parse(record)
        if parsed is None:
            return
        topic, message = parsed
        if topic is Topic.ISSUER_EVENTS:
            payload = (record.value or b"").decode()  # as received: it parsed, so it is JSON (jsonb takes text)
            batch.reports.append(issuer_report(message) | {"payload": payload})  # type: ignore[arg-type]
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

    async def _measure_lag(self) -> None:
        for topic_value, behind in (await self._kafka.lag()).items():
            LAG.labels(topic_value).set(behind)
