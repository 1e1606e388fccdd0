"""Every contract travels through the real broker unchanged, keyed by wallet id, one wallet per partition."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from pydantic import BaseModel

from schemas.registry import parse, serialize
from schemas.topics import Topic, message_key, topic_name
from services.platform.kafka import create_broker, create_consumer, create_producer
from services.platform.settings import Settings
from tests.support.samples import samples

_CONSUME_TIMEOUT_S = 30


async def _consume(settings: Settings, topic: str, count: int) -> list[tuple[bytes | None, bytes | None, int]]:
    consumer = create_consumer(settings, [topic], group_id=f"{settings.topic_prefix}-reader-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    received: list[tuple[bytes | None, bytes | None, int]] = []
    try:
        async with asyncio.timeout(_CONSUME_TIMEOUT_S):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                received += [
                    (record.key, record.value, record.partition) for records in batches.values() for record in records
                ]
    finally:
        await consumer.stop()
    return received


async def test_every_contract_round_trips_through_the_broker(kafka_topics: Settings) -> None:
    """Produce each sample with an idempotent acks=all producer; consume and parse equal values."""
    settings = kafka_topics
    by_topic = samples()
    producer = create_producer(settings)
    await producer.start()
    try:
        for topic, messages in by_topic.items():
            for message in messages:
                await producer.send_and_wait(
                    topic_name(topic, settings.topic_prefix),
                    serialize(message),
                    key=message_key(message),
                )
    finally:
        await producer.stop()
    for topic, messages in by_topic.items():
        received = await _consume(settings, topic_name(topic, settings.topic_prefix), len(messages))
        parsed: list[BaseModel] = [parse(topic, value) for _, value, _ in received if value is not None]
        assert (parsed, {key for key, _, _ in received}) == (messages, {b"wal_research_01"})


async def test_one_wallet_stays_on_one_partition(kafka_topics: Settings) -> None:
    """Keyed by wallet id, all of a wallet's messages share a partition, in order; wallets spread out."""
    settings = kafka_topics
    topic = topic_name(Topic.AUTH_REQUESTS, settings.topic_prefix)
    wallets = [f"wal_{index}" for index in range(12)]
    sent = [samples(wallet)[Topic.AUTH_REQUESTS][0] for wallet in wallets for _ in range(3)]
    producer = create_producer(settings)
    await producer.start()
    try:
        await asyncio.gather(*[producer.send_and_wait(topic, serialize(m), key=message_key(m)) for m in sent])
    finally:
        await producer.stop()
    partitions: dict[str, set[int]] = defaultdict(set)
    for key, _, partition in await _consume(settings, topic, len(sent)):
        assert key is not None
        partitions[key.decode()].add(partition)
    assert {wallet: len(found) for wallet, found in partitions.items()} == dict.fromkeys(wallets, 1)
    assert len(set().union(*partitions.values())) > 1


async def test_faststream_broker_publishes_with_the_wallet_key(kafka_topics: Settings) -> None:
    """The FastStream broker built by the platform reaches the real broker and keeps the key rule."""
    settings = kafka_topics
    message = samples()[Topic.WALLET_COMMANDS][0]
    topic = topic_name(Topic.WALLET_COMMANDS, settings.topic_prefix)
    broker = create_broker(settings)
    await broker.start()
    try:
        await broker.publish(serialize(message), topic=topic, key=message_key(message))
    finally:
        await broker.stop()
    [(key, value, _)] = await _consume(settings, topic, 1)
    assert (key, parse(Topic.WALLET_COMMANDS, value or b"")) == (b"wal_research_01", message)
