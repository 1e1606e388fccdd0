"""Kafka plumbing: producer, consumer and FastStream broker factories, and topic creation.

Producers are idempotent with acks=all; consumers commit nothing on their own (offsets belong
with the state they produced). Knows topic names only through `schemas.topics`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faststream.kafka import KafkaBroker

from schemas.topics import Topic, topic_name
from services.platform.logging import get_logger
from services.platform.settings import Settings

_log = get_logger("kafka")

# Kafka's CreateTopics error codes that we handle by name.
_TOPIC_ALREADY_EXISTS = 36


class TopicSetupError(RuntimeError):
    """A topic could not be created, or exists with fewer partitions than configured."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic the project needs, with the partition count it must have."""

    name: str
    partitions: int


def project_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic of ARCHITECTURE.md with its dead-letter twin, named with the configured prefix."""
    specs = []
    for topic in Topic:
        name = topic_name(topic, settings.topic_prefix)
        specs.append(TopicSpec(name, settings.kafka_partitions))
        specs.append(TopicSpec(topic_name(topic, settings.topic_prefix, dead_letter=True), 1))
    return specs


def producer_config(settings: Settings) -> dict[str, Any]:
    """Settings shared by every producer: nothing acknowledged until every replica has it."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.service_name,
        "acks": "all",
        "enable_idempotence": True,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "partitioner": KeyHashPartitioner(),
    }


# How many keys' hashes a partitioner remembers (a wallet id is a few dozen bytes); past it, it
# starts again empty.
_REMEMBERED_KEYS = 100_000


class KeyHashPartitioner:
    """Kafka's default partitioner (murmur2 of the key, as every client), remembering each key's
    hash: aiokafka's murmur2 is pure Python (~3 µs a message), and a service sends many messages
    per wallet. The partition is the hash modulo the partitions known at the time, as before.
    """

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        """The partition of a message with `key` (a keyless one goes where aiokafka would put it)."""
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        return all_partitions[self.hash(key) % len(all_partitions)]

    def hash(self, key: bytes) -> int:
        """murmur2(key), positive, as Kafka's default partitioner takes it."""
        known = self._hashes.get(key)
        if known is None:
            if len(self._hashes) >= _REMEMBERED_KEYS:
                self._hashes.clear()
            known = self._hashes[key] = int(murmur2(key) & 0x7FFFFFFF)
        return known


def create_producer(settings: Settings) -> AIOKafkaProducer:
    """An idempotent producer; the caller starts and stops it."""
    return AIOKafkaProducer(**producer_config(settings))


async def send_in_batches(
    producer: AIOKafkaProducer, messages: Iterable[tuple[str, bytes, bytes]]
) -> list[asyncio.Future[Any]]:
    """Queue keyed messages (topic, key, value) in their order, in a batch per partition at a time,
    on the partition `partition_for` gives their key; return a future per batch, set once Kafka
    acknowledged it. The same partitions and per-partition order as a `send` per message, without
    its per-message work (metadata lookups, a future each: ~5 µs a message, decision 0005).
    """
    partitions: dict[str, int] = {}
    open_batches: dict[tuple[str, int], Any] = {}  # aiokafka's BatchBuilder, filling
    acks: list[asyncio.Future[Any]] = []
    for topic, key, value in messages:
        count = partitions.get(topic)
        if count is None:
            count = partitions[topic] = len(await producer.partitions_for(topic))
        where = (topic, partition_for(key, count))
        batch = open_batches.get(where)
        if batch is None:
            batch = open_batches[where] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: queue it, start the next
            acks.append(await producer.send_batch(batch, topic, partition=where[1]))
            batch = open_batches[where] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a message of {len(value)} bytes does not fit a batch of its own")
    for (topic, partition), batch in open_batches.items():
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    return acks


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a keyed message (murmur2, as every client)."""
    return _KEY_HASHES.hash(key) % partitions


async def start_producer(settings: Settings) -> AIOKafkaProducer:
    """A started producer, or the start's error with nothing left behind: a producer whose start
    failed must never be sent through, its sends wait forever (aiokafka #759). For replacing one
    a Kafka restart left unusable.
    """
    producer = create_producer(settings)
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


def create_consumer(
    settings: Settings,
    topics: Sequence[str],
    group_id: str | None,
    **options: Any,  # noqa: ANN401 - passed through to aiokafka, whose options are untyped
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits and reads only committed (transactional) records.

    `options` go to aiokafka and may override the defaults (a benchmark reads from the end, say).
    """
    defaults: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 500,
    }
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=settings.service_name,
        group_id=group_id,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        **(defaults | options),
    )


def create_broker(settings: Settings) -> KafkaBroker:
    """A FastStream broker whose producer has the same guarantees as `create_producer`."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.service_name,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        partitioner=KeyHashPartitioner(),
    )


# What an idempotent producer answers once a broker restart left its sequence behind: it refuses
# every later send too, so only a new producer goes on (the authorizer makes one; see decision 0004).
PRODUCER_BROKEN = (
    OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, InvalidProducerIdMapping, ProducerFenced,
    ProducerClosed,
)  # fmt: skip


class Publisher:
    """A FastStream broker's `publish` that outlives a Kafka restart: when the broker's producer is
    left refusing every send (`PRODUCER_BROKEN`), the broker is restarted once (a new producer) and
    the send tried again. Concurrent sends that failed on the same producer renew it once.
    """

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker
        self._renewing = asyncio.Lock()
        self._generation = 0
        self._stopped = False  # a renewal stopped the broker and could not start it again (Kafka away)

    async def publish(self, payload: bytes, *, topic: str, key: bytes) -> None:
        """Send and wait for Kafka's acknowledgement; raise what Kafka answered otherwise."""
        generation = self._generation
        if self._stopped:
            # Never a send through a producer whose start failed: it would wait forever (aiokafka #759).
            await self._renew(generation, None)
        try:
            await self.broker.publish(payload, topic=topic, key=key)
        except PRODUCER_BROKEN as error:
            await self._renew(generation, error)
            await self.broker.publish(payload, topic=topic, key=key)

    async def _renew(self, generation: int, error: Exception | None) -> None:
        """A new producer: the broker stopped and started. If the start fails, the error is raised
        and the next send tries again.
        """
        async with self._renewing:
            if generation != self._generation:
                return  # renewed meanwhile by another send that failed on the same producer
            if not self._stopped:
                _log.warning("producer_renewed", error=f"{type(error).__name__}: {error}"[:300])
                await self.broker.stop()
                self._stopped = True
            await self.broker.start()
            self._stopped = False
            self._generation += 1


async def ensure_topics(bootstrap_servers: str, specs: Iterable[TopicSpec], timeout_ms: int = 30_000) -> None:
    """Create the topics that are missing; refuse topics that exist with too few partitions."""
    wanted = {spec.name: spec for spec in specs}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(spec.name, spec.partitions, 1) for spec in wanted.values()], timeout_ms=timeout_ms
        )
        failures = [
            f"{name}: error {code} {message or ''}".strip()
            for name, code, message in _topic_errors(response)
            if code not in (0, _TOPIC_ALREADY_EXISTS)
        ]
        if failures:
            raise TopicSetupError("could not create topics: " + "; ".join(failures))
        await _check_partitions(admin, wanted, timeout_ms)
    finally:
        await admin.close()


async def delete_topics_with_prefix(bootstrap_servers: str, prefix: str, timeout_ms: int = 60_000) -> int:
    """Delete every topic whose name starts with `prefix` (a test session's or a bench run's); returns how many.

    Left behind, thousands of throw-away partitions make the broker's start-up crawl.
    """
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
        for start in range(0, len(doomed), 200):
            await admin.delete_topics(doomed[start : start + 200], timeout_ms=timeout_ms)
    finally:
        await admin.close()
    return len(doomed)


async def partition_count(bootstrap_servers: str, topic: str, timeout_ms: int = 10_000) -> int:
    """How many partitions `topic` has now (0 when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sum(len(d["partitions"]) for d in described if d["topic"] == topic and not d.get("error_code"))


async def _check_partitions(admin: AIOKafkaAdminClient, wanted: dict[str, TopicSpec], timeout_ms: int) -> None:
    """Every topic has at least its configured partitions; a just-created one may take a moment to show."""
    deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
    while True:
        counts = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(list(wanted))}
        for name, spec in wanted.items():
            have = counts.get(name, 0)
            if 0 < have < spec.partitions:
                raise TopicSetupError(f"topic {name} has {have} partitions, {spec.partitions} configured")
        missing = sorted(name for name in wanted if counts.get(name, 0) == 0)
        if not missing:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TopicSetupError(f"topics not visible in metadata after creation: {', '.join(missing)}")
        await asyncio.sleep(0.1)


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:  # noqa: ANN401 - aiokafka responses are untyped
    """(topic, error code, message) for each topic of a CreateTopics response of any version."""
    rows: list[tuple[str, int, str | None]] = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None  # noqa: PLR2004 - v1+ responses carry a message
        rows.append((name, code, message))
    return rows


_KEY_HASHES = KeyHashPartitioner()
